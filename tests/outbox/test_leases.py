"""`claim`, its lease (extended, returned, run out) and `finish`: the delivery worker's side."""

from __future__ import annotations

import time

from gateway.outbox import DeliveryQuery, Finished, Status, Storage
from tests.outbox.builders import event, outcome


async def test_leases_hide_claimed_rows_until_they_expire(outbox: Storage) -> None:
    await outbox.add([event("a"), event("b")])
    now = time.time()
    claimed = await outbox.claim("meta", 10, lease_s=60, now=now)
    assert [c.payload for c in claimed] == [b"{}", b"{}"]
    assert await outbox.claim("meta", 10, lease_s=60, now=now + 1) == []
    # Once the lease has run out the rows are due again, for any worker. (What
    # `release_leases` does to a live lease differs: test_sqlite.py, test_postgres.py.)
    again = await outbox.claim("meta", 10, lease_s=60, now=now + 61)
    assert [c.id for c in again] == [c.id for c in claimed]


async def test_leases_are_extended_and_returned_by_their_holder(outbox: Storage) -> None:
    await outbox.add([event("a"), event("b"), event("c")])
    now = time.time()
    a, b, c = await outbox.claim("meta", 10, lease_s=60, now=now)
    assert a.leased_until == now + 60
    await outbox.finish([outcome(b, Status.FAILED, now)])  # b is done: its lease is 0
    extended = await outbox.extend_leases([(r.id, r.leased_until) for r in (a, b, c)], now + 120)
    assert sorted(extended) == [a.id, c.id]
    # Still hidden after the first lease would have run out: it was extended.
    assert [r.id for r in await outbox.claim("meta", 10, lease_s=60, now=now + 90)] == [b.id]
    # A stale token (the lease moved on) returns nothing; the current one returns the row.
    assert await outbox.return_leases([(a.id, a.leased_until)]) == 0
    assert await outbox.return_leases([(a.id, now + 120)]) == 1
    assert [r.id for r in await outbox.claim("meta", 10, lease_s=60, now=now + 91)] == [a.id]


async def test_finish_writes_outcomes_and_erases_payloads(outbox: Storage) -> None:
    await outbox.add([event("a"), event("b")])
    now = time.time()
    a, b = await outbox.claim("meta", 10, lease_s=60, now=now)
    await outbox.finish(
        [
            Finished(a.id, Status.SENT, 1, now, 200, "ok", 12.5, now, erase_payload=True),
            Finished(b.id, Status.FAILED, 1, now + 30, 503, "busy", 40.0, now, False),
        ],
        now=now,
    )
    rows = {r.id: r for r in await outbox.deliveries(DeliveryQuery())}
    assert (rows[a.id].status, rows[a.id].payload, rows[a.id].http_status) == ("sent", None, 200)
    assert (rows[b.id].status, rows[b.id].payload, rows[b.id].message) == ("failed", b"{}", "busy")
    assert await outbox.next_due("meta") == now + 30
    assert await outbox.claim("meta", 10, lease_s=60, now=now + 1) == []
    retry = await outbox.claim("meta", 10, lease_s=60, now=now + 30)
    assert [(c.id, c.attempts, c.first_attempt_at) for c in retry] == [(b.id, 1, now)]
