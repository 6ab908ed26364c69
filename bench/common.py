"""Shared pieces of the benchmarks: free ports, processes, waiting, RSS, preloading a store."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status < 500:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def start(
    args: list[str], cpu: int | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    cmd = (["taskset", "-c", str(cpu)] if cpu is not None and _has_taskset() else []) + args
    out = log.open("ab") if log else subprocess.DEVNULL
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=out, cwd=REPO)


def _has_taskset() -> bool:
    return subprocess.run(["which", "taskset"], capture_output=True).returncode == 0


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def gateway_cmd(config: Path) -> list[str]:
    return [sys.executable, "-m", "gateway", "serve", "--config", str(config)]


def preload(db: Path, rows: int, destination: str, status: str, payload: bytes | None) -> float:
    """Write `rows` events with one delivery each straight into a store file; returns seconds."""
    from gateway.outbox import SQLITE_SCHEMA as SCHEMA

    started = time.monotonic()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.executescript(SCHEMA)
    now = time.time()
    (start_id,) = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM events").fetchone()
    chunk = 50_000
    for base in range(0, rows, chunk):
        ids = range(start_id + base, start_id + min(base + chunk, rows))
        conn.executemany(
            "INSERT INTO events (id, event_id, event_name, source, event_time, received_at,"
            " dedupable, match_keys, value, currency, consent)"
            " VALUES (?,?,?,?,?,?,1,40,NULL,NULL,NULL)",
            ((i, f"pre-{i}", "page_view", "meta_pixel", int(now), now) for i in ids),
        )
        conn.executemany(
            "INSERT INTO deliveries (id, event_row, event_id, event_name, destination, status,"
            " event_time, next_attempt_at, created_at, updated_at, payload)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                (
                    i,
                    i,
                    f"pre-{i}",
                    "page_view",
                    destination,
                    status,
                    int(now),
                    now,
                    now,
                    now,
                    payload,
                )
                for i in ids
            ),
        )
        conn.commit()
    conn.close()
    return time.monotonic() - started


def cpu_note() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores, {model}, Python {sys.version.split()[0]}"
