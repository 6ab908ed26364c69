"""The SQLite outbox on its own: group commit, dedup keys, leases, retention."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gateway.store import NewDelivery, NewEvent, Status, Store


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
