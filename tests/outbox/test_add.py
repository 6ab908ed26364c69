"""`add`: the group commit, and dedup by (destination, event name, event id) within 48 hours."""

from __future__ import annotations

import asyncio
import time

from gateway.outbox import DEDUP_WINDOW_S, DeliveryQuery, Finished, Status, Storage, group
from gateway.outbox.sqlite import outbox as sqlite_outbox
from tests.outbox.builders import deliver_as, event
from tests.outbox.conftest import Replicas, Sql

BIG_GROUP = sqlite_outbox._ROWS_ON_LOOP
"""Events enough that SQLite inserts them in its committer thread, not on the loop."""


async def test_concurrent_adds_share_transactions(outbox: Storage) -> None:
    before = outbox.commits
    results = await asyncio.gather(*(outbox.add([event(f"e{i}")]) for i in range(200)))
    assert len(results) == 200
    assert all(r[0].queued == 1 for r in results)
    # Control and claim at once: 200 adds took far fewer than 200 commits.
    assert 1 <= outbox.commits - before < 100


async def _two_adds_apart(outbox: Storage, window_s: float) -> int:
    """Commits taken by two adds queued 20 ms apart, with the group window at `window_s`."""
    outbox.window_s = window_s  # type: ignore[attr-defined]
    before = outbox.commits
    first = asyncio.create_task(outbox.add([event("w1")]))
    await asyncio.sleep(0.02)
    await asyncio.gather(first, outbox.add([event("w2")]))
    return outbox.commits - before


async def test_an_add_within_the_group_window_joins_the_group(outbox: Storage) -> None:
    assert await _two_adds_apart(outbox, 0.5) == 1
    # Control: without the window the second add, 20 ms later, is a group of its own.
    assert await _two_adds_apart(outbox, 0) == 2


async def test_a_big_group_skips_the_window(outbox: Storage) -> None:
    outbox.window_s = 60  # type: ignore[attr-defined]
    # A window of a minute: only a group of SMALL_GROUP or more returns within seconds.
    adds = [outbox.add([event(f"b{i}")]) for i in range(group.SMALL_GROUP)]
    assert len(await asyncio.wait_for(asyncio.gather(*adds), 10)) == group.SMALL_GROUP


async def test_same_key_in_one_group_is_a_duplicate(outbox: Storage) -> None:
    first, second = await outbox.add([event("same"), event("same")])
    assert (first.queued, first.duplicates) == (1, 0)
    assert (second.queued, second.duplicates) == (0, 1)
    rows = await outbox.deliveries(DeliveryQuery(event_id="same"))
    assert [(r.status, r.duplicate_of, r.payload) for r in rows] == [
        ("duplicate", rows[1].id, None),
        ("queued", None, b"{}"),
    ]


async def test_on_queued_names_destinations_after_commit(outbox: Storage) -> None:
    woken: list[set[str]] = []
    outbox.on_queued = lambda names: woken.append(set(names))
    await outbox.add([event("a"), event("b", destination="ga4"), event("c", Status.DROPPED_RULE)])
    assert woken == [{"meta", "ga4"}]


async def test_a_big_group_keeps_ids_and_dedup(outbox: Storage, sql: Sql) -> None:
    # On SQLite this group is past the loop threshold, so the committer thread inserts. That it
    # frees the loop is a measured figure (README, Performance), not asserted here; this checks
    # what it writes.
    await outbox.add([event("seen-before")])
    batch = [event(f"b{i}") for i in range(BIG_GROUP)]
    batch += [event("seen-before"), event("b0")]
    added = await outbox.add(batch)
    assert sum(a.queued for a in added) == BIG_GROUP
    assert [a.duplicates for a in added[-2:]] == [1, 1]
    assert await sql.rows("SELECT COUNT(*) FROM deliveries") == [(BIG_GROUP + 3,)]


async def test_dedup_across_replicas(outbox: Storage, replica: Storage) -> None:
    a, b = outbox, replica
    [first] = await a.add([event("x")])
    [second] = await b.add([event("x")])
    assert (first.queued, second.queued, second.duplicates) == (1, 0, 1)
    copy, original = await b.deliveries(DeliveryQuery(event_id="x"))
    assert (copy.status, copy.duplicate_of, copy.payload) == ("duplicate", original.id, None)
    # Another destination, or another event name, is another key.
    others = await b.add([event("x", destination="ga4"), event("x", name="purchase")])
    assert [o.queued for o in others] == [1, 1]


async def test_concurrent_dedup_across_replicas_has_one_winner_per_key(
    replicas: Replicas, sql: Sql
) -> None:
    three = await replicas(3)
    keys = [f"k{i}" for i in range(60)]
    for _ in range(5):
        # The same keys from three replicas at once, in different orders and groups (a wrong
        # lock order would deadlock; a snapshot read would let two win).
        orders = [keys, keys[::-1], keys[30:] + keys[:30]]
        await asyncio.gather(
            *(
                r.add([event(k) for k in order[i : i + 7]])
                for r, order in zip(three, orders, strict=True)
                for i in range(0, len(order), 7)
            )
        )
        keys = [f"{k}+" for k in keys]
    rows = await sql.rows(
        "SELECT event_id, COUNT(*) FILTER (WHERE status = 'queued'),"
        " COUNT(*) FILTER (WHERE status = 'duplicate') FROM deliveries GROUP BY event_id"
    )
    assert len(rows) == 300
    assert {(r[1], r[2]) for r in rows} == {(1, 2)}
    bad = await sql.rows(
        "SELECT COUNT(*) FROM deliveries d JOIN deliveries h ON h.id = d.duplicate_of"
        " WHERE d.status = 'duplicate' AND (h.status <> 'queued' OR h.event_id <> d.event_id)"
    )
    assert bad == [(0,)]


async def test_dead_or_expired_holders_do_not_block(outbox: Storage, replica: Storage) -> None:
    a, b = outbox, replica
    await a.add([event("dead")])
    [claimed] = await a.claim("meta", 10, 60)
    now = time.time()
    await a.finish([Finished(claimed.id, Status.DEAD, 1, now, 400, "bad", 1.0, now, False)])
    [again] = await b.add([event("dead")])
    assert again.queued == 1
    # Older than the 48-hour window: no longer a duplicate.
    await a.add([event("old", at=time.time() - DEDUP_WINDOW_S - 60)])
    [fresh] = await b.add([event("old")])
    assert fresh.queued == 1
    # Control: within the window the same thing is a duplicate.
    await a.add([event("recent", at=time.time() - DEDUP_WINDOW_S + 60)])
    [copy] = await b.add([event("recent")])
    assert copy.duplicates == 1


async def test_the_48_hours_count_from_the_last_send(outbox: Storage) -> None:
    # Arrived over 48 hours ago, lay dead, was replayed and sent just now.
    await outbox.add([event("late", at=time.time() - DEDUP_WINDOW_S - 60)])
    await deliver_as(outbox, Status.DEAD)
    assert await outbox.requeue(DeliveryQuery(statuses=("dead",))) == 1
    await deliver_as(outbox, Status.SENT)
    [copy] = await outbox.add([event("late")])
    assert (copy.queued, copy.duplicates) == (0, 1)
    # Arrived over 48 hours ago and still being retried: a copy is a duplicate.
    await outbox.add([event("retried", at=time.time() - DEDUP_WINDOW_S - 60)])
    await deliver_as(outbox, Status.FAILED)
    [retried] = await outbox.add([event("retried")])
    assert (retried.queued, retried.duplicates) == (0, 1)
    # Control: a copy of an event last handled over 48 hours ago is new.
    await outbox.add([event("old", at=time.time() - DEDUP_WINDOW_S - 60)])
    [fresh] = await outbox.add([event("old")])
    assert fresh.queued == 1
