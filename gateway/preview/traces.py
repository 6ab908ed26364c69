"""Preview sessions, and the trace of each hit that carries one.

A hit is traced when it names a live session (cookie `tg_preview` or header
`X-Tag-Gateway-Preview`). Its trace is filled in at each stage: the pipeline adds the canonical
events, the consent decision and each destination's fate (`prepared`, then `stored` once the
store has said which rows are duplicates); the app adds the request and the source's outcome and
publishes it (`finish`); the delivery worker adds each attempt as it happens (`Preview.attempt`).
Every change gives the trace the session's next `seq`, so a long poll for `after=<seq>` sees new
hits and new attempts alike.

Everything lives in memory and is bounded: at most `MAX_SESSIONS` sessions, the last
`TRACES_PER_SESSION` traces of each, `EVENTS_PER_TRACE` events of a batch, the last
`ATTEMPTS_KEPT` attempts of a delivery, bodies cut at `BODY_BYTES`.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Final, ParamSpec

import orjson
import structlog
from aiohttp import web

from gateway.destinations import IDENTIFIERS
from gateway.event import CLEAR_USER_FIELDS, HASHED_USER_FIELDS, JSON, Event
from gateway.outbox import Added, NewEvent, Status
from gateway.personal_data import hashing
from gateway.pipeline import NOT_IN_EVENTS
from gateway.preview.mask import MASK, Masker, mask_plain, personal_values, secret_name
from gateway.rules.field_rules import RedactUrlParams
from gateway.sources.forms import form_pairs

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.destinations.base import Answer, OutRequest, Result
    from gateway.settings import DestinationSettings

log = structlog.get_logger("gateway.preview")
_P = ParamSpec("_P")


def _never_raises(method: Callable[_P, None]) -> Callable[_P, None]:
    """A stage's hook: a fault in tracing is logged and never reaches the hit or the worker."""

    @functools.wraps(method)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            method(*args, **kwargs)
        except Exception as exc:
            log.error("preview.trace_failed", stage=method.__name__, error=type(exc).__name__)

    return run


COOKIE: Final = "tg_preview"
HEADER: Final = "X-Tag-Gateway-Preview"
SESSION_S: Final = 3600
MAX_SESSIONS: Final = 8
TRACES_PER_SESSION: Final = 200
EVENTS_PER_TRACE: Final = 25
ATTEMPTS_KEPT: Final = 10
BODY_BYTES: Final = 16 * 1024
RESPONSE_BYTES: Final = 4096

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


class Session:
    """One preview session: its traces, newest last, and the sequence of their changes."""

    __slots__ = ("_changed", "expires_at", "id", "last_trace", "seq", "traces")

    def __init__(self, session_id: str, expires_at: float) -> None:
        self.id = session_id
        self.expires_at = expires_at
        self.traces: deque[HitTrace] = deque()
        self.seq = 0
        self.last_trace = 0
        self._changed = asyncio.Event()

    def bump(self, trace: HitTrace) -> None:
        """The trace changed: give it the next seq and wake the long polls."""
        self.seq += 1
        trace.seq = self.seq
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def since(self, after: int) -> list[HitTrace]:
        """Traces changed after `after`, in the order of their changes."""
        return sorted((t for t in self.traces if t.seq > after), key=lambda t: t.seq)

    async def wait(self, after: int, timeout_s: float) -> list[HitTrace]:
        """`since(after)`, waiting up to `timeout_s` while it is empty."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.since(after)
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return []


class Preview:
    """The sessions, and which delivery rows belong to a traced hit."""

    def __init__(self, config: Config) -> None:
        self.sessions: dict[str, Session] = {}
        self._rows: dict[int, tuple[HitTrace, DestinationTrace]] = {}
        # Rows prepared for a traced hit and not yet written, by id(); the row is kept so
        # that its id cannot be reused while it waits (a write held through an outage).
        self._pending: dict[int, tuple[NewEvent, HitTrace, EventTrace]] = {}
        redacted = {
            name
            for rule in config.rules
            if isinstance(rule.action, RedactUrlParams)
            for name in rule.action.names
        }
        self.masker = Masker(config.secrets, redacted)
        self.destinations: Mapping[str, DestinationSettings] = config.destinations
        tcf = config.consent.tcf_cookie
        self.consent_cookies = (tcf, *CONSENT_COOKIES) if tcf else CONSENT_COOKIES

    def start(self, now: float | None = None) -> Session:
        """A new session; the one closest to expiring goes when there are too many."""
        at = time.time() if now is None else now
        self._expire(at)
        while len(self.sessions) >= MAX_SESSIONS:
            self._drop(min(self.sessions.values(), key=lambda s: s.expires_at))
        # 192 bits from the OS's generator: unguessable, and safe in a URL and a cookie.
        session = Session(secrets.token_urlsafe(24), at + SESSION_S)
        self.sessions[session.id] = session
        return session

    def get(self, session_id: str, now: float | None = None) -> Session | None:
        """The live session of that id, or None (an expired one is forgotten)."""
        session = self.sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at <= (time.time() if now is None else now):
            self._drop(session)
            return None
        return session

    def trace(self, request: web.Request) -> HitTrace | None:
        """A trace for this request when it names a live session, else None.

        Without a session (the common case) this costs one dict check; with sessions open, one
        header and one cookie lookup.
        """
        if not self.sessions:
            return None
        session_id = request.headers.get(HEADER) or request.cookies.get(COOKIE)
        if not session_id:
            return None
        session = self.get(session_id.strip())
        if session is None:
            return None
        return HitTrace(self, session, time.time())

    @_never_raises
    def attempt(
        self,
        destination: str,
        request: OutRequest,
        answer: Answer,
        result: Result,
        latency_ms: float,
    ) -> None:
        """A delivery request was answered: add it to the traces of the rows it carried."""
        if not self._rows:
            return
        record: dict[str, JSON] | None = None
        touched: list[HitTrace] = []
        for item in request.items:
            found = self._rows.get(item.delivery_id)
            if found is None:
                continue
            hit, dest = found
            record = record or self._attempt_record(hit, request, answer, result, latency_ms)
            dest.attempts.append(record)
            if hit not in touched:
                touched.append(hit)
        for hit in touched:
            hit.changed()

    @_never_raises
    def stored(self, rows: Sequence[NewEvent], added: Sequence[Added]) -> None:
        """A commit wrote these rows (the pipeline's `on_stored`): tell the traces of those
        that belong to a traced hit."""
        if not self._pending:
            return
        touched: list[HitTrace] = []
        for row, result in zip(rows, added, strict=False):
            found = self._pending.get(id(row))
            if found is None or found[0] is not row:
                continue
            del self._pending[id(row)]
            _, hit, traced = found
            hit._stored(traced, result)
            if hit not in touched:
                touched.append(hit)
        for hit in touched:
            hit.changed()

    def _attempt_record(
        self,
        hit: HitTrace,
        request: OutRequest,
        answer: Answer,
        result: Result,
        latency_ms: float,
    ) -> dict[str, JSON]:
        masker = hit.masker
        response = answer.body[:RESPONSE_BYTES].decode("utf-8", errors="replace")
        return {
            "at": round(time.time(), 3),
            "method": request.method,
            "url": masker.url(masker.scrub(request.url)),
            "request_body": _body_text(masker, request.body),
            "http_status": answer.status,
            "response_body": masker.scrub(response),
            "latency_ms": round(latency_ms, 1),
            "verdict": str(result.verdict),
            "message": masker.scrub(answer.error or result.message)[:1000],
        }

    def _publish(self, trace: HitTrace) -> None:
        session = trace.session
        if self.sessions.get(session.id) is not session:
            return  # the session ended while the hit was taken
        session.last_trace += 1
        trace.id = session.last_trace
        session.traces.append(trace)
        while len(session.traces) > TRACES_PER_SESSION:
            self._forget(session.traces.popleft())
        session.bump(trace)

    def _watch(self, delivery_id: int, hit: HitTrace, dest: DestinationTrace) -> None:
        self._rows[delivery_id] = (hit, dest)

    def _forget(self, trace: HitTrace) -> None:
        for delivery_id in trace.watched:
            self._rows.pop(delivery_id, None)
        for row_id in trace.pending:
            found = self._pending.get(row_id)
            if found is not None and found[1] is trace:
                del self._pending[row_id]

    def _drop(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        for trace in session.traces:
            self._forget(trace)
        session.traces.clear()

    def _expire(self, now: float) -> None:
        for session in [s for s in self.sessions.values() if s.expires_at <= now]:
            self._drop(session)


class HitTrace:
    """What became of one traced hit. Filled in by the stages; shown by `view`."""

    __slots__ = (
        "events",
        "events_total",
        "id",
        "masker",
        "outcome",
        "pending",
        "preview",
        "published",
        "reason",
        "received_at",
        "request",
        "seq",
        "session",
        "source",
        "watched",
    )

    def __init__(self, preview: Preview, session: Session, received_at: float) -> None:
        self.preview = preview
        self.session = session
        self.received_at = received_at
        self.id = 0
        self.seq = 0
        self.published = False
        self.masker = preview.masker
        self.request: dict[str, JSON] = {}
        self.source = ""
        self.outcome = ""
        self.reason: str | None = None
        self.events: list[EventTrace] = []
        self.events_total = 0
        self.watched: list[int] = []
        self.pending: list[int] = []

    # --- the pipeline's stage ------------------------------------------------------------------

    @_never_raises
    def learned(self, events: Sequence[Event]) -> None:
        """The personal values a source found in the hit, masked wherever the trace shows
        them; called right after parsing, so an ignored hit's trace masks them too."""
        self.masker = self.masker.with_personal(personal_values(events))

    @_never_raises
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
            self.preview._pending[id(row)] = (row, self, traced)
        self.changed()

    @_never_raises
    def lost(self) -> None:
        """The outage buffer was full: nothing of this hit was stored or will be sent."""
        for traced in self.events:
            for dest in traced.destinations.values():
                if dest.status in ("queued", "limited"):
                    dest.status, dest.reason = "dropped", "outage buffer full: not stored"
        self.preview._forget(self)
        self.changed()

    def _stored(self, traced: EventTrace, result: Added) -> None:
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
                self.preview._watch(delivery_id, self, dest)

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
            event=self._canonical(event),
            consent=consent,
            destinations=destinations,
        )

    def _skipped(self, name: str, row: NewEvent) -> str:
        wanted = self.preview.destinations[name].events
        if wanted is not None and row.event_name not in wanted:
            return f"not in events: [{', '.join(wanted)}]"
        return "this destination does not take this kind of hit"

    def _canonical(self, event: Event) -> dict[str, JSON]:
        """The canonical event with personal data masked (hashes shown as they are)."""
        masker = self.masker
        user: dict[str, JSON] = {}
        for name in HASHED_USER_FIELDS:
            value = getattr(event.user, name)
            if value:
                user[name] = hashing.already_hashed(value) or mask_plain(value)
        for name in CLEAR_USER_FIELDS:
            value = getattr(event.user, name)
            if value:
                user[name] = value
        user.update(event.user.ids)
        custom: dict[str, JSON] = {}
        for f in fields(event.custom):
            value = getattr(event.custom, f.name)
            if value in (None, (), {}):
                continue
            if f.name == "extra":
                custom.update(masker.json(dict(value)) or {})
            elif f.name == "contents":
                custom[f.name] = [
                    {k.name: _jsonable(getattr(c, k.name)) for k in fields(c) if getattr(c, k.name)}
                    for c in value
                ]
            elif isinstance(value, str):
                custom[f.name] = masker.value(f.name, value)
            else:
                custom[f.name] = _jsonable(value)
        return {
            "event_id": event.event_id,
            "event_name": event.event_name,
            "event_time": event.event_time,
            "source": event.source,
            "action_source": event.action_source,
            "event_source_url": event.event_source_url and masker.url(event.event_source_url),
            "referrer": event.referrer and masker.url(event.referrer),
            "user": user,
            "custom": custom,
            "consent_signals": masker.json(dict(event.consent_signals)),
            "dedupable": event.dedupable,
            "extras": masker.json({name: _plain(x) for name, x in _extras(event) if x is not None}),
        }

    # --- the app's stage -----------------------------------------------------------------------

    @_never_raises
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
        for name in (*self.preview.consent_cookies, *ID_COOKIES):
            value = request.cookies.get(name)
            if value is not None:
                cookies[name] = masker.scrub(value[:400])
        self.request = {
            "method": request.method,
            "path": request.path,
            "query": masker.pairs(request.query.items()),
            "headers": headers,
            "cookies": cookies,
            **_request_body(masker, body, request.content_type),
        }
        self.source, self.outcome, self.reason = source, outcome, reason
        self.published = True
        self.preview._publish(self)

    async def answered(
        self, request: web.Request, response: web.StreamResponse, source: str
    ) -> None:
        """The server API's answer: its status is the outcome, its error or counts the reason."""
        try:
            body = await request.read()
        except Exception:  # too large, or gone: the trace goes without the body
            body = None
        self._answered(request, body, response, source)

    @_never_raises
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
        if self.published and self.preview.sessions.get(self.session.id) is self.session:
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


def _extras(event: Event) -> list[tuple[str, object]]:
    return [("meta", event.meta), ("ga4", event.ga4), ("tiktok", event.tiktok)]


def _plain(value: object) -> JSON:
    """A typed value as JSON values: dataclasses as objects, mappings and tuples opened."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return _jsonable(value)


def _jsonable(value: object) -> JSON:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def _request_body(masker: Masker, body: bytes | None, content_type: str) -> dict[str, JSON]:
    """A hit's body, masked: JSON as JSON, a form as pairs, GA4's lines as lines."""
    if not body:
        return {}
    size = len(body)
    if size > 4 * BODY_BYTES:
        return {"body_note": f"{size} bytes, not kept"}
    ctype = content_type.lower()
    if "json" in ctype or body[:1] in (b"{", b"["):
        try:
            return {"body_json": masker.json(orjson.loads(body))}
        except orjson.JSONDecodeError:
            pass
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        return {"body_form": masker.pairs(form_pairs(body, content_type))}
    text = body.decode("utf-8", errors="replace")
    lines = [masker.query_string(line) if "=" in line else MASK for line in text.splitlines()]
    return {"body_text": "\n".join(lines)[:BODY_BYTES]}


def _body_text(masker: Masker, body: bytes | None) -> str | None:
    """An outgoing request's body as the trace shows it: secrets out, cut at BODY_BYTES."""
    if body is None:
        return None
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", errors="replace")
        lines = [masker.query_string(line) if "=" in line else line for line in text.split("\n")]
        text = masker.scrub("\n".join(lines))
    else:
        text = orjson.dumps(masker.stored(value)).decode()
    if len(text) > BODY_BYTES:
        return text[:BODY_BYTES] + f"… ({len(text)} characters in all)"
    return text


__all__ = ["COOKIE", "HEADER", "MASK", "HitTrace", "Preview", "Session", "secret_name"]
