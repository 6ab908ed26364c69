"""From canonical events to stored rows: routing, rules, per-destination payloads.

This is where personal data is turned into hashes, in memory, before anything is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from gateway.destinations.base import Destination, Rejected
from gateway.event import Event
from gateway.store import Added, NewDelivery, NewEvent, Status, Store

# Match keys counted by the report (contract §8), one bit each.
MATCH_KEYS = ("email", "phone", "external_id", "fbp", "fbc", "ip_ua")


def match_keys(event: Event) -> int:
    """A bitmask of the match keys this event carries (order of MATCH_KEYS)."""
    u = event.user
    present = (
        u.email,
        u.phone,
        u.external_id,
        u.fbp,
        u.fbc,
        u.client_ip and u.user_agent,
    )
    return sum(1 << i for i, value in enumerate(present) if value)


@dataclass(frozen=True, slots=True)
class Routed:
    """One event with the destinations it goes to."""

    event: Event
    targets: Sequence[Destination]


class Pipeline:
    """Routes events from a source to its destinations and stores them."""

    def __init__(self, store: Store, destinations: Mapping[str, Destination]) -> None:
        self.store = store
        self.destinations = destinations

    def targets(self, send_to: Sequence[str], event: Event) -> list[Destination]:
        """The destinations that want this event (`send_to` and each one's `events:`)."""
        out = []
        for name in send_to:
            dest = self.destinations[name]
            wanted = dest.settings.events
            if wanted is not None and event.event_name not in wanted:
                continue
            if dest.accepts(event):
                out.append(dest)
        return out

    def rows(self, event: Event, targets: Sequence[Destination]) -> NewEvent:
        """The event row and one delivery row per destination, payloads prepared."""
        deliveries = []
        for dest in targets:
            prepared = dest.prepare(event)
            if isinstance(prepared, Rejected):
                deliveries.append(NewDelivery(dest.name, Status.DEAD, message=prepared.reason))
            else:
                deliveries.append(NewDelivery(dest.name, Status.QUEUED, orjson.dumps(prepared)))
        custom = event.custom
        return NewEvent(
            event_id=event.event_id,
            event_name=event.event_name,
            source=event.source,
            event_time=event.event_time,
            received_at=event.received_at,
            dedupable=event.dedupable,
            match_keys=match_keys(event),
            deliveries=deliveries,
            value=str(custom.value) if custom.value is not None else None,
            currency=custom.currency,
        )

    async def ingest(self, events: Sequence[Event], send_to: Sequence[str]) -> list[Added]:
        """Prepare and durably store events; returns after COMMIT."""
        rows = [self.rows(e, self.targets(send_to, e)) for e in events]
        return await self.store.add(rows)

    async def ingest_shielded(
        self, events: Sequence[Event], send_to: Sequence[str], timeout_s: float
    ) -> list[Added] | None:
        """As `ingest`, but give up waiting after `timeout_s` (the write itself goes on)."""
        task = asyncio.ensure_future(self.ingest(events, send_to))
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            return None
