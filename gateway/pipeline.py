"""From canonical events to stored rows: consent, rules, routing, per-destination payloads.

This is where personal data is turned into hashes, in memory, before anything is written. An
event a destination may not have (consent, a rule) gets a delivery row that says so and holds
no payload.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Protocol

import orjson
import structlog

from gateway import attribution
from gateway.config import ConsentSettings
from gateway.destinations.base import Destination, Rejected
from gateway.event import PURPOSES, Consent, Event, evolve
from gateway.metrics import Metrics
from gateway.outbox import Added, NewDelivery, NewEvent, Status, Storage
from gateway.personal_data.scrub import scrub_event
from gateway.rules import consent as consent_rules
from gateway.rules.field_rules import Dropped, Rule, apply_rules, split_shared

log = structlog.get_logger("gateway.pipeline")


class Traced(Protocol):
    """A traced hit, told what its events became (`gateway.preview.HitTrace`; the preview
    imports the pipeline, so the pipeline names only what it calls)."""

    def prepared(
        self, events: Sequence[Event], rows: Sequence[NewEvent], send_to: Sequence[str]
    ) -> None:
        """The events and their rows, before they are written."""


NOT_IN_EVENTS: Final = "not in events:"
"""The reason on the row of an event a destination's `events:` leaves out."""

# Match keys counted by the report (docs/operations.md §5), one bit each.
MATCH_KEYS: Final = ("email", "phone", "external_id", "fbp", "fbc", "ip_ua")


def match_keys(event: Event) -> int:
    """A bitmask of the match keys this event carries (order of MATCH_KEYS)."""
    u = event.user
    present = (
        u.email,
        u.phone,
        u.external_id,
        u.ids.get("fbp"),
        u.ids.get("fbc"),
        u.client_ip and u.user_agent,
    )
    return sum(1 << i for i, value in enumerate(present) if value)


def _consent_record(c: Consent) -> str:
    return orjson.dumps(
        {p: [str(c.get(p) or "unset"), c.basis.get(p, "")] for p in PURPOSES}
    ).decode()


class Pipeline:
    """Decides, per event and destination, what (if anything) is stored for delivery."""

    def __init__(
        self,
        store: Storage,
        destinations: Mapping[str, Destination],
        consent: ConsentSettings | None = None,
        rules: Sequence[Rule] = (),
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self.destinations = destinations
        self.consent = consent or ConsentSettings()
        self.shared_rules, self.scoped_rules = split_shared(rules)
        self._resolved: dict[tuple[object, ...], tuple[Consent, str]] = {}
        self.on_stored: Callable[[Sequence[NewEvent], Sequence[Added]], None] | None = None
        """Told which rows each commit wrote, and as what (the preview follows its hits)."""

    def resolve_consent(self, event: Event) -> Event:
        """The four purposes from every signal the event carries (docs/consent.md §7)."""
        return self._resolve(event)[0]

    def _resolve(self, event: Event) -> tuple[Event, str]:
        """The event with its consent resolved, and the consent record the log keeps."""
        explicit = tuple(
            (p, str(state))
            for p in PURPOSES
            if (state := event.consent.get(p)) is not None
            and event.consent.basis.get(p) == "server"
        )
        key = (explicit, tuple(sorted(event.consent_signals.items())))
        memo = self._resolved.get(key)
        if memo is None:
            # Most hits carry one of a few signal sets: decide each set once, and render its
            # log record once.
            resolved = consent_rules.resolve(
                dict(explicit) or None,
                event.consent_signals,
                default=self.consent.default,
                honor_gpc=self.consent.honor_gpc,
                use_tcf=self.consent.tcf,
            )
            if len(self._resolved) >= 4096:
                self._resolved.clear()
            memo = self._resolved[key] = (resolved, _consent_record(resolved))
        return evolve(event, consent=memo[0]), memo[1]

    def rows(self, event: Event, send_to: Sequence[str]) -> NewEvent:
        """The event row and one delivery row per destination that wants it."""
        event = _without_personal_data(event)
        event, consent_record = self._resolve(event)
        shared = apply_rules(event, self.shared_rules, None)
        named = event if isinstance(shared, Dropped) else shared
        deliveries = []
        # A touch only for an event some destination's rules kept: a bot's hit the rules drop
        # everywhere must not become a visit in the attribution report.
        rules_ran = kept = False
        for name in send_to:
            dest = self.destinations[name]
            if not _routed(dest, event):
                continue
            wanted = dest.settings.events
            if wanted is not None and named.event_name not in wanted:
                # A row even so: "why was this not sent" always has an answer in deliveries.
                deliveries.append(_dropped(dest, named, Status.DROPPED_RULE, NOT_IN_EVENTS))
                continue
            if isinstance(shared, Dropped):
                deliveries.append(_dropped(dest, named, Status.DROPPED_RULE, shared.reason))
                continue
            scoped = apply_rules(shared, self.scoped_rules, name)
            rules_ran = True
            if isinstance(scoped, Dropped):
                deliveries.append(_dropped(dest, named, Status.DROPPED_RULE, scoped.reason))
                continue
            kept = True
            if not dest.accepts(scoped):
                continue
            deliveries.append(self._delivery(dest, scoped))
        custom = event.custom
        return NewEvent(
            event_id=event.event_id,
            event_name=named.event_name,
            source=event.source,
            event_time=event.event_time,
            received_at=event.received_at,
            dedupable=event.dedupable,
            match_keys=match_keys(event),
            deliveries=deliveries,
            value=str(custom.value) if custom.value is not None else None,
            currency=custom.currency,
            consent=consent_record,
            touches=()
            if isinstance(shared, Dropped) or (rules_ran and not kept)
            else attribution.touches(event, self.store.visitor_secret),
        )

    def unknown_id(self, event: Event, send_to: Sequence[str]) -> str | None:
        """The pixel or stream ID of a tag's hit that none of that platform's destinations in
        `send_to` serves (a pixel nobody configured), else None."""
        unknown = None
        for name in send_to:
            dest = self.destinations[name]
            hit_id = dest.hit_id(event)
            if hit_id is not None:
                if hit_id == dest.own_id:
                    return None
                unknown = hit_id
        return unknown

    def routed(self, event: Event, send_to: Sequence[str]) -> bool:
        """Whether any destination in `send_to` takes this event by its pixel or stream ID
        (before `events:`, rules and consent, which each leave a row saying why)."""
        return any(_routed(self.destinations[name], event) for name in send_to)

    def _delivery(self, dest: Destination, event: Event) -> NewDelivery:
        denied = [p for p in dest.requires_for(event) if not event.consent.granted(p)]
        note = None
        if denied:
            why = ", ".join(
                f"{p} {event.consent.get(p) or 'unset'} ({event.consent.basis.get(p, '-')})"
                for p in denied
            )
            if dest.settings.on_denied == "drop" or not dest.can_limit:
                return _dropped(dest, event, Status.DROPPED_CONSENT, f"consent: {why}")
            event = evolve(consent_rules.limited(event), limited=True)
            note = f"limited by consent: {why}"
        prepared = dest.prepare(event)
        if isinstance(prepared, Rejected):
            status = Status.DROPPED_RULE if prepared.skipped else Status.DEAD
            return NewDelivery(
                dest.name, status, message=prepared.reason, event_name=event.event_name
            )
        return NewDelivery(
            dest.name,
            Status.QUEUED,
            orjson.dumps(prepared),
            message=note,
            event_name=event.event_name,
        )

    async def ingest(
        self, events: Sequence[Event], send_to: Sequence[str], trace: Traced | None = None
    ) -> list[Added]:
        """Prepare and durably store events; returns after COMMIT."""
        rows = self.prepare(events, send_to)
        if trace is not None:
            trace.prepared(events, rows, send_to)
        return await self.commit(rows)

    def prepare(self, events: Sequence[Event], send_to: Sequence[str]) -> list[NewEvent]:
        """The rows of these events, personal data hashed: what `commit` writes."""
        return [self.rows(e, send_to) for e in events]

    async def commit(self, rows: Sequence[NewEvent]) -> list[Added]:
        """Store prepared rows durably; returns after COMMIT."""
        added = await self.store.add(rows)
        self._stored(rows, added)
        return added

    def commit_soon(self, rows: Sequence[NewEvent]) -> asyncio.Future[list[Added]]:
        """`commit` as a future settled after COMMIT, the rows counted as it settles: the
        browser hit's path, with no task of its own."""
        written = self.store.add_soon(rows)
        written.add_done_callback(functools.partial(self._settled, rows))
        return written

    def _settled(self, rows: Sequence[NewEvent], written: asyncio.Future[list[Added]]) -> None:
        if not written.cancelled() and written.exception() is None:
            self._stored(rows, written.result())

    def _stored(self, rows: Sequence[NewEvent], added: Sequence[Added]) -> None:
        if self.on_stored is not None:  # preview: which rows a traced hit became
            self.on_stored(rows, added)
        for result in added:
            for destination, status in result.statuses:
                self.metrics.count_delivery(destination, status)


def _without_personal_data(event: Event) -> Event:
    """The event through the personal-data gate (`personal_data.scrub`): what has no hashing
    rule and holds a person is dropped before anything is stored, and logged by name only."""
    scrubbed = scrub_event(event)
    if scrubbed.fields:
        log.warning(
            "event.personal_data_dropped",
            source=event.source,
            event_id=event.event_id,
            fields=list(scrubbed.fields),
            note="send personal data in `user`, where it is hashed",
        )
    return scrubbed.event


def _routed(dest: Destination, event: Event) -> bool:
    # A tag's hit goes to the destination of its own pixel (or stream) only, as Meta's gateway
    # does with several pixels; other destinations take every event routed to them.
    hit_id = dest.hit_id(event)
    return hit_id is None or hit_id == dest.own_id


def _dropped(dest: Destination, event: Event, status: Status, reason: str) -> NewDelivery:
    return NewDelivery(dest.name, status, message=reason, event_name=event.event_name)
