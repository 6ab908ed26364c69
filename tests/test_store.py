"""The SQLite outbox on its own: group commit, dedup keys, leases, retention."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.outbox import Claimed, DeliveryQuery, Finished, NewDelivery, NewEvent, Status
from gateway.outbox import SqliteOutbox as Store
from gateway.outbox.sqlite import outbox as store_module


def event(event_id: str, status: Status = Status.QUEUED, at: float | None = None) -> NewEvent:
    when = time.time() if at is None else at
    payload = b"{}" if status is Status.QUEUED else None
    return NewEvent(
        event_id=event_id,
        event_name="page_view",
        source="meta_pixel",
        event_time=int(when),
        received_at=when,
        dedupable=True,
        match_keys=0,
        deliveries=[NewDelivery("meta", status, payload)],
    )


async def test_concurrent_adds_share_transactions(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "s.sqlite3"))
    try:
        before = store.commits
        results = await asyncio.gather(*(store.add([event(f"e{i}")]) for i in range(200)))
        assert len(results) == 200
        # Control and claim at once: 200 adds took far fewer than 200 commits.
        assert 1 <= store.commits - before < 100
    finally:
        await store.close()


async def test_same_key_in_one_group_is_a_duplicate(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "s.sqlite3"))
    try:
        first, second = await store.add([event("same"), event("same")])
        assert (first.queued, first.duplicates) == (1, 0)
        assert (second.queued, second.duplicates) == (0, 1)
    finally:
        await store.close()


async def test_leases_hide_claimed_rows_until_released(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "s.sqlite3"))
    try:
        await store.add([event("a"), event("b")])
        claimed = await store.claim("meta", 10, lease_s=60)
        assert [c.payload for c in claimed] == [b"{}", b"{}"]
        assert await store.claim("meta", 10, lease_s=60) == []
        assert await store.release_leases() == 2  # what a crash leaves behind
        assert len(await store.claim("meta", 10, lease_s=60)) == 2
    finally:
        await store.close()


async def test_retention_prunes_final_rows_only(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "s.sqlite3"))
    try:
        old = time.time() - 40 * 86400
        await store.add(
            [event("old-dropped", Status.DROPPED_RULE, old), event("old-queued", at=old)]
        )
        await store.add([event("new-dropped", Status.DROPPED_RULE)])
        assert await store.prune(time.time() - 30 * 86400) == 1
        async with store.reader.execute("SELECT event_id FROM events ORDER BY id") as cur:
            assert [r[0] for r in await cur.fetchall()] == ["old-queued", "new-dropped"]
    finally:
        await store.close()


async def test_a_lock_held_by_another_process_is_waited_out_off_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = await Store.open(str(path))
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
        await store.close()


async def test_a_lock_held_too_long_fails_the_group_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "_BUSY_WAIT_S", 0.2)
    path = tmp_path / "s.sqlite3"
    store = await Store.open(str(path))
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


async def test_commit_on_the_loop_works_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "_COMMIT_IN_THREAD", False)
    store = await Store.open(str(tmp_path / "s.sqlite3"))
    try:
        results = await asyncio.gather(*(store.add([event(f"e{i}")]) for i in range(20)))
        assert [added.queued for (added,) in results] == [1] * 20
        assert len(await store.claim("meta", 50, lease_s=60)) == 20
    finally:
        await store.close()


def outcome(claimed: Claimed, status: Status, at: float) -> Finished:
    return Finished(
        id=claimed.id,
        status=status,
        attempts=claimed.attempts + 1,
        next_attempt_at=at,
        http_status=401,
        message="Error validating access token",
        latency_ms=1.0,
        first_attempt_at=at,
        erase_payload=status is Status.SENT,
    )


async def deliver_as(store: Store, status: Status) -> list[Claimed]:
    claimed = await store.claim("meta", 10, lease_s=60)
    await store.finish([outcome(c, status, time.time()) for c in claimed])
    return claimed


async def test_replay_never_sends_an_event_twice(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "s.sqlite3"))
    try:
        # Control: a dead delivery on its own comes back.
        await store.add([event("alone")])
        await deliver_as(store, Status.DEAD)
        assert await store.requeue(DeliveryQuery(statuses=("dead",), event_id="alone")) == 1

        # A later copy went out while the first lay dead: the dead one stays dead.
        await store.add([event("x")])
        await deliver_as(store, Status.DEAD)
        (copy,) = await store.add([event("x")])
        assert copy.queued == 1  # a dead delivery does not block a later copy
        await deliver_as(store, Status.SENT)
        assert await store.requeue(DeliveryQuery(statuses=("dead",), event_id="x")) == 0

        # Two dead deliveries of one key: only the newest comes back.
        await store.add([event("y")])
        await deliver_as(store, Status.DEAD)
        await store.add([event("y")])
        (newer,) = await deliver_as(store, Status.DEAD)
        assert await store.requeue(DeliveryQuery(statuses=("dead",), event_id="y")) == 1
        queued = await store.deliveries(DeliveryQuery(statuses=("queued",), event_id="y"))
        assert [row.id for row in queued] == [newer.id]

        # A failed delivery in flight stays with its sender until the lease is released.
        await store.add([event("z")])
        await deliver_as(store, Status.FAILED)
        assert len(await store.claim("meta", 10, lease_s=60)) >= 1  # on the wire again
        failed_z = DeliveryQuery(statuses=("failed",), event_id="z")
        assert await store.requeue(failed_z) == 0
        await store.release_leases()
        assert await store.requeue(failed_z) == 1
    finally:
        await store.close()


async def test_a_group_past_the_loop_threshold_keeps_ids_and_dedup(tmp_path: Path) -> None:
    # Over _ROWS_ON_LOOP rows, the committer thread inserts. That it frees the loop is a
    # measured figure (README, Performance), not asserted here; this checks what it writes.
    store = await Store.open(str(tmp_path / "s.sqlite3"))
    try:
        await store.add([event("seen-before")])
        batch = [event(f"b{i}") for i in range(store_module._ROWS_ON_LOOP)]
        batch += [event("seen-before"), event("b0")]
        added = await store.add(batch)
        assert sum(a.queued for a in added) == store_module._ROWS_ON_LOOP
        assert [a.duplicates for a in added[-2:]] == [1, 1]
        async with store.reader.execute("SELECT COUNT(*) FROM deliveries") as cur:
            assert await cur.fetchone() == (store_module._ROWS_ON_LOOP + 3,)
    finally:
        await store.close()


async def test_the_48_hours_count_from_the_last_send(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "s.sqlite3"))
    try:
        # Arrived over 48 hours ago, lay dead, was replayed and sent just now.
        await store.add([event("late", at=time.time() - store_module.DEDUP_WINDOW_S - 60)])
        await deliver_as(store, Status.DEAD)
        assert await store.requeue(DeliveryQuery(statuses=("dead",))) == 1
        await deliver_as(store, Status.SENT)
        (copy,) = await store.add([event("late")])
        assert (copy.queued, copy.duplicates) == (0, 1)
        # Arrived over 48 hours ago and still being retried: a copy is a duplicate.
        await store.add([event("retried", at=time.time() - store_module.DEDUP_WINDOW_S - 60)])
        await deliver_as(store, Status.FAILED)
        (retried,) = await store.add([event("retried")])
        assert (retried.queued, retried.duplicates) == (0, 1)
        # Control: a copy of an event last handled over 48 hours ago is new.
        await store.add([event("old", at=time.time() - store_module.DEDUP_WINDOW_S - 60)])
        (fresh,) = await store.add([event("old")])
        assert fresh.queued == 1
    finally:
        await store.close()


async def test_files_are_private_to_the_owner(tmp_path: Path) -> None:
    # They hold IP addresses, user agents and hashed emails: 0600 whatever the umask (0022 made
    # all three 0644).
    old = os.umask(0o022)
    try:
        path = tmp_path / "s.sqlite3"
        store = await Store.open(str(path))
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


async def lease_keeping(store: Store | Any) -> None:
    """A holder extends and returns only the leases it still holds as written (both backends)."""
    await store.add([event("a"), event("b"), event("c")])
    now = time.time()
    a, b, c = await store.claim("meta", 10, lease_s=60, now=now)
    assert a.leased_until == now + 60
    await store.finish([outcome(b, Status.FAILED, now)])  # b is done: its lease is 0
    extended = await store.extend_leases([(r.id, r.leased_until) for r in (a, b, c)], now + 120)
    assert sorted(extended) == [a.id, c.id]
    # Still hidden after the first lease would have run out: it was extended.
    assert [r.id for r in await store.claim("meta", 10, lease_s=60, now=now + 90)] == [b.id]
    # A stale token (the lease moved on) returns nothing; the current one returns the row.
    assert await store.return_leases([(a.id, a.leased_until)]) == 0
    assert await store.return_leases([(a.id, now + 120)]) == 1
    assert [r.id for r in await store.claim("meta", 10, lease_s=60, now=now + 91)] == [a.id]


async def test_leases_are_extended_and_returned_by_their_holder(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "s.sqlite3"))
    try:
        await lease_keeping(store)
    finally:
        await store.close()
