"""`requeue` (what `tag-gateway replay` runs) and `replay_leftovers` (why it leaves a row)."""

from __future__ import annotations

import time

from gateway.outbox import DeliveryQuery, NewDelivery, NewEvent, Status, Storage
from tests.outbox.builders import deliver_as, event
from tests.outbox.conftest import Sql


async def test_replay_never_sends_an_event_twice(outbox: Storage, replica: Storage) -> None:
    a, b = outbox, replica
    dead = ("dead",)
    # Control: a dead delivery on its own comes back, and takes its key back: a copy that
    # arrives after the replay is a duplicate of it.
    await a.add([event("alone")])
    await deliver_as(a, Status.DEAD)
    assert await a.requeue(DeliveryQuery(statuses=dead, event_id="alone")) == 1
    [after] = await b.add([event("alone")])
    assert after.duplicates == 1

    # A later copy (on another replica) went out while the first lay dead: it stays dead.
    await a.add([event("x")])
    await deliver_as(a, Status.DEAD)
    [copy] = await b.add([event("x")])
    assert copy.queued == 1  # a dead delivery does not block a later copy
    await deliver_as(b, Status.SENT)
    assert await a.requeue(DeliveryQuery(statuses=dead, event_id="x")) == 0

    # Two dead deliveries of one key: only the newest comes back.
    await a.add([event("y")])
    await deliver_as(a, Status.DEAD)
    await b.add([event("y")])
    [newer] = await deliver_as(b, Status.DEAD)
    assert await a.requeue(DeliveryQuery(statuses=dead, event_id="y")) == 1
    queued = await a.deliveries(DeliveryQuery(statuses=("queued",), event_id="y"))
    assert [row.id for row in queued] == [newer.id]

    # A failed delivery in flight stays with the worker sending it until its lease ends.
    await a.add([event("z")])
    await deliver_as(a, Status.FAILED)
    assert await b.claim("meta", 10, 60)  # on the wire again, leased for 60 s
    failed_z = DeliveryQuery(statuses=("failed",), event_id="z")
    assert await a.requeue(failed_z) == 0
    assert await a.requeue(failed_z, now=time.time() + 120) == 1


async def test_leftovers_by_reason_and_what_requeue_takes(outbox: Storage, sql: Sql) -> None:
    now = time.time()

    def dead_event(event_id: str, *statuses: Status, age_s: float = 0) -> NewEvent:
        deliveries = [NewDelivery("meta", s, b"{}", message="x") for s in statuses]
        return NewEvent(event_id, "purchase", "server", int(now - age_s), now, True, 0, deliveries)

    await outbox.add(
        [
            dead_event("fresh", Status.DEAD),
            dead_event("inflight", Status.DEAD),
            dead_event("later", Status.DEAD, Status.SENT),
            dead_event("old", Status.DEAD, age_s=8 * 86400),
            dead_event("twice", Status.DEAD, Status.DEAD),
        ]
    )
    [inflight] = await outbox.deliveries(DeliveryQuery(event_id="inflight"))
    claimed = await outbox.claim("meta", 100, 60, now=now + 1)
    assert claimed == []  # dead rows are not claimable: lease the one by hand
    await sql.execute("UPDATE deliveries SET leased_until = ? WHERE id = ?", now + 60, inflight.id)
    query = DeliveryQuery(statuses=("dead",), oldest=(("meta", int(now - 7 * 86400)),))
    left = await outbox.replay_leftovers(query, now)
    assert left == {"candidate": 3, "in_flight": 1, "later_copy": 1, "too_old": 1}
    assert await outbox.requeue(query, now) == 2
    queued = await outbox.deliveries(DeliveryQuery(statuses=("queued",)))
    assert sorted(r.event_id for r in queued) == ["fresh", "twice"]
