"""A start-up that fails exits non-zero, so a restart policy fires (it used to hang)."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from pathlib import Path

from gateway.store import Store
from tests.conftest import free_port


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
