"""Slow clients against `serve` at a 1,024-descriptor limit, with the guards and without.

    python bench/slowloris.py

Starts the gateway as a process limited to 1,024 open files, opens 1,100 connections that send
half a request and then one byte every second, and meanwhile asks `/healthz` every 0.5 s on a
fresh connection. Prints how many of the slow connections the gateway still held after 15 s,
how many `/healthz` probes were answered and their slowest answer, and how many log lines it
wrote. Once as shipped (header timeout 10 s, 900 connections at most) and once with the
timeouts and the cap lifted (how `serve` behaved before they existed), alternating twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, free_port

SLOW = 1100
HOLD_S = 15.0
LIMIT = 1024


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


async def _probe(port: int, answered: list[float], missed: list[int]) -> None:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(2.0):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await reader.read()
            writer.close()
        if answer.startswith(b"HTTP/1.1 200"):
            answered.append(time.perf_counter() - started)
            return
    except (TimeoutError, OSError):
        pass
    missed[0] += 1


async def _slow(port: int, held: list[int]) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    held[0] += 1
    try:
        writer.write(b"GET /tr/?id=1&ev=PageView HTTP/1.1\r\nHost: x\r\n")
        while True:
            await asyncio.sleep(1.0)
            if reader.at_eof():
                break
            writer.write(b"X-a: b\r\n")
            await writer.drain()
    except (OSError, asyncio.CancelledError):
        pass
    finally:
        held[0] -= 1
        writer.close()


async def _round(tmp: Path, guarded: bool) -> tuple[int, int, int, float, int]:
    port = free_port()
    log = tmp / f"serve-{guarded}-{time.monotonic_ns()}.log"
    extra = "" if guarded else ", header_timeout_s: 3600, max_connections: 1000000"
    cfg = tmp / "c.yaml"
    cfg.write_text(
        f"listen: {{host: 127.0.0.1, port: {port}{extra}}}\n"
        f"storage: {{path: {tmp / 'gw.sqlite3'}}}\n"
        "destinations: {audit: {type: dry_run}}\nsources: {meta_pixel: {send_to: [audit]}}\n"
    )
    with log.open("wb") as handle:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(cfg),
            cwd=REPO,
            stderr=handle,
            preexec_fn=_limit,
        )
    try:
        for _ in range(200):
            answered: list[float] = []
            await _probe(port, answered, [0])
            if answered:
                break
            await asyncio.sleep(0.1)
        held = [0]
        slow = [asyncio.create_task(_slow(port, held)) for _ in range(SLOW)]
        answered, missed = [], [0]
        deadline = time.monotonic() + HOLD_S
        while time.monotonic() < deadline:
            await _probe(port, answered, missed)
            await asyncio.sleep(0.5)
        still = held[0]
        for task in slow:
            task.cancel()
        await asyncio.gather(*slow, return_exceptions=True)
    finally:
        proc.terminate()
        await proc.wait()
    lines = len(log.read_bytes().splitlines())
    worst = max(answered) * 1000 if answered else float("nan")
    return still, len(answered), missed[0], worst, lines


async def main() -> None:
    results: dict[bool, list[tuple[int, int, int, float, int]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(2):
            for guarded in (False, True):  # A B A B
                results[guarded].append(await _round(Path(tmp), guarded))
    print(f"{SLOW} slow connections for {HOLD_S:.0f} s, {LIMIT} descriptors; medians of 2")
    for guarded, label in ((False, "timeouts and cap lifted"), (True, "as shipped")):
        runs = results[guarded]
        still = statistics.median(r[0] for r in runs)
        ok = statistics.median(r[1] for r in runs)
        missed = statistics.median(r[2] for r in runs)
        worst = statistics.median(r[3] for r in runs)
        lines = statistics.median(r[4] for r in runs)
        print(
            f"{label:<25} slow connections still open {still:5.0f}   /healthz answered "
            f"{ok:3.0f}, missed {missed:3.0f}, slowest {worst:7.1f} ms   log lines {lines:5.0f}"
        )


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
