"""The PostgreSQL outbox on a real PostgreSQL: Store's behaviours, plus several replicas at once.

A throwaway cluster is started once per session (initdb + pg_ctl in a temp dir, as the
`postgres` OS user when running as root), or TAG_GATEWAY_PG_URL names a server to use (its
user needs CREATEDB). Each test gets a database of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from gateway import admin, report
from gateway.outbox import (
    DEDUP_WINDOW_S,
    DeliveryQuery,
    Finished,
    NewDelivery,
    NewEvent,
    Status,
    StoreClosed,
)
from gateway.outbox import PostgresOutbox as PgStore
from gateway.outbox import (
    SqliteOutbox as Store,
)
from gateway.outbox.postgres.outbox import _CLAIM
from gateway.outbox.postgres.schema import MIGRATIONS


def event(
    event_id: str,
    status: Status = Status.QUEUED,
    at: float | None = None,
    destination: str = "meta",
    name: str = "page_view",
) -> NewEvent:
    when = time.time() if at is None else at
    payload = b"{}" if status is Status.QUEUED else None
    return NewEvent(
        event_id=event_id,
        event_name=name,
        source="meta_pixel",
        event_time=int(when),
        received_at=when,
        dedupable=True,
        match_keys=0,
        deliveries=[NewDelivery(destination, status, payload)],
    )


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PgStore]:
    opened = await PgStore.open(pg_url)
    yield opened
    await opened.close()


# --- Store's behaviours ------------------------------------------------------------------------


async def test_concurrent_adds_share_transactions(store: PgStore) -> None:
    before = store.commits
    results = await asyncio.gather(*(store.add([event(f"e{i}")]) for i in range(200)))
    assert len(results) == 200
    assert all(r[0].queued == 1 for r in results)
    # Control and claim at once: 200 adds took far fewer than 200 commits.
    assert 1 <= store.commits - before < 100


async def test_same_key_in_one_group_is_a_duplicate(store: PgStore) -> None:
    first, second = await store.add([event("same"), event("same")])
    assert (first.queued, first.duplicates) == (1, 0)
    assert (second.queued, second.duplicates) == (0, 1)
    rows = await store.deliveries(DeliveryQuery(event_id="same"))
    assert [(r.status, r.duplicate_of, r.payload) for r in rows] == [
        ("duplicate", rows[1].id, None),
        ("queued", None, b"{}"),
    ]


async def test_on_queued_names_destinations_after_commit(store: PgStore) -> None:
    woken: list[set[str]] = []
    store.on_queued = lambda names: woken.append(set(names))
    await store.add([event("a"), event("b", destination="ga4"), event("c", Status.DROPPED_RULE)])
    assert woken == [{"meta", "ga4"}]


async def test_leases_hide_claimed_rows_until_they_expire(store: PgStore) -> None:
    await store.add([event("a"), event("b")])
    now = time.time()
    claimed = await store.claim("meta", 10, lease_s=60, now=now)
    assert [c.payload for c in claimed] == [b"{}", b"{}"]
    assert await store.claim("meta", 10, lease_s=60, now=now + 1) == []
    # A live lease may be another replica's: release_leases leaves it alone.
    assert await store.release_leases() == 0
    assert await store.claim("meta", 10, lease_s=60, now=now + 1) == []
    # Once the lease has run out the rows are due again, for any replica.
    again = await store.claim("meta", 10, lease_s=60, now=now + 61)
    assert [c.id for c in again] == [c.id for c in claimed]


async def test_release_leases_counts_expired_ones(store: PgStore) -> None:
    earlier = time.time() - 300
    await store.add([event(i, at=earlier) for i in "abc"])
    await store.claim("meta", 1, lease_s=60)  # a live replica's
    await store.claim("meta", 2, lease_s=60, now=earlier)  # what a crash left behind
    assert await store.release_leases() == 2
    leased = await store.pool.fetchval("SELECT COUNT(*) FROM deliveries WHERE leased_until > 0")
    assert leased == 1


async def test_finish_writes_outcomes_and_erases_payloads(store: PgStore) -> None:
    await store.add([event("a"), event("b")])
    now = time.time()
    a, b = await store.claim("meta", 10, lease_s=60, now=now)
    await store.finish(
        [
            Finished(a.id, Status.SENT, 1, now, 200, "ok", 12.5, now, erase_payload=True),
            Finished(b.id, Status.FAILED, 1, now + 30, 503, "busy", 40.0, now, False),
        ],
        now=now,
    )
    rows = {r.id: r for r in await store.deliveries(DeliveryQuery())}
    assert (rows[a.id].status, rows[a.id].payload, rows[a.id].http_status) == ("sent", None, 200)
    assert (rows[b.id].status, rows[b.id].payload, rows[b.id].message) == ("failed", b"{}", "busy")
    assert await store.next_due("meta") == now + 30
    assert await store.claim("meta", 10, lease_s=60, now=now + 1) == []
    retry = await store.claim("meta", 10, lease_s=60, now=now + 30)
    assert [(c.id, c.attempts, c.first_attempt_at) for c in retry] == [(b.id, 1, now)]


async def test_retention_prunes_final_rows_only(store: PgStore) -> None:
    old = time.time() - 40 * 86400
    await store.add(
        [
            event("old-dropped", Status.DROPPED_RULE, old),
            event("old-queued", at=old),
            event("old-sent", at=old),
        ]
    )
    [sent] = await store.deliveries(DeliveryQuery(event_id="old-sent"))
    await store.finish([Finished(sent.id, Status.SENT, 1, old, 200, "ok", 1.0, old, True)])
    await store.add([event("new-dropped", Status.DROPPED_RULE)])
    assert await store.prune(time.time() - 30 * 86400) == 2
    assert await store.prune(time.time() - 30 * 86400) == 0
    events = await store.pool.fetch("SELECT event_id FROM events ORDER BY id")
    assert [r[0] for r in events] == ["old-queued", "new-dropped"]
    # The pruned sent row's dedup key went with it; the queued row's stays.
    keys = await store.pool.fetch("SELECT event_id FROM dedup_keys ORDER BY event_id")
    assert [r[0] for r in keys] == ["old-queued"]


async def test_ping_and_write(store: PgStore) -> None:
    await store.ping()
    assert await store.write(lambda conn: conn.fetchval("SELECT 41 + 1")) == 42


async def test_close_finishes_queued_writes(pg_url: str) -> None:
    store = await PgStore.open(pg_url)
    pending = [asyncio.ensure_future(store.add([event(f"e{i}")])) for i in range(50)]
    await asyncio.sleep(0)  # they are queued, not yet written
    await store.close()
    assert all(p.result()[0].queued == 1 for p in pending)
    with pytest.raises(StoreClosed):
        await store.add([event("late")])


async def test_synchronous_normal_turns_off_synchronous_commit(pg_url: str) -> None:
    for synchronous, expected in (("full", "on"), ("normal", "off")):
        store = await PgStore.open(pg_url, synchronous)
        try:
            setting = await store.write(lambda conn: conn.fetchval("SHOW synchronous_commit"))
            assert setting == expected
        finally:
            await store.close()


async def test_a_dropped_connection_costs_no_write(store: PgStore, pg_url: str) -> None:
    await store.add([event("before")])
    other = await asyncpg.connect(pg_url)
    try:
        # What a server restart or a failover does to the pool's idle connections.
        terminated = await other.fetchval(
            "SELECT COUNT(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await other.close()
    assert terminated >= 1  # control: the store's connection really went
    [after] = await store.add([event("after")])
    assert after.queued == 1


# --- several replicas on one database -----------------------------------------------------------


async def test_dedup_across_replicas(pg_url: str) -> None:
    a, b = await PgStore.open(pg_url), await PgStore.open(pg_url)
    try:
        [first] = await a.add([event("x")])
        [second] = await b.add([event("x")])
        assert (first.queued, second.queued, second.duplicates) == (1, 0, 1)
        copy, original = await b.deliveries(DeliveryQuery(event_id="x"))
        assert (copy.status, copy.duplicate_of, copy.payload) == ("duplicate", original.id, None)
        # Another destination, or another event name, is another key.
        others = await b.add([event("x", destination="ga4"), event("x", name="purchase")])
        assert [o.queued for o in others] == [1, 1]
    finally:
        await a.close()
        await b.close()


async def test_concurrent_dedup_across_replicas_has_one_winner_per_key(pg_url: str) -> None:
    replicas = [await PgStore.open(pg_url) for _ in range(3)]
    keys = [f"k{i}" for i in range(60)]
    try:
        for _ in range(5):
            # The same keys from three replicas at once, in different orders and groups (a
            # wrong lock order would deadlock; a snapshot read would let two win).
            orders = [keys, keys[::-1], keys[30:] + keys[:30]]
            await asyncio.gather(
                *(
                    r.add([event(k) for k in order[i : i + 7]])
                    for r, order in zip(replicas, orders, strict=True)
                    for i in range(0, len(order), 7)
                )
            )
            keys = [f"{k}+" for k in keys]
        rows = await replicas[0].pool.fetch(
            "SELECT event_id, COUNT(*) FILTER (WHERE status = 'queued'),"
            " COUNT(*) FILTER (WHERE status = 'duplicate') FROM deliveries GROUP BY event_id"
        )
        assert len(rows) == 300
        assert {(r[1], r[2]) for r in rows} == {(1, 2)}
        bad = await replicas[0].pool.fetchval(
            "SELECT COUNT(*) FROM deliveries d JOIN deliveries h ON h.id = d.duplicate_of"
            " WHERE d.status = 'duplicate' AND (h.status <> 'queued' OR h.event_id <> d.event_id)"
        )
        assert bad == 0
    finally:
        for r in replicas:
            await r.close()


async def test_dead_or_expired_holders_do_not_block(pg_url: str) -> None:
    a, b = await PgStore.open(pg_url), await PgStore.open(pg_url)
    try:
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
    finally:
        await a.close()
        await b.close()


async def test_replay_never_sends_an_event_twice(pg_url: str) -> None:
    a, b = await PgStore.open(pg_url), await PgStore.open(pg_url)

    async def deliver_as(store: PgStore, status: Status) -> list[int]:
        claimed = await store.claim("meta", 10, 60)
        now = time.time()
        await store.finish(
            [Finished(c.id, status, 1, now, 401, "token", 1.0, now, False) for c in claimed]
        )
        return [c.id for c in claimed]

    dead = ("dead",)
    try:
        # Control: a dead delivery on its own comes back, and takes its key back: a copy that
        # arrives after the replay is a duplicate of it.
        await a.add([event("alone")])
        await deliver_as(a, Status.DEAD)
        assert await a.requeue(DeliveryQuery(statuses=dead, event_id="alone")) == 1
        [after] = await b.add([event("alone")])
        assert after.duplicates == 1

        # A later copy (another replica) went out while the first lay dead: it stays dead.
        await a.add([event("x")])
        await deliver_as(a, Status.DEAD)
        [copy] = await b.add([event("x")])
        assert copy.queued == 1
        await deliver_as(b, Status.SENT)
        assert await a.requeue(DeliveryQuery(statuses=dead, event_id="x")) == 0

        # Two dead deliveries of one key: only the newest comes back.
        await a.add([event("y")])
        await deliver_as(a, Status.DEAD)
        await b.add([event("y")])
        [newer] = await deliver_as(b, Status.DEAD)
        assert await a.requeue(DeliveryQuery(statuses=dead, event_id="y")) == 1
        queued = await a.deliveries(DeliveryQuery(statuses=("queued",), event_id="y"))
        assert [row.id for row in queued] == [newer]

        # A failed delivery in flight stays with the replica sending it until its lease ends.
        await a.add([event("z")])
        await deliver_as(a, Status.FAILED)
        assert await b.claim("meta", 10, 60)  # on the wire again, leased for 60 s
        failed_z = DeliveryQuery(statuses=("failed",), event_id="z")
        assert await a.requeue(failed_z) == 0
        assert await a.requeue(failed_z, now=time.time() + 120) == 1
    finally:
        await a.close()
        await b.close()


async def test_the_48_hours_count_from_the_last_send(store: PgStore) -> None:
    async def deliver_as(status: Status) -> None:
        claimed = await store.claim("meta", 10, 60)
        now = time.time()
        await store.finish(
            [Finished(c.id, status, 1, now, 200, "m", 1.0, now, False) for c in claimed]
        )

    # Arrived over 48 hours ago, lay dead, was replayed and sent just now.
    await store.add([event("late", at=time.time() - DEDUP_WINDOW_S - 60)])
    await deliver_as(Status.DEAD)
    assert await store.requeue(DeliveryQuery(statuses=("dead",))) == 1
    await deliver_as(Status.SENT)
    [copy] = await store.add([event("late")])
    assert (copy.queued, copy.duplicates) == (0, 1)
    # Arrived over 48 hours ago and still being retried: a copy is a duplicate.
    await store.add([event("retried", at=time.time() - DEDUP_WINDOW_S - 60)])
    await deliver_as(Status.FAILED)
    [retried] = await store.add([event("retried")])
    assert (retried.queued, retried.duplicates) == (0, 1)
    # Control: a copy of an event last handled over 48 hours ago is new.
    await store.add([event("old", at=time.time() - DEDUP_WINDOW_S - 60)])
    [fresh] = await store.add([event("old")])
    assert fresh.queued == 1


async def test_replay_waits_for_another_replicas_write_to_the_same_event(
    store: PgStore, pg_url: str
) -> None:
    async def deliver_as(status: Status) -> None:
        claimed = await store.claim("meta", 10, 60)
        now = time.time()
        await store.finish(
            [Finished(c.id, status, 1, now, 401, "m", 1.0, now, False) for c in claimed]
        )

    other = await asyncpg.connect(pg_url)  # another replica, mid-transaction
    try:
        # A copy of a dead event being ingested: it has taken the key, not yet committed.
        await store.add([event("k")])
        await deliver_as(Status.DEAD)
        event_row = await other.fetchval("SELECT event_row FROM deliveries WHERE event_id = 'k'")
        async with other.transaction():
            now = time.time()
            copy = await other.fetchval(
                "INSERT INTO deliveries (event_row, event_id, event_name, destination, status,"
                " event_time, next_attempt_at, created_at, updated_at, payload)"
                " VALUES ($1, 'k', 'page_view', 'meta', 'queued', $2, $3, $3, $3, '{}')"
                " RETURNING id",
                event_row,
                int(now),
                now,
            )
            await other.execute(
                "UPDATE dedup_keys SET delivery_id = $1, created_at = $2 WHERE event_id = 'k'",
                copy,
                now,
            )
            replay = asyncio.create_task(store.requeue(DeliveryQuery(statuses=("dead",))))
            await asyncio.sleep(0.3)
            assert not replay.done()  # it waits for the key
        assert await replay == 0
        live = await store.deliveries(DeliveryQuery(statuses=("queued",), event_id="k"))
        assert [row.id for row in live] == [copy]

        # A failed delivery being claimed (leased) by another replica's open transaction.
        await store.add([event("f")])
        await deliver_as(Status.FAILED)
        async with other.transaction():
            now = time.time()
            assert await other.fetch(_CLAIM, now + 60, "meta", now, 10)
            replay = asyncio.create_task(store.requeue(DeliveryQuery(statuses=("failed",))))
            await asyncio.sleep(0.3)
        assert await replay == 0
    finally:
        await other.close()


async def test_concurrent_claims_never_share_a_row(pg_url: str) -> None:
    a, b = await PgStore.open(pg_url), await PgStore.open(pg_url)
    try:
        for start in range(0, 2000, 500):
            await a.add([event(f"e{i}") for i in range(start, start + 500)])

        async def drain(store: PgStore) -> list[int]:
            got: list[int] = []
            while batch := await store.claim("meta", 100, lease_s=600):
                got.extend(c.id for c in batch)
                await asyncio.sleep(0)
            return got

        from_a, from_b = await asyncio.gather(drain(a), drain(b))
        assert from_a
        assert from_b  # control: both replicas really claimed
        union = from_a + from_b
        assert len(union) == len(set(union)) == 2000
        assert set(union) == {r[0] for r in await a.pool.fetch("SELECT id FROM deliveries")}
    finally:
        await a.close()
        await b.close()


async def test_migrations_are_safe_when_replicas_start_together(pg_url: str) -> None:
    opened = await asyncio.gather(*(PgStore.open(pg_url) for _ in range(3)), return_exceptions=True)
    replicas = [r for r in opened if isinstance(r, PgStore)]
    try:
        # Without the advisory lock one of them fails (pg_type_typname_nsp_index).
        assert len(replicas) == 3, opened
        versions = await replicas[0].pool.fetch("SELECT version FROM schema_version")
        assert [r[0] for r in versions] == list(range(1, len(MIGRATIONS) + 1))
        added = await asyncio.gather(*(r.add([event("same")]) for r in replicas))
        assert sorted(a[0].queued for a in added) == [0, 0, 1]
    finally:
        for r in replicas:
            await r.close()
    again = await PgStore.open(pg_url)  # a restart finds the schema current
    await again.close()


# --- the same answers as SQLite -----------------------------------------------------------------


def _mixed(now: float) -> list[list[NewEvent]]:
    """Groups of events over four hours: three destinations, every status at add time, ids
    that repeat within and across groups, values and currencies."""
    groups = []
    for hour in range(4):
        at = now - 3 * 3600 + hour * 3600
        group = []
        for i in range(12):
            deliveries = [
                NewDelivery("meta", Status.QUEUED, b'{"m": %d}' % i),
                NewDelivery("ga4", Status.QUEUED, b"{}", event_name="purchase" if i % 2 else None),
                NewDelivery("tiktok", Status.DROPPED_CONSENT, message="consent: ad_storage"),
            ]
            if i % 5 == 0:
                deliveries.append(NewDelivery("meta", Status.DROPPED_RULE, message="rule"))
            group.append(
                NewEvent(
                    event_id=f"id{(i + hour) % 7}",
                    event_name="page_view",
                    source="meta_pixel" if i % 3 else "server",
                    event_time=int(at + i),
                    received_at=at + i,
                    dedupable=bool(i % 2),
                    match_keys=i % 64,
                    deliveries=deliveries,
                    # "n/a": SQLite's CAST reads it as 0; PostgreSQL's would raise.
                    value=None if i % 4 == 0 else "n/a" if i == 7 else f"{i}.25",
                    currency="EUR" if i % 3 else "USD",
                )
            )
        groups.append(group)
    return groups


async def test_same_answers_as_sqlite(tmp_path: Path, store: PgStore) -> None:
    lite = await Store.open(str(tmp_path / "s.sqlite3"))
    try:
        now = time.time()
        for group in _mixed(now):
            assert await store.add(group) == await lite.add(group)
        # The same attempts on both: some sent, some dead, some failed.
        for dest in ("meta", "ga4"):
            a = await store.claim(dest, 15, 60, now=now)
            b = await lite.claim(dest, 15, 60, now=now)
            assert a == b
            outcomes = [
                Finished(
                    c.id,
                    (Status.SENT, Status.DEAD, Status.FAILED)[c.id % 3],
                    1,
                    now + 60,
                    (200, 400, 503)[c.id % 3],
                    "answer",
                    10.0 + c.id,
                    now,
                    erase_payload=c.id % 3 == 0,
                )
                for c in a
            ]
            await store.finish(outcomes, now=now)
            await lite.finish(outcomes, now=now)

        queries = [
            DeliveryQuery(limit=1000),
            DeliveryQuery(statuses=("dead", "failed")),
            DeliveryQuery(destination="ga4", limit=5),
            DeliveryQuery(event_id="id3", since=now - 2 * 3600, until=now),
        ]
        for query in queries:
            assert await store.deliveries(query) == await lite.deliveries(query)
        since, until = now - 86400, now + 1
        assert await store.window(since, until) == await lite.window(since, until)
        assert sorted(await store.values(since, until)) == sorted(await lite.values(since, until))
        assert sorted(await store.hourly(since, until)) == sorted(await lite.hourly(since, until))
        assert await store.queue_stats() == await lite.queue_stats()
        # What the report and the admin page make of them (they are typed for Store today).
        window = report.Window(now - 86400, now + 1)
        built = await report.build(store, window)  # type: ignore[arg-type]
        assert built.as_dict() == (await report.build(lite, window)).as_dict()
        assert built.lines  # control: there is something to compare
        page = await admin.page(store, now=now + 1)  # type: ignore[arg-type]
        assert page == await admin.page(lite, now=now + 1)
        for dest in ("meta", "ga4", "tiktok"):
            assert await store.next_due(dest) == await lite.next_due(dest)

        replay = DeliveryQuery(statuses=("dead",), destination="meta")
        assert await store.requeue(replay, now=now + 5) == await lite.requeue(replay, now=now + 5)
        assert await store.deliveries(DeliveryQuery(limit=1000)) == await lite.deliveries(
            DeliveryQuery(limit=1000)
        )
        assert await store.queue_stats() == await lite.queue_stats()
        assert await store.prune(now + 10) == await lite.prune(now + 10)
        assert await store.deliveries(DeliveryQuery(limit=1000)) == await lite.deliveries(
            DeliveryQuery(limit=1000)
        )
    finally:
        await lite.close()


async def test_leases_are_extended_and_returned_by_their_holder(store: PgStore) -> None:
    from tests.test_store import lease_keeping

    await lease_keeping(store)
