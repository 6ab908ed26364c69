"""PostgreSQL gives SQLite's answers: one mixed history written to both, every read compared,
and what the report and the admin page make of them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway import admin, report
from gateway.outbox import (
    DeliveryQuery,
    Finished,
    NewDelivery,
    NewEvent,
    PostgresOutbox,
    SqliteOutbox,
    Status,
)


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresOutbox]:
    opened = await PostgresOutbox.open(pg_url)
    yield opened
    await opened.close()


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


async def test_same_answers_as_sqlite(tmp_path: Path, store: PostgresOutbox) -> None:
    lite = await SqliteOutbox.open(str(tmp_path / "s.sqlite3"))
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
        # What the report and the admin page make of them.
        window = report.Window(now - 86400, now + 1)
        built = await report.build(store, window)
        assert built.as_dict() == (await report.build(lite, window)).as_dict()
        assert built.lines  # control: there is something to compare
        page = await admin.page(store, now=now + 1)
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
