"""What only the SQLite outbox has: one process per file, another process's write lock waited
out off the loop, COMMIT in a thread, private files, and `release_leases` freeing every lease."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.outbox import DeliveryQuery, SqliteOutbox, Status, StoreLocked
from gateway.outbox.sqlite import outbox as store_module
from tests.outbox.builders import deliver_as, event


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "s.sqlite3"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[SqliteOutbox]:
    opened = await SqliteOutbox.open(str(path))
    yield opened
    await opened.close()


async def test_release_leases_frees_every_lease(store: SqliteOutbox) -> None:
    # One process per file: on boot, every lease is what a crash left behind.
    await store.add([event("a"), event("b")])
    claimed = await store.claim("meta", 10, lease_s=60)
    assert [c.payload for c in claimed] == [b"{}", b"{}"]
    assert await store.claim("meta", 10, lease_s=60) == []
    assert await store.release_leases() == 2
    assert len(await store.claim("meta", 10, lease_s=60)) == 2


async def test_a_released_failed_delivery_can_be_replayed(store: SqliteOutbox) -> None:
    await store.add([event("z")])
    await deliver_as(store, Status.FAILED)
    assert len(await store.claim("meta", 10, lease_s=60)) >= 1  # on the wire again
    failed_z = DeliveryQuery(statuses=("failed",), event_id="z")
    assert await store.requeue(failed_z) == 0
    await store.release_leases()
    assert await store.requeue(failed_z) == 1


async def test_a_lock_held_by_another_process_is_waited_out_off_the_loop(
    store: SqliteOutbox, path: Path
) -> None:
    other = sqlite3.connect(path, isolation_level=None)  # as `tag-gateway replay` would
    try:
        other.execute("BEGIN IMMEDIATE")
        adding = asyncio.create_task(store.add([event("while-locked")]))
        started = time.monotonic()
        ticks = 0
        while time.monotonic() - started < 0.3:  # the loop keeps running meanwhile
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks >= 15
        assert not adding.done()
        other.execute("COMMIT")
        (added,) = await asyncio.wait_for(adding, 2)
        assert added.queued == 1
    finally:
        other.close()


async def test_a_lock_held_too_long_fails_the_group_only(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "_BUSY_WAIT_S", 0.2)
    store = await SqliteOutbox.open(str(path))
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await store.add([event("too-late")])
        other.execute("COMMIT")
        (added,) = await store.add([event("after")])
        assert added.queued == 1
    finally:
        other.close()
        await store.close()


async def test_commit_on_the_loop_works_too(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "_COMMIT_IN_THREAD", False)
    store = await SqliteOutbox.open(str(path))
    try:
        results = await asyncio.gather(*(store.add([event(f"e{i}")]) for i in range(20)))
        assert [added.queued for (added,) in results] == [1] * 20
        assert len(await store.claim("meta", 50, lease_s=60)) == 20
    finally:
        await store.close()


async def test_files_are_private_to_the_owner(path: Path) -> None:
    # They hold IP addresses, user agents and hashed emails: 0600 whatever the umask (0022 made
    # all three 0644).
    old = os.umask(0o022)
    try:
        store = await SqliteOutbox.open(str(path))
        try:
            await store.add([event("a")])
            files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
            assert all(f.exists() for f in files)  # control: the WAL and its index exist
            modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
            assert modes == {f.name: 0o600 for f in files}
        finally:
            await store.close()
    finally:
        os.umask(old)


async def test_write_runs_in_the_writers_transaction(store: SqliteOutbox) -> None:
    assert await store.write(lambda conn: conn.execute("SELECT 41 + 1").fetchone()[0]) == 42


async def test_synchronous_sets_the_pragma(path: Path) -> None:
    for synchronous, expected in (("full", 2), ("normal", 1)):
        store = await SqliteOutbox.open(str(path), synchronous)
        try:
            setting = await store.write(lambda conn: conn.execute("PRAGMA synchronous").fetchone())
            assert setting == (expected,)
        finally:
            await store.close()


async def test_one_serve_per_file(path: Path) -> None:
    first = await SqliteOutbox.open(str(path), exclusive=True)
    try:
        with pytest.raises(StoreLocked, match="one process per SQLite file"):
            await SqliteOutbox.open(str(path), exclusive=True)
        command = await SqliteOutbox.open(str(path))  # `replay` and the other commands do not ask
        await command.close()
    finally:
        await first.close()
    again = await SqliteOutbox.open(str(path), exclusive=True)  # closing let the lock go
    await again.close()


async def test_a_group_keeps_the_order_its_jobs_queued_in(store: SqliteOutbox) -> None:
    # A group writes its events before it runs its functions: an add queued after a function
    # must not be written before it, or a retention pass or a replay would see an add queued
    # after it (and miss a row queued before it, were the order the other way).
    def events_now(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])

    before = store.commits
    first = store.add([event("o1")])
    seen = store.write(events_now)
    after = store.add([event("o2")])
    _, count, _ = await asyncio.gather(first, seen, after)
    assert count == 1  # o1 was written before the function ran, o2 after it
    assert store.commits - before == 2
    assert await store.write(events_now) == 2
