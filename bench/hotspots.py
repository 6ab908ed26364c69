"""Where a hit's CPU goes: py-spy on the gateway's event loop under the wrk load of hits.py.

    python bench/hotspots.py [--duration 15] [--rate 250] [--top 30] [--compare REV]
                             [--paced 3000]

Starts the gateway like bench/hits.py (dry_run destination, `synchronous: full`, core 0),
drives it with wrk (1 thread, 50 connections, core 1; or bench/paced.py at --paced RATE),
samples it with py-spy (core 1, `pip install py-spy`), and prints the functions with the most
self time on the event loop's thread (idle samples left out), then the gateway's own
functions by inclusive time. With --compare REV the same for the `gateway/` package of git
revision REV, right after.
The raw samples (py-spy's collapsed format) are kept in --out for a flame graph.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from common import REPO, free_port
from hits import PIXEL_LUA, QUERY, export_revision, gateway, gateway_config, wrk

_LINE = re.compile(r"\s*\(([^)]*?)(?::\d+)?\)$")


def _frame(raw: str) -> str:
    """`function (path/to/module.py:123)` → `function (module.py)`: self time by function."""
    match = _LINE.search(raw)
    if not match:
        return raw.strip()
    path = match.group(1)
    ours = path.rfind("gateway/")
    short = path[ours:] if ours >= 0 else path.split("/")[-1]
    return f"{raw[: match.start()].strip()} ({short})"


def summarise(samples: Path, top: int) -> None:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in samples.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        # The event loop's thread: executor threads (the COMMIT) run under thread.py's _worker.
        if "_run_once" not in stack:
            continue
        frames = [_frame(f) for f in stack.split(";")]
        n = int(count)
        total += n
        self_time[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n
    print(f"{total} samples on the event loop's thread")
    print(f"\n{'self %':>7}  function")
    for name, n in self_time.most_common(top):
        print(f"{100 * n / total:>6.1f}%  {name}")
    print(f"\n{'incl %':>7}  gateway function")
    ours = [(name, n) for name, n in inclusive.most_common() if "gateway/" in name]
    for name, n in ours[:top]:
        print(f"{100 * n / total:>6.1f}%  {name}")


def profile(server_root: Path, label: str, tmp: Path, args: argparse.Namespace) -> None:
    port = free_port()
    name = label.replace(" ", "-")
    server = gateway(label, gateway_config(tmp, port, name), port, server_root, tmp / "gw.log")
    lua = tmp / "pixel.lua"
    lua.write_text(PIXEL_LUA.replace("%s", QUERY))
    out = Path(args.out) / f"{name}.txt"
    server.start()
    try:
        assert server.proc is not None
        wrk(port, lua, 2)  # warm-up
        if args.paced:
            paced = str(Path(__file__).parent / "paced.py")
            load_cmd = ["taskset", "-c", "1", sys.executable, paced]
            load_cmd += ["--port", str(port), "--rate", str(args.paced)]
            load_cmd += ["--duration", str(args.duration + 2), "--path", f"/tr?{QUERY}"]
        else:
            load_cmd = ["taskset", "-c", "1", "wrk", "-t1", "-c50", f"-d{args.duration + 3}s"]
            load_cmd += ["-s", str(lua), f"http://127.0.0.1:{port}"]
        load = subprocess.Popen(load_cmd, stdout=subprocess.DEVNULL)
        spy = ["taskset", "-c", "1", str(Path(sys.executable).parent / "py-spy"), "record"]
        spy += ["--rate", str(args.rate), "--duration", str(args.duration), "--format", "raw"]
        # taskset execs the interpreter: its pid is the gateway's.
        spy += ["--output", str(out), "--pid", str(server.proc.pid)]
        subprocess.run(spy, check=True, capture_output=True)
        load.wait()
    finally:
        server.stop()
    print(f"\n== {label} ({out})")
    summarise(out, args.top)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--rate", type=int, default=250)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--compare", metavar="REV")
    parser.add_argument("--paced", type=int, metavar="RATE", help="paced load instead of wrk")
    parser.add_argument("--out", default=tempfile.gettempdir())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        profile(REPO, "this tree", tmp, args)
        if args.compare:
            root, commit = export_revision(args.compare, tmp / "base")
            profile(root, f"at {commit}", tmp, args)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
