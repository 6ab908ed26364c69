"""Hit throughput with 1, 2 and 3 replicas on one PostgreSQL, beside one replica on SQLite.

    python bench/replicas.py [--duration 10]

Starts a throwaway PostgreSQL 15 cluster (Debian's binaries, as the postgres OS user when run
as root), then for each setup starts the replicas (dry_run destination) and drives each with
its own wrk (1 thread, 50 connections split between them) for the same duration at once, and
prints the summed requests/s and the worst p99. All of it shares this machine's cores, so read
the figures side by side, not as a cluster's capacity.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, cpu_note, free_port, gateway_cmd, start, stop, wait_http
from hits import PIXEL_LUA, QUERY, _percentile

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _pg(args: list[str]) -> None:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)


def start_postgres(root: Path) -> tuple[str, list[str]]:
    data, sockets, port = root / "data", root / "sockets", free_port()
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    _pg(
        [
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
        ]
    )
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=200"
    pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-w"]
    _pg([*pg_ctl, "-l", str(root / "log"), "-o", options, "start"])
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", pg_ctl


def config(tmp: Path, name: str, storage: str) -> Path:
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(
        f"""
listen: {{host: 127.0.0.1}}
storage: {{{storage}}}
destinations:
  audit: {{type: dry_run}}
sources:
  meta_pixel: {{send_to: [audit]}}
"""
    )
    return cfg


def drive(ports: list[int], lua: Path, duration: int) -> tuple[float, float]:
    per = max(1, 50 // len(ports))
    procs = [
        subprocess.Popen(
            [
                "wrk",
                "-t1",
                f"-c{per}",
                f"-d{duration}s",
                "--latency",
                "-s",
                str(lua),
                f"http://127.0.0.1:{port}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for port in ports
    ]
    total, worst = 0.0, 0.0
    for proc in procs:
        out, _ = proc.communicate()
        total += float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        worst = max(worst, _percentile(out, "99"))
    return total, worst


def run(tmp: Path, label: str, cfg: Path, replicas: int, lua: Path, duration: int) -> None:
    ports = [free_port() for _ in range(replicas)]
    procs = [start([*gateway_cmd(cfg), "--port", str(p)], log=tmp / "replicas.log") for p in ports]
    try:
        for p in ports:
            wait_http(f"http://127.0.0.1:{p}/healthz")
        rps, p99 = drive(ports, lua, duration)
        print(f"{label:<34} {rps:>10,.0f} {p99:>9.1f}")
    finally:
        for proc in procs:
            stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    args = parser.parse_args()
    print(f"machine: {cpu_note()}; replicas, PostgreSQL and wrk share the cores")
    print(f"{'':<34} {'req/s':>10} {'p99 ms':>9}")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        lua = tmp / "pixel.lua"
        lua.write_text(PIXEL_LUA.replace("%s", QUERY))
        run(
            tmp,
            "1 replica, SQLite",
            config(tmp, "sqlite", f"path: {tmp / 's.sqlite3'}"),
            1,
            lua,
            args.duration,
        )
        # Its own directory: the postgres user cannot enter root's 0700 temporary one.
        pg_root = Path(tempfile.mkdtemp(prefix="tag-gateway-bench-pg-"))
        url, pg_ctl = start_postgres(pg_root)
        try:
            for n in (1, 2, 3):
                db = f"bench{n}"
                _pg(
                    [
                        str(PG_BIN / "createdb"),
                        "-h",
                        "127.0.0.1",
                        "-p",
                        url.rsplit(":", 1)[1].split("/")[0],
                        "-U",
                        "postgres",
                        db,
                    ]
                )
                cfg = config(tmp, f"pg{n}", f'url: "{url.rsplit("/", 1)[0]}/{db}"')
                run(tmp, f"{n} replica(s), PostgreSQL", cfg, n, lua, args.duration)
        finally:
            _pg([*pg_ctl, "-m", "fast", "stop"])
            shutil.rmtree(pg_root, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
