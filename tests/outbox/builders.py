"""Rows for the outbox tests: events as the pipeline hands them over, attempt outcomes as the
delivery worker writes them back."""

from __future__ import annotations

import time

from gateway.outbox import Claimed, DeliveryQuery, Finished, NewDelivery, NewEvent, Status, Storage


def event(
    event_id: str,
    status: Status = Status.QUEUED,
    at: float | None = None,
    destination: str = "meta",
    name: str = "page_view",
) -> NewEvent:
    """One event with one delivery; a queued one carries the payload `{}`."""
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


def outcome(claimed: Claimed, status: Status, at: float) -> Finished:
    """An attempt at `claimed` that ended in `status` at `at`; a sent one erases its payload."""
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


async def deliver_as(outbox: Storage, status: Status) -> list[Claimed]:
    """Claim every due `meta` delivery and finish each in `status`, now."""
    claimed = await outbox.claim("meta", 10, lease_s=60)
    await outbox.finish([outcome(c, status, time.time()) for c in claimed])
    return claimed


async def past_retention(outbox: Storage) -> None:
    """Rows 40 days old (one dropped, one still queued, one sent) and a dropped one of now:
    retention at 30 days takes the old dropped and sent ones."""
    old = time.time() - 40 * 86400
    await outbox.add(
        [
            event("old-dropped", Status.DROPPED_RULE, old),
            event("old-queued", at=old),
            event("old-sent", at=old),
        ]
    )
    [sent] = await outbox.deliveries(DeliveryQuery(event_id="old-sent"))
    await outbox.finish([Finished(sent.id, Status.SENT, 1, old, 200, "ok", 1.0, old, True)])
    await outbox.add([event("new-dropped", Status.DROPPED_RULE)])
