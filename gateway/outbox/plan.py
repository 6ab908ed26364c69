"""Row planning, written once: a group's events become event rows, delivery rows and touch rows,
and each queued delivery either holds its dedup key or is written as a duplicate of the holder.

The dedup rule: a delivery to queue is a duplicate when another delivery of the same key
(destination, event name as the destination knows it, event id) holds it: one that is live
(`Status.blocks_dedup`) and arrived, or was last sent, attempted or replayed, within
`DEDUP_WINDOW_S` (the platform counts from when it got the event), or an earlier copy in the same
group. Finding a live holder is the backend's (`Holders`); everything else is here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.outbox.records import Added, NewDelivery, NewEvent, NewTouch, Status

Key = tuple[str, str, str]
"""(destination, event name, event id): what dedup compares."""

EventRow = tuple[int, str, str, str, int, float, bool, int, str | None, str | None, str | None]
"""id, event_id, event_name, source, event_time, received_at, dedupable, match_keys, value,
currency, consent: the columns of `events`, in that order."""
DeliveryRow = tuple[int, int, str, str, str, str, int, float, str | None, int | None, bytes | None]
"""id, event_row, event_id, event_name, destination, status, event_time, received_at, message,
duplicate_of, payload. `received_at` is also the row's first next_attempt_at, created_at and
updated_at: the INSERT writes it to all three."""
TouchRow = tuple[int, str, str, float, str, str | None, str | None]
"""event_row, event_id, event_name, received_at, visitor, channel, campaign."""


@dataclass(slots=True)
class Planned:
    """A group with its ids assigned: each delivery's id and dedup key (None unless queued)."""

    events: Sequence[NewEvent]
    event_ids: Sequence[int]
    deliveries: list[list[tuple[NewDelivery, int, Key | None]]] = field(default_factory=list)
    firsts: dict[Key, tuple[int, float]] = field(default_factory=dict)
    """Each key's first delivery in this group, and its event's received_at."""


@dataclass(slots=True)
class Rows:
    """What to insert for a group, and what to tell each caller."""

    events: list[EventRow] = field(default_factory=list)
    deliveries: list[DeliveryRow] = field(default_factory=list)
    touches: list[TouchRow] = field(default_factory=list)
    added: list[Added] = field(default_factory=list)


def dedup_keys(events: Iterable[NewEvent]) -> list[Key]:
    """The distinct keys of the deliveries to queue in `events`."""
    return list(
        {key(event, d) for event in events for d in event.deliveries if d.status is Status.QUEUED}
    )


def key(event: NewEvent, delivery: NewDelivery) -> Key:
    """A delivery's dedup key: the name it goes out under, not always the event's own."""
    return (delivery.destination, delivery.event_name or event.event_name, event.event_id)


def assign(
    events: Sequence[NewEvent], event_ids: Sequence[int], delivery_ids: Iterator[int]
) -> Planned:
    """Give each event and delivery its id, in order of arrival, and note each key's first."""
    planned = Planned(events, event_ids)
    for event in events:
        rows = []
        for d in event.deliveries:
            delivery_id = next(delivery_ids)
            k = None
            if d.status is Status.QUEUED:
                k = key(event, d)
                planned.firsts.setdefault(k, (delivery_id, event.received_at))
            rows.append((d, delivery_id, k))
        planned.deliveries.append(rows)
    return planned


def holders(planned: Planned, live: Mapping[Key, int]) -> dict[Key, int]:
    """Who holds each key after this group: the live holder found before it, else the
    group's first copy."""
    return {k: live.get(k, first) for k, (first, _) in planned.firsts.items()}


def rows(planned: Planned, holding: Mapping[Key, int]) -> Rows:
    """The rows to insert; a queued delivery that does not hold its key becomes a duplicate."""
    out = Rows()
    for event, row, deliveries in zip(
        planned.events, planned.event_ids, planned.deliveries, strict=True
    ):
        out.touches.extend(
            (row, event.event_id, event.event_name, event.received_at, *_touch(t))
            for t in event.touches
        )
        out.events.append(
            (
                row,
                event.event_id,
                event.event_name,
                event.source,
                event.event_time,
                event.received_at,
                event.dedupable,
                event.match_keys,
                event.value,
                event.currency,
                event.consent,
            )
        )
        queued = duplicates = 0
        statuses: list[tuple[str, str]] = []
        ids: list[tuple[int, int | None]] = []
        for d, delivery_id, k in deliveries:
            status, payload, message, duplicate_of = d.status, d.payload, d.message, None
            if k is not None:
                holder = holding[k]
                if holder == delivery_id:
                    queued += 1
                else:
                    status, payload, duplicate_of = Status.DUPLICATE, None, holder
                    message = f"duplicate of delivery {holder}"
                    duplicates += 1
            statuses.append((d.destination, str(status)))
            ids.append((delivery_id, duplicate_of))
            out.deliveries.append(
                (
                    delivery_id,
                    row,
                    event.event_id,
                    d.event_name or event.event_name,
                    d.destination,
                    str(status),
                    event.event_time,
                    event.received_at,
                    message,
                    duplicate_of,
                    payload,
                )
            )
        out.added.append(Added(row, queued, duplicates, tuple(statuses), tuple(ids)))
    return out


def _touch(t: NewTouch) -> tuple[str, str | None, str | None]:
    return t.visitor, t.channel, t.campaign


def columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows to columns (for PostgreSQL's unnest(), which turns arrays back into rows)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]
