"""Hit throughput: the gateway beside a bare aiohttp handler, same load, same run.

    python bench/hits.py [--duration 10] [--preload 1000000]

Starts the gateway (dry_run destination, a temporary SQLite file) and a bare aiohttp app that
answers GET /tr with the same GIF and does nothing else, pins each to core 0 and wrk to core 1,
and drives them alternately with the same load (1 wrk thread, 50 connections), twice each;
a second gateway with preview configured (`admin.token`) and no session open takes its turn
in the same rounds, to show what preview costs a hit nobody traces.
Then the same for POST /v1/events with 1-event and 100-event bodies. Prints requests/s, p50
and p99, and gateway/bare. With --preload N, the hit figures are taken again with N rows in the
store, to show the cost per hit does not grow with the outbox.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from common import (
    REPO,
    cpu_note,
    free_port,
    gateway_cmd,
    preload,
    start,
    stop,
    wait_http,
)

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


def wrk(url: str, lua: Path, duration: int) -> tuple[float, float, float]:
    cmd = ["wrk", "-t1", "-c50", f"-d{duration}s", "--latency", "-s", str(lua), url]
    if subprocess.run(["which", "taskset"], capture_output=True).returncode == 0:
        cmd = ["taskset", "-c", "1", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rps, _percentile(out, "50"), _percentile(out, "99")


def _percentile(out: str, pct: str) -> float:
    match = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def gateway_config(tmp: Path, port: int, name: str = "bench", admin: bool = False) -> Path:
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(
        ("admin: {token: bench-admin-0123456789}\n" if admin else "")
        + f"""
listen: {{host: 127.0.0.1, port: {port}}}
storage: {{path: {tmp / f"{name}.sqlite3"}}}
destinations:
  audit: {{type: dry_run}}
sources:
  meta_pixel: {{send_to: [audit]}}
  server: {{send_to: [audit], api_keys: [bench-key-0123456789]}}
"""
    )
    return cfg


def row(
    label: str, figures: tuple[float, float, float], base: tuple[float, float, float] | None
) -> str:
    rps, p50, p99 = figures
    ratio = f"{rps / base[0]:.2f}x" if base else ""
    return f"{label:<50} {rps:>10,.0f} {p50:>8.2f} {p99:>8.2f}  {ratio}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--preload", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        pixel_lua = tmp / "pixel.lua"
        pixel_lua.write_text(PIXEL_LUA.replace("%s", QUERY))
        bare_file = tmp / "bare.py"
        bare_file.write_text(BARE_APP)
        gw_port, bare_port, preview_port = free_port(), free_port(), free_port()
        cfg = gateway_config(tmp, gw_port)
        preview_cfg = gateway_config(tmp, preview_port, "preview", admin=True)
        log = tmp / "gateway.log"

        print(f"machine: {cpu_note()}; gateway and bare app on core 0, wrk on core 1")
        print(f"load: wrk 1 thread, 50 connections, {args.duration}s a run")
        print(f"{'':<50} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}  vs bare")

        bare = start([sys.executable, str(bare_file), str(bare_port)], cpu=0)
        wait_http(f"http://127.0.0.1:{bare_port}/healthz")
        gw = start(gateway_cmd(cfg), cpu=0, log=log)
        wait_http(f"http://127.0.0.1:{gw_port}/healthz")
        gw_preview = start(gateway_cmd(preview_cfg), cpu=0, log=log)
        wait_http(f"http://127.0.0.1:{preview_port}/healthz")
        try:
            results: dict[str, list[tuple[float, float, float]]] = {
                "bare": [],
                "gw": [],
                "preview": [],
            }
            # Unmeasured warm-up, so neither gateway's first round pays for a cold start.
            for port in (gw_port, preview_port):
                wrk(f"http://127.0.0.1:{port}", pixel_lua, 2)
            for _ in range(2):
                results["bare"].append(
                    wrk(f"http://127.0.0.1:{bare_port}", pixel_lua, args.duration)
                )
                results["gw"].append(wrk(f"http://127.0.0.1:{gw_port}", pixel_lua, args.duration))
                results["preview"].append(
                    wrk(f"http://127.0.0.1:{preview_port}", pixel_lua, args.duration)
                )
            for i in range(2):
                print(row(f"bare aiohttp GET /tr (run {i + 1})", results["bare"][i], None))
                print(
                    row(
                        f"gateway GET /tr, empty store (run {i + 1})",
                        results["gw"][i],
                        results["bare"][i],
                    )
                )
            for i in range(2):
                print(
                    row(
                        f"gateway GET /tr, preview on, no session (run {i + 1})",
                        results["preview"][i],
                        results["bare"][i],
                    )
                    + f"  ({results['preview'][i][0] / results['gw'][i][0]:.3f}x the gateway)"
                )
            for n in (1, 100):
                lua = tmp / f"server{n}.lua"
                lua.write_text(SERVER_LUA % n)
                figures = wrk(f"http://127.0.0.1:{gw_port}", lua, args.duration)
                rps = figures[0]
                print(
                    row(f"gateway POST /v1/events, {n} event(s)", figures, None)
                    + f"  ({rps * n:,.0f} events/s)"
                )
        finally:
            stop(gw)
            stop(gw_preview)

        if args.preload:
            db = tmp / "bench.sqlite3"
            took = preload(db, args.preload, "audit", "sent", None)
            print(f"preloaded {args.preload:,} rows in {took:.0f}s")
            gw = start(gateway_cmd(cfg), cpu=0, log=log)
            wait_http(f"http://127.0.0.1:{gw_port}/healthz")
            try:
                for i in range(2):
                    figures = wrk(f"http://127.0.0.1:{gw_port}", pixel_lua, args.duration)
                    base = results["bare"][i]
                    print(
                        row(f"gateway GET /tr, {args.preload:,} rows (run {i + 1})", figures, base)
                    )
            finally:
                stop(gw)
        stop(bare)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
