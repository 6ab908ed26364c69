"""`serve` as a real process against hostile or failing conditions: a start-up that fails exits
non-zero, malformed requests log one JSON line, slow clients are cut off, accepts are capped."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from pathlib import Path

import orjson

from gateway.store import Store
from tests.conftest import free_port, start_serve


async def test_a_failed_start_up_exits_non_zero(tmp_path: Path) -> None:
    db = tmp_path / "gw.sqlite3"
    store = await Store.open(str(db))  # the file and its schema exist: opening will succeed
    await store.close()
    port = free_port()
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        f"listen: {{host: 127.0.0.1, port: {port}}}\n"
        f"storage: {{path: {db}}}\n"
        "destinations: {audit: {type: dry_run}}\n"
        "sources: {meta_pixel: {send_to: [audit]}}\n"
    )
    # Another process holds the write lock past the busy wait: start-up then fails after
    # storage opened (aiosqlite's reader thread is running by then).
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    log = tmp_path / "serve.log"
    with log.open("wb") as handle:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "serve", "--config", str(cfg), stderr=handle
        )
    try:
        started = time.monotonic()
        code = await asyncio.wait_for(proc.wait(), timeout=90)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(
            "serve neither listened nor exited: " + log.read_text()[-1500:]
        ) from None
    finally:
        holder.rollback()
        holder.close()
    text = log.read_text()
    assert "database is locked" in text or "OperationalError" in text  # control: it failed
    assert code == 1, text[-1500:]
    assert time.monotonic() - started < 60  # the 5 s busy wait, then out
    assert '"serve.failed"' in text


def write_config(tmp_path: Path, port: int, extra: str = "") -> Path:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        f"listen: {{host: 127.0.0.1, port: {port}{extra}}}\n"
        f"storage: {{path: {tmp_path / 'gw.sqlite3'}}}\n"
        "destinations: {audit: {type: dry_run}}\n"
        "sources: {meta_pixel: {send_to: [audit]}}\n"
    )
    return cfg


async def raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


async def stop(proc: asyncio.subprocess.Process) -> None:
    proc.terminate()
    await asyncio.wait_for(proc.wait(), timeout=30)


async def test_malformed_requests_log_one_json_line_not_tracebacks(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    proc = await start_serve(write_config(tmp_path, port), log, port)
    try:
        bad = [
            b"GET /tr/ HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
            b"GET /tr/ HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
            b"GET /tr/?email=jane@example.com HTTP/1.1\r\nHost: x\r\nX: \x01\r\n\r\n",
        ]
        for n in range(30):
            answer = await raw(port, bad[n % 3])
            assert answer.split(b" ")[1] == b"400", answer[:60]  # control: each was refused
    finally:
        await stop(proc)
    lines = log.read_text().splitlines()
    records = [orjson.loads(line) for line in lines]  # every line is JSON (no traceback lines)
    refused = [r for r in records if r["event"] == "http.bad_request"]
    # 30 malformed requests: one JSON line each, not ~20 lines of traceback each.
    assert len(refused) == 30, refused
    assert len(records) < 40
    for record in refused:
        assert "127.0.0.1" not in orjson.dumps(record).decode()  # no peer address
        assert "jane" not in orjson.dumps(record).decode()
