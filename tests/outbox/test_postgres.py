"""What only the PostgreSQL outbox has: replicas sharing one database (SKIP LOCKED claims,
`dedup_keys`, migrations under an advisory lock), leases another replica may hold, and a pool
whose connections can drop.

A throwaway cluster is started once per session (initdb + pg_ctl in a temp dir, as the
`postgres` OS user when running as root), or TAG_GATEWAY_PG_URL names a server to use (its
user needs CREATEDB). Each test gets a database of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import pytest

from gateway.outbox import DeliveryQuery, Finished, PostgresOutbox, Status
from gateway.outbox.postgres.outbox import _CLAIM
from gateway.outbox.postgres.schema import MIGRATIONS
from tests.outbox.builders import event, past_retention


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresOutbox]:
    opened = await PostgresOutbox.open(pg_url)
    yield opened
    await opened.close()


async def test_release_leases_leaves_live_leases(store: PostgresOutbox) -> None:
    await store.add([event("a"), event("b")])
    now = time.time()
    assert len(await store.claim("meta", 10, lease_s=60, now=now)) == 2
    # A live lease may be another replica's: release_leases leaves it alone.
    assert await store.release_leases() == 0
    assert await store.claim("meta", 10, lease_s=60, now=now + 1) == []


async def test_release_leases_counts_expired_ones(store: PostgresOutbox) -> None:
    earlier = time.time() - 300
    await store.add([event(i, at=earlier) for i in "abc"])
    await store.claim("meta", 1, lease_s=60)  # a live replica's
    await store.claim("meta", 2, lease_s=60, now=earlier)  # what a crash left behind
    assert await store.release_leases() == 2
    leased = await store.pool.fetchval("SELECT COUNT(*) FROM deliveries WHERE leased_until > 0")
    assert leased == 1


async def test_a_pruned_rows_dedup_key_goes_with_it(store: PostgresOutbox) -> None:
    await past_retention(store)
    assert await store.prune(time.time() - 30 * 86400) == 2
    # The pruned sent row's dedup key went with it; the queued row's stays.
    keys = await store.pool.fetch("SELECT event_id FROM dedup_keys ORDER BY event_id")
    assert [r[0] for r in keys] == ["old-queued"]


async def test_ping_and_write(store: PostgresOutbox) -> None:
    await store.ping()
    assert await store.write(lambda conn: conn.fetchval("SELECT 41 + 1")) == 42


async def test_synchronous_normal_turns_off_synchronous_commit(pg_url: str) -> None:
    for synchronous, expected in (("full", "on"), ("normal", "off")):
        store = await PostgresOutbox.open(pg_url, synchronous)
        try:
            setting = await store.write(lambda conn: conn.fetchval("SHOW synchronous_commit"))
            assert setting == expected
        finally:
            await store.close()


async def test_a_dropped_connection_costs_no_write(store: PostgresOutbox, pg_url: str) -> None:
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


async def test_replay_waits_for_another_replicas_write_to_the_same_event(
    store: PostgresOutbox, pg_url: str
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
    a, b = await PostgresOutbox.open(pg_url), await PostgresOutbox.open(pg_url)
    try:
        for start in range(0, 2000, 500):
            await a.add([event(f"e{i}") for i in range(start, start + 500)])

        async def drain(store: PostgresOutbox) -> list[int]:
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
    opened = await asyncio.gather(
        *(PostgresOutbox.open(pg_url) for _ in range(3)), return_exceptions=True
    )
    replicas = [r for r in opened if isinstance(r, PostgresOutbox)]
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
    again = await PostgresOutbox.open(pg_url)  # a restart finds the schema current
    await again.close()
