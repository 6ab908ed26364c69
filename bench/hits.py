"""Hit throughput and latency: the gateway beside a bare aiohttp handler, same load, same run.

    python bench/hits.py [--duration 10] [--rounds 2] [--compare REV] [--build REV]
                         [--parts wrk,paced,post,together] [--rates 1000,3000] [--preview]
                         [--preload 1000000]

Starts the gateway (dry_run destination, `synchronous: full`, a temporary SQLite file) and a
bare aiohttp app that answers GET /tr with the same GIF and does nothing else, pins each to core
0 and the load generator to core 1, and drives them in turn with the same load, A B A B:
- `wrk`: wrk, 1 thread, 50 connections (a closed loop: requests/s, p50, p99);
- `paced`: bench/paced.py at fixed rates (an open loop: p50, p99, p99.9 from each request's
  scheduled send time, so a stall counts for every request that queued behind it);
- `post`: POST /v1/events with 1-event and 100-event bodies (gateways only);
- `together` (with --compare): both gateways at once on core 0, one wrk each, so whatever
  else takes the core slows both alike and their requests/s ratio is their cost ratio.
Prints every round, then the medians with gateway/bare.

--build REV measures revision REV's package in place of this tree's.
--compare REV adds a second gateway built from git revision REV (its `gateway/` package
exported to a temporary directory) in the same rounds, so a lever is measured beside the build
without it: the machine is shared, and only figures from one run compare.
--preview adds a gateway with preview configured (`admin.token`) and no session open.
--preload N takes the wrk figures again with N rows in the store, to show the cost per hit does
not grow with the outbox.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from common import REPO, cpu_note, free_port, preload, stop, wait_http

QUERY = (
    "id=1234567890&ev=PageView&dl=https%3A%2F%2Fshop.example%2Fproducts%2Fwool-socks%3Fcolor%3Dblue"
    "&rl=https%3A%2F%2Fshop.example%2Fcollections%2Fsocks&if=false&ts=1795000000000"
    "&cd[content_ids]=%5B%22264%22%5D&cd[content_type]=product&cd[value]=19.90&cd[currency]=EUR"
    "&sw=1920&sh=1080&v=2.9.205&r=stable&ec=1&o=4126&fbp=fb.1.1795000000000.1524724929324944"
    "&it=1795000000000&coo=false&rqm=GET"
)

BARE_APP = textwrap.dedent(
    """
    import base64, sys
    from aiohttp import web
    GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
    async def tr(request):
        return web.Response(body=GIF, content_type="image/gif")
    app = web.Application()
    app.router.add_get("/tr", tr)
    app.router.add_get("/healthz", tr)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
    """
)

PIXEL_LUA = textwrap.dedent(
    """
    counter = 0
    request = function()
      counter = counter + 1
      local headers = {["User-Agent"] = "Mozilla/5.0 bench"}
      return wrk.format("GET", "/tr?" .. "%s" .. "&eid=b-" .. counter, headers)
    end
    """
)

SERVER_LUA = textwrap.dedent(
    """
    counter = 0
    local n = %d
    request = function()
      local parts = {}
      for i = 1, n do
        counter = counter + 1
        parts[i] = '{"event_id":"s-' .. counter .. '","event_name":"purchase",' ..
          '"event_time":' .. os.time() ..
          ',"event_source_url":"https://shop.example/thanks","user":{"email":"jane' .. counter ..
          '@example.com","client_ip":"203.0.113.7","user_agent":"Mozilla/5.0"},' ..
          '"custom":{"value":"19.90","currency":"EUR"}}'
      end
      local body = '{"events":[' .. table.concat(parts, ",") .. ']}'
      return wrk.format("POST", "/v1/events", {["Authorization"] = "Bearer bench-key-0123456789",
        ["Content-Type"] = "application/json"}, body)
    end
    """
)

BENCH = Path(__file__).resolve().parent


def _pinned(cmd: list[str], cpu: int) -> list[str]:
    if subprocess.run(["which", "taskset"], capture_output=True).returncode == 0:
        return ["taskset", "-c", str(cpu), *cmd]
    return cmd


def cpu_ns(pid: int | None) -> int:
    """CPU time a process has had so far, all its threads, in ns (Linux' schedstat)."""
    if pid is None:
        return 0
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError):  # a thread that just ended
            continue
    return total


def wrk(port: int, lua: Path, duration: int, pid: int | None = None) -> dict[str, float]:
    """wrk's figures, and with `pid` the server's CPU per request: unlike requests/s, that
    barely moves when other work takes the core, so small levers show through the noise."""
    return wrk_together([(port, pid)], lua, duration)[0]


def wrk_together(
    servers: list[tuple[int, int | None]], lua: Path, duration: int
) -> list[dict[str, float]]:
    """wrk against each (port, pid) at the same time, one wrk each: servers sharing a core then
    share whatever else takes it too, and their requests/s compare as their costs do."""
    base = ["wrk", "-t1", "-c50", f"-d{duration}s", "--latency", "-s", str(lua)]
    cmds = [_pinned([*base, f"http://127.0.0.1:{port}"], 1) for port, _ in servers]
    before = [cpu_ns(pid) for _, pid in servers]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for cmd in cmds]
    outs = [proc.communicate()[0] for proc in procs]
    used = [cpu_ns(pid) - b for (_, pid), b in zip(servers, before, strict=True)]
    figures = []
    for out, cpu, (_, pid) in zip(outs, used, servers, strict=True):
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        count = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        figures.append(
            {
                "rps": rps,
                "p50_ms": _percentile(out, "50"),
                "p99_ms": _percentile(out, "99"),
                "errors": float(errors.group(1)) if errors else 0.0,
                "cpu_us": cpu / 1000 / count if pid is not None and count else float("nan"),
            }
        )
    return figures


def _percentile(out: str, pct: str) -> float:
    match = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def paced(port: int, rate: int, duration: int, pid: int | None = None) -> dict[str, float]:
    """bench/paced.py's figures, and the server's CPU per request at that rate: at a fixed rate
    both builds commit groups of the same size, so this is the steadiest figure of a lever."""
    cmd = [sys.executable, str(BENCH / "paced.py"), "--port", str(port), "--rate", str(rate)]
    cmd += ["--duration", str(duration), "--path", f"/tr?{QUERY}"]
    before = cpu_ns(pid)
    out = subprocess.run(_pinned(cmd, 1), capture_output=True, text=True, check=True).stdout
    used = cpu_ns(pid) - before
    figures: dict[str, float] = json.loads(out)
    # The warm-up second's requests are served too, and count.
    served = figures["answered"] + rate  # paced.py's warm-up is 1 s
    figures["cpu_us"] = used / 1000 / served if pid is not None else float("nan")
    return figures


def gateway_config(tmp: Path, port: int, name: str = "bench", admin: bool = False) -> Path:
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(
        ("admin: {token: bench-admin-0123456789}\n" if admin else "")
        + f"""
listen: {{host: 127.0.0.1, port: {port}}}
storage: {{path: {tmp / f"{name}.sqlite3"}, synchronous: full}}
destinations:
  audit: {{type: dry_run}}
sources:
  meta_pixel: {{send_to: [audit]}}
  server: {{send_to: [audit], api_keys: [bench-key-0123456789]}}
"""
    )
    return cfg


def export_revision(rev: str, into: Path) -> tuple[Path, str]:
    """The `gateway/` package of git revision `rev`, written under `into`; and its short hash."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "gateway"], cwd=REPO, capture_output=True
    )
    if archive.returncode != 0:
        raise SystemExit(archive.stderr.decode())
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into, commit


@dataclass
class Server:
    """One server under test: how to start it, and its figures by measurement."""

    label: str
    cmd: list[str]
    port: int
    root: Path = REPO
    log: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    figures: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    def start(self) -> None:
        # The package is imported from `root` (the exported revision, or this tree), ahead of
        # whatever an editable install points at.
        env = {**os.environ, "PYTHONPATH": str(self.root)}
        cmd = _pinned(self.cmd, 0)
        out = self.log.open("ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=out, cwd=self.root, env=env
        )
        wait_http(f"http://127.0.0.1:{self.port}/healthz")

    @property
    def pid(self) -> int | None:
        # taskset execs the server: its pid is the server's.
        return self.proc.pid if self.proc is not None else None

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def add(self, what: str, figures: dict[str, float]) -> None:
        self.figures.setdefault(what, []).append(figures)

    def median(self, what: str, key: str) -> float:
        return statistics.median(f[key] for f in self.figures[what])


def gateway(label: str, config: Path, port: int, root: Path, log: Path) -> Server:
    cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
    return Server(label, cmd, port, root, log)


def imported_from(server: Server) -> str:
    """Where `server`'s interpreter finds the gateway package (a check on --compare)."""
    env = {**os.environ, "PYTHONPATH": str(server.root)}
    code = "import gateway, pathlib; print(pathlib.Path(gateway.__file__).parent.parent)"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=server.root, env=env, capture_output=True, text=True
    ).stdout.strip()


def print_wrk(servers: list[Server], bare: Server, what: str, rounds: int) -> None:
    print(f"\n{what}: wrk, 1 thread, 50 connections")
    print(f"{'':<52} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs/req':>10}  vs bare")
    for i in range(rounds):
        for server in servers:
            if what not in server.figures:
                continue
            f, b = server.figures[what][i], bare.figures["wrk"][i]
            ratio = "" if server is bare else f"{f['rps'] / b['rps']:.3f}x"
            errors = f"  ({f['errors']:.0f} non-2xx)" if f["errors"] else ""
            label = f"{server.label} (round {i + 1})"
            print(
                f"{label:<52} {f['rps']:>9,.0f} {f['p50_ms']:>7.2f} {f['p99_ms']:>7.2f}"
                f" {f['cpu_us']:>10.0f}  {ratio}{errors}"
            )
    if len(servers) > 2 and what in servers[2].figures:
        a, b = servers[1], servers[2]
        for key, name in (("rps", "req/s"), ("cpu_us", "CPU/req")):
            pairs = [x[key] / y[key] for x, y in zip(a.figures[what], b.figures[what], strict=True)]
            print(
                f"{name}, {a.label} / {b.label}, round by round: "
                + ", ".join(f"{r:.3f}" for r in pairs)
                + f"; median {statistics.median(pairs):.3f}x"
            )
    print("medians:")
    for server in servers:
        if what not in server.figures:
            continue
        rps = server.median(what, "rps")
        ratio = "" if server is bare else f"{rps / bare.median('wrk', 'rps'):.3f}x"
        print(
            f"{server.label:<52} {rps:>9,.0f} {server.median(what, 'p50_ms'):>7.2f}"
            f" {server.median(what, 'p99_ms'):>7.2f} {server.median(what, 'cpu_us'):>10.0f}"
            f"  {ratio}"
        )


def print_together(pair: list[Server], rounds: int) -> None:
    a, b = pair
    print("\nboth gateways at once on core 0, one wrk each (1 thread, 50 connections)")
    print(f"{'':<52} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs/req':>10}")
    for i in range(rounds):
        for server in pair:
            f = server.figures["together"][i]
            label = f"{server.label} (round {i + 1})"
            print(
                f"{label:<52} {f['rps']:>9,.0f} {f['p50_ms']:>7.2f} {f['p99_ms']:>7.2f}"
                f" {f['cpu_us']:>10.0f}"
            )
    for key, name in (("rps", "req/s"), ("cpu_us", "CPU/req")):
        ratios = [
            x[key] / y[key]
            for x, y in zip(a.figures["together"], b.figures["together"], strict=True)
        ]
        print(
            f"{name}, {a.label} / {b.label}, round by round: "
            + ", ".join(f"{r:.3f}" for r in ratios)
            + f"; median {statistics.median(ratios):.3f}x"
        )


def print_paced(servers: list[Server], rate: int, rounds: int) -> None:
    what = f"paced {rate}"
    print(f"\nGET /tr paced at {rate:,} req/s (open loop, latency from the scheduled send)")
    head = f"{'p50 ms':>7} {'p99 ms':>7} {'p99.9':>7} {'max':>7} {'lag p99':>7} {'CPU µs/req':>10}"
    print(f"{'':<52} {head}")
    for i in range(rounds):
        for server in servers:
            f = server.figures[what][i]
            lost = f"  ({f['unanswered']:.0f} unanswered)" if f["unanswered"] else ""
            errors = f"  ({f['errors']:.0f} non-2xx)" if f["errors"] else ""
            label = f"{server.label} (round {i + 1})"
            print(
                f"{label:<52} {f['p50_ms']:>7.2f} {f['p99_ms']:>7.2f} {f['p999_ms']:>7.2f}"
                f" {f['max_ms']:>7.1f} {f['client_lag_p99_ms']:>7.2f} {f['cpu_us']:>10.0f}"
                f"{lost}{errors}"
            )
    print("medians:")
    for server in servers:
        print(
            f"{server.label:<52} {server.median(what, 'p50_ms'):>7.2f}"
            f" {server.median(what, 'p99_ms'):>7.2f} {server.median(what, 'p999_ms'):>7.2f}"
            f" {'':>7} {'':>7} {server.median(what, 'cpu_us'):>10.0f}"
        )
    if len(servers) > 2:
        a, b = servers[1], servers[2]
        pairs = [
            x["cpu_us"] / y["cpu_us"] for x, y in zip(a.figures[what], b.figures[what], strict=True)
        ]
        print(
            f"CPU/req, {a.label} / {b.label}, round by round: "
            + ", ".join(f"{r:.3f}" for r in pairs)
            + f"; median {statistics.median(pairs):.3f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compare", metavar="REV", help="a git revision to measure beside")
    parser.add_argument("--build", metavar="REV", help="measure REV instead of this tree")
    parser.add_argument("--parts", default="wrk,paced,post")
    parser.add_argument("--rates", default="1000,3000")
    parser.add_argument("--preview", action="store_true")
    parser.add_argument("--preload", type=int, default=0)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    rates = [int(r) for r in args.rates.split(",") if r]

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        pixel_lua = tmp / "pixel.lua"
        pixel_lua.write_text(PIXEL_LUA.replace("%s", QUERY))
        bare_file = tmp / "bare.py"
        bare_file.write_text(BARE_APP)
        log = tmp / "gateway.log"

        bare_port = free_port()
        bare = Server("bare aiohttp", [sys.executable, str(bare_file), str(bare_port)], bare_port)
        port = free_port()
        if args.build:
            root, commit = export_revision(args.build, tmp / "build")
            this = gateway(f"gateway @ {commit}", gateway_config(tmp, port), port, root, log)
        else:
            this = gateway("gateway (this tree)", gateway_config(tmp, port), port, REPO, log)
        gateways = [this]
        if args.compare:
            root, commit = export_revision(args.compare, tmp / "base")
            port = free_port()
            cfg = gateway_config(tmp, port, "base")
            gateways.append(gateway(f"gateway @ {commit} ({args.compare})", cfg, port, root, log))
        if args.preview:
            port = free_port()
            cfg = gateway_config(tmp, port, "preview", admin=True)
            gateways.append(gateway("gateway, preview on, no session", cfg, port, REPO, log))
        servers = [bare, *gateways]

        print(f"machine: {cpu_note()}; servers on core 0, load generator on core 1")
        print(f"{args.rounds} rounds of {args.duration}s, servers in turn within each round")
        for server in gateways:
            print(f"  {server.label}: package from {imported_from(server)}")

        try:
            for server in servers:
                server.start()
            # Unmeasured warm-up, so no gateway's first round pays for a cold start.
            for server in gateways:
                wrk(server.port, pixel_lua, 2)
            for i in range(args.rounds):
                # A B, then B A: a machine slowing down or speeding up through the run
                # favours neither gateway.
                turn = [bare, *(gateways if i % 2 == 0 else gateways[::-1])]
                if "wrk" in parts:
                    for server in turn:
                        server.add("wrk", wrk(server.port, pixel_lua, args.duration, server.pid))
                if "together" in parts and len(gateways) > 1:
                    pair = gateways[:2]
                    both = wrk_together([(g.port, g.pid) for g in pair], pixel_lua, args.duration)
                    for server, figures in zip(pair, both, strict=True):
                        server.add("together", figures)
                if "paced" in parts:
                    for rate in rates:
                        for server in turn:
                            server.add(
                                f"paced {rate}", paced(server.port, rate, args.duration, server.pid)
                            )
            if "wrk" in parts:
                print_wrk(servers, bare, "wrk", args.rounds)
            if "together" in parts and len(gateways) > 1:
                print_together(gateways[:2], args.rounds)
            for rate in rates if "paced" in parts else []:
                print_paced(servers, rate, args.rounds)
            if "post" in parts:
                print("\nPOST /v1/events: wrk, 1 thread, 50 connections")
                head = f"{'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs/req':>10}"
                print(f"{'':<52} {head}  events/s")
                for n in (1, 100):
                    lua = tmp / f"server{n}.lua"
                    lua.write_text(SERVER_LUA % n)
                    for i in range(args.rounds):
                        for server in gateways if i % 2 == 0 else gateways[::-1]:
                            f = wrk(server.port, lua, args.duration, server.pid)
                            label = f"{server.label}, {n} event(s) (round {i + 1})"
                            print(
                                f"{label:<52} {f['rps']:>9,.0f} {f['p50_ms']:>7.2f}"
                                f" {f['p99_ms']:>7.2f} {f['cpu_us']:>10.0f}  {f['rps'] * n:,.0f}"
                            )
        finally:
            for server in gateways:
                server.stop()

        if args.preload and "wrk" in parts:
            for server in gateways[:2]:
                cfg_name = "bench" if server is this else "base"
                took = preload(tmp / f"{cfg_name}.sqlite3", args.preload, "audit", "sent", None)
                print(f"\npreloaded {args.preload:,} rows into {server.label} in {took:.0f}s")
            try:
                for server in gateways[:2]:
                    server.start()
                for i in range(args.rounds):
                    for server in gateways[:2] if i % 2 == 0 else gateways[1::-1]:
                        f = wrk(server.port, pixel_lua, args.duration, server.pid)
                        server.add("preloaded", f)
                print_wrk([bare, *gateways[:2]], bare, "preloaded", args.rounds)
            finally:
                for server in gateways:
                    server.stop()
        bare.stop()


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
