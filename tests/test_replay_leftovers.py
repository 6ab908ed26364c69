"""Why `replay` leaves a row, counted the same way on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.outbox import DeliveryQuery, NewDelivery, NewEvent, Status, Storage
from gateway.outbox import PostgresOutbox as PgStore
from gateway.outbox import SqliteOutbox as Store


@pytest.fixture
def where(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return str(tmp_path / "s.sqlite3")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(backend: str, where: str) -> AsyncIterator[Storage]:
    opened: Storage = await (Store.open(where) if backend == "sqlite" else PgStore.open(where))
    yield opened
    await opened.close()


async def test_leftovers_by_reason_and_what_requeue_takes(store: Storage) -> None:
    now = time.time()

    def event(event_id: str, *statuses: Status, age_s: float = 0) -> NewEvent:
        deliveries = [NewDelivery("meta", s, b"{}", message="x") for s in statuses]
        return NewEvent(event_id, "purchase", "server", int(now - age_s), now, True, 0, deliveries)

    await store.add(
        [
            event("fresh", Status.DEAD),
            event("inflight", Status.DEAD),
            event("later", Status.DEAD, Status.SENT),
            event("old", Status.DEAD, age_s=8 * 86400),
            event("twice", Status.DEAD, Status.DEAD),
        ]
    )
    [inflight] = await store.deliveries(DeliveryQuery(event_id="inflight"))
    claimed = await store.claim("meta", 100, 60, now=now + 1)
    assert claimed == []  # dead rows are not claimable: lease the one by hand
    if isinstance(store, Store):
        await store.write(
            lambda conn: conn.execute(
                "UPDATE deliveries SET leased_until = ? WHERE id = ?", (now + 60, inflight.id)
            )
        )
    else:
        assert isinstance(store, PgStore)
        await store.pool.execute(
            "UPDATE deliveries SET leased_until = $1 WHERE id = $2", now + 60, inflight.id
        )
    query = DeliveryQuery(statuses=("dead",), oldest=(("meta", int(now - 7 * 86400)),))
    left = await store.replay_leftovers(query, now)
    assert left == {"candidate": 3, "in_flight": 1, "later_copy": 1, "too_old": 1}
    assert await store.requeue(query, now) == 2
    queued = await store.deliveries(DeliveryQuery(statuses=("queued",)))
    assert sorted(r.event_id for r in queued) == ["fresh", "twice"]
