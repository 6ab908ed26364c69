"""The trace of one hit that names a preview session, filled in at each stage.

The pipeline adds the canonical events, the consent decision and each destination's fate
(`prepared`, then `row_stored` once the store has said which rows are duplicates); the app adds
the request and the source's outcome and publishes it (`finish`); the delivery worker's
attempts arrive through `traces.Preview.attempt`. Bounded: `EVENTS_PER_TRACE` events of a
batch, the last `ATTEMPTS_KEPT` attempts of a delivery.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, ParamSpec

import orjson
import structlog
from aiohttp import web

from gateway.destinations import IDENTIFIERS
from gateway.event import JSON, Event
from gateway.outbox import Added, NewEvent, Status
from gateway.pipeline import NOT_IN_EVENTS
from gateway.preview.mask import Masker, personal_values
from gateway.preview.session import Session
from gateway.preview.shown import canonical, request_body
from gateway.settings import DestinationSettings

log = structlog.get_logger("gateway.preview")
_P = ParamSpec("_P")


def never_raises(method: Callable[_P, None]) -> Callable[_P, None]:
    """A stage's hook: a fault in tracing is logged and never reaches the hit or the worker."""

    @functools.wraps(method)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            method(*args, **kwargs)
        except Exception as exc:
            log.error("preview.trace_failed", stage=method.__name__, error=type(exc).__name__)

    return run


EVENTS_PER_TRACE: Final = 25
ATTEMPTS_KEPT: Final = 10

# Consent-manager cookies worth showing beside a hit (the configured TCF cookie is added).
CONSENT_COOKIES: Final = (
    "euconsent-v2",
    "CookieConsent",
    "OptanonConsent",
    "OptanonAlertBoxClosed",
    "cookieyes-consent",
    "cmplz_marketing",
    "_iub_cs",
)
# First-party identifiers a hit's events are matched by: shown so a missing one stands out.
# Every cookie a vendor's destination declares (`_fbp`, `_ga`, `_epik`).
ID_COOKIES: Final = tuple(i.cookie for i in IDENTIFIERS.values() if i.cookie)
HEADERS: Final = ("User-Agent", "Referer", "Origin", "Sec-GPC", "Content-Type")


@dataclass(slots=True)
class DestinationTrace:
    """One destination's fate for one event, and its attempts."""

    status: str
    reason: str | None = None
    payload: JSON = None
    duplicate_of: int | None = None
    attempts: deque[dict[str, JSON]] = field(default_factory=lambda: deque(maxlen=ATTEMPTS_KEPT))

    def view(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {
            "status": self.status,
            "reason": self.reason,
            "payload": self.payload,
            "attempts": list(self.attempts),
        }
        if self.duplicate_of is not None:
            out["duplicate_of"] = self.duplicate_of
        return out


@dataclass(slots=True)
class EventTrace:
    """One canonical event of a hit: the event as the trace may show it, consent, fates."""

    event_id: str
    event_name: str
    event: dict[str, JSON]
    consent: dict[str, JSON]
    destinations: dict[str, DestinationTrace]

    def view(self) -> dict[str, JSON]:
        return {
            "event_id": self.event_id,
            "event_name": self.event_name,
            "event": self.event,
            "consent": self.consent,
            "destinations": {n: d.view() for n, d in self.destinations.items()},
        }


@dataclass(slots=True)
class Tracing:
    """What the traces of one gateway share: the masker, the destinations' settings, the
    cookies worth showing, and which delivery rows belong to a traced hit."""

    masker: Masker
    destinations: Mapping[str, DestinationSettings]
    consent_cookies: tuple[str, ...]
    rows: dict[int, tuple[HitTrace, DestinationTrace]] = field(default_factory=dict)
    """Written rows of traced hits, by delivery id: where their attempts go."""
    pending: dict[int, tuple[NewEvent, HitTrace, EventTrace]] = field(default_factory=dict)
    """Rows prepared for a traced hit and not yet written, by id(); the row is kept so that
    its id cannot be reused while it waits (a write held through an outage)."""

    def watch(self, delivery_id: int, hit: HitTrace, dest: DestinationTrace) -> None:
        """Send this row's attempts to the hit's trace."""
        self.rows[delivery_id] = (hit, dest)

    def forget(self, trace: HitTrace) -> None:
        """The trace is no longer shown: its rows are not followed any more."""
        for delivery_id in trace.watched:
            self.rows.pop(delivery_id, None)
        for row_id in trace.pending:
            found = self.pending.get(row_id)
            if found is not None and found[1] is trace:
                del self.pending[row_id]


class HitTrace:
    """What became of one traced hit. Filled in by the stages; shown by `view`."""

    __slots__ = (
        "events",
        "events_total",
        "id",
        "masker",
        "outcome",
        "pending",
        "published",
        "reason",
        "received_at",
        "request",
        "seq",
        "session",
        "source",
        "tracing",
        "watched",
    )

    def __init__(self, tracing: Tracing, session: Session[HitTrace], received_at: float) -> None:
        self.tracing = tracing
        self.session = session
        self.received_at = received_at
        self.id = 0
        self.seq = 0
        self.published = False
        self.masker = tracing.masker
        self.request: dict[str, JSON] = {}
        self.source = ""
        self.outcome = ""
        self.reason: str | None = None
        self.events: list[EventTrace] = []
        self.events_total = 0
        self.watched: list[int] = []
        self.pending: list[int] = []

    # --- the pipeline's stage ------------------------------------------------------------------

    @never_raises
    def learned(self, events: Sequence[Event]) -> None:
        """The personal values a source found in the hit, masked wherever the trace shows
        them; called right after parsing, so an ignored hit's trace masks them too."""
        self.masker = self.masker.with_personal(personal_values(events))

    @never_raises
    def prepared(
        self, events: Sequence[Event], rows: Sequence[NewEvent], send_to: Sequence[str]
    ) -> None:
        """The events and what the pipeline made of each, before they are written (the
        store's word on them comes through `Preview.stored`)."""
        self.learned(events)
        self.events_total += len(events)
        room = EVENTS_PER_TRACE - len(self.events)
        for event, row in list(zip(events, rows, strict=False))[: max(room, 0)]:
            traced = self._event(event, row, send_to)
            self.events.append(traced)
            self.pending.append(id(row))
            self.tracing.pending[id(row)] = (row, self, traced)
        self.changed()

    @never_raises
    def lost(self) -> None:
        """The outage buffer was full: nothing of this hit was stored or will be sent."""
        for traced in self.events:
            for dest in traced.destinations.values():
                if dest.status in ("queued", "limited"):
                    dest.status, dest.reason = "dropped", "outage buffer full: not stored"
        self.tracing.forget(self)
        self.changed()

    def row_stored(self, traced: EventTrace, result: Added) -> None:
        """The store's word on one row: duplicates found, ids of the rows to watch."""
        for (name, status), (delivery_id, duplicate_of) in zip(
            result.statuses, result.deliveries, strict=False
        ):
            dest = traced.destinations.get(name)
            if dest is None:
                continue
            if status == Status.DUPLICATE:
                dest.status, dest.payload = "duplicate", None
                dest.duplicate_of = duplicate_of
                dest.reason = f"duplicate of delivery {duplicate_of}"
            elif status == Status.QUEUED:
                self.watched.append(delivery_id)
                self.tracing.watch(delivery_id, self, dest)

    def _event(self, event: Event, row: NewEvent, send_to: Sequence[str]) -> EventTrace:
        consent: dict[str, JSON] = {}
        if row.consent:
            for purpose, (state, signal) in orjson.loads(row.consent).items():
                consent[purpose] = {"state": state, "signal": signal or None}
        by_name = {d.destination: d for d in row.deliveries}
        destinations: dict[str, DestinationTrace] = {}
        for name in send_to:
            d = by_name.get(name)
            if d is None or d.message == NOT_IN_EVENTS:  # its row says why; the trace, skipped
                destinations[name] = DestinationTrace("skipped", self._skipped(name, row))
                continue
            status, reason = str(d.status), d.message
            if d.status is Status.QUEUED and reason and reason.startswith("limited"):
                status = "limited"
            payload = None
            if d.payload is not None:
                payload = self.masker.stored(orjson.loads(d.payload))
            destinations[name] = DestinationTrace(status, reason, payload)
        return EventTrace(
            event_id=event.event_id,
            event_name=row.event_name,
            event=canonical(event, self.masker),
            consent=consent,
            destinations=destinations,
        )

    def _skipped(self, name: str, row: NewEvent) -> str:
        wanted = self.tracing.destinations[name].events
        if wanted is not None and row.event_name not in wanted:
            return f"not in events: [{', '.join(wanted)}]"
        return "this destination does not take this kind of hit"

    # --- the app's stage -----------------------------------------------------------------------

    @never_raises
    def finish(
        self,
        request: web.Request,
        body: bytes | None,
        source: str,
        outcome: str,
        reason: str | None,
    ) -> None:
        """The request and the source's outcome; the trace is shown from now on."""
        masker = self.masker
        headers: dict[str, JSON] = {}
        for name in HEADERS:
            value = request.headers.get(name)
            if value is not None:
                headers[name] = masker.url(value) if name == "Referer" else masker.scrub(value)
        cookies: dict[str, JSON] = {}
        for name in (*self.tracing.consent_cookies, *ID_COOKIES):
            value = request.cookies.get(name)
            if value is not None:
                cookies[name] = masker.scrub(value[:400])
        self.request = {
            "method": request.method,
            "path": request.path,
            "query": masker.pairs(request.query.items()),
            "headers": headers,
            "cookies": cookies,
            **request_body(masker, body, request.content_type),
        }
        self.source, self.outcome, self.reason = source, outcome, reason
        self.published = True
        for pushed_out in self.session.publish(self):
            self.tracing.forget(pushed_out)

    async def answered(
        self, request: web.Request, response: web.StreamResponse, source: str
    ) -> None:
        """The server API's answer: its status is the outcome, its error or counts the reason."""
        try:
            body = await request.read()
        except Exception:  # too large, or gone: the trace goes without the body
            body = None
        self._answered(request, body, response, source)

    @never_raises
    def _answered(
        self, request: web.Request, body: bytes | None, response: web.StreamResponse, source: str
    ) -> None:
        reason = None
        text = response.body if isinstance(response, web.Response) else None
        if isinstance(text, bytes):
            try:
                answer = orjson.loads(text)
            except orjson.JSONDecodeError:
                answer = {}
            if isinstance(answer, dict) and "error" in answer:
                reason = str(answer["error"])
            elif isinstance(answer, dict):
                rejected = answer.get("rejected") or []
                reason = (
                    f"{answer.get('accepted', 0)} accepted, {answer.get('duplicates', 0)}"
                    f" duplicates, {len(rejected)} rejected"
                )
                if rejected:
                    reason += ": " + "; ".join(
                        f"[{r.get('index')}] {r.get('error')}" for r in rejected[:10]
                    )
        outcome = _API_OUTCOMES.get(response.status, str(response.status))
        self.finish(request, body, source, outcome, reason and self.masker.scrub(reason))

    def changed(self) -> None:
        """Something was added: a shown trace goes out again with a new seq."""
        if self.published and self.session.live:
            self.session.bump(self)

    def view(self) -> dict[str, JSON]:
        """The trace as the API gives it."""
        return {
            "id": self.id,
            "seq": self.seq,
            "received_at": round(self.received_at, 3),
            "request": self.request,
            "source": self.source,
            "outcome": self.outcome,
            "reason": self.reason,
            "events": [e.view() for e in self.events],
            "events_not_traced": max(0, self.events_total - len(self.events)),
        }


_API_OUTCOMES: Final = {
    202: "ok",
    400: "malformed",
    401: "unauthorized",
    413: "too_large",
    503: "store_error",
}
