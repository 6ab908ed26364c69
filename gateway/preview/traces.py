"""Preview sessions, and the trace of each hit that carries one.

A hit is traced when it names a live session (cookie `tg_preview` or header
`X-Tag-Gateway-Preview`); `hits.HitTrace` is filled in at each stage, and `Preview` routes
the store's word on each row and each delivery attempt to the trace it belongs to. Every change
gives the trace the session's next `seq`, so a long poll for `after=<seq>` sees new hits and
new attempts alike.

Everything lives in memory and is bounded: at most `MAX_SESSIONS` sessions, the last
`TRACES_PER_SESSION` traces of each (`session.py`), bodies cut at `shown.BODY_BYTES`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from aiohttp import web

from gateway.event import JSON
from gateway.outbox import Added, NewEvent
from gateway.preview.hits import CONSENT_COOKIES, HitTrace, Tracing, never_raises
from gateway.preview.mask import Masker
from gateway.preview.session import Session
from gateway.preview.shown import body_text
from gateway.rules.field_rules import RedactUrlParams

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.destinations.base import Answer, OutRequest, Result

COOKIE: Final = "tg_preview"
HEADER: Final = "X-Tag-Gateway-Preview"
SESSION_S: Final = 3600
MAX_SESSIONS: Final = 8
RESPONSE_BYTES: Final = 4096


class Preview:
    """The sessions, and which delivery rows belong to a traced hit."""

    def __init__(self, config: Config) -> None:
        self.sessions: dict[str, Session[HitTrace]] = {}
        redacted = {
            name
            for rule in config.rules
            if isinstance(rule.action, RedactUrlParams)
            for name in rule.action.names
        }
        tcf = config.consent.tcf_cookie
        self.tracing = Tracing(
            masker=Masker(config.secrets, redacted),
            destinations=config.destinations,
            consent_cookies=(tcf, *CONSENT_COOKIES) if tcf else CONSENT_COOKIES,
        )

    def start(self, now: float | None = None) -> Session[HitTrace]:
        """A new session; the one closest to expiring goes when there are too many."""
        at = time.time() if now is None else now
        self._expire(at)
        while len(self.sessions) >= MAX_SESSIONS:
            self._drop(min(self.sessions.values(), key=lambda s: s.expires_at))
        # 192 bits from the OS's generator: unguessable, and safe in a URL and a cookie.
        session: Session[HitTrace] = Session(secrets.token_urlsafe(24), at + SESSION_S)
        self.sessions[session.id] = session
        return session

    def get(self, session_id: str, now: float | None = None) -> Session[HitTrace] | None:
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
        return HitTrace(self.tracing, session, time.time())

    @never_raises
    def attempt(
        self,
        destination: str,
        request: OutRequest,
        answer: Answer,
        result: Result,
        latency_ms: float,
    ) -> None:
        """A delivery request was answered: add it to the traces of the rows it carried."""
        rows = self.tracing.rows
        if not rows:
            return
        record: dict[str, JSON] | None = None
        touched: list[HitTrace] = []
        for item in request.items:
            found = rows.get(item.delivery_id)
            if found is None:
                continue
            hit, dest = found
            record = record or self._attempt_record(hit, request, answer, result, latency_ms)
            dest.attempts.append(record)
            if hit not in touched:
                touched.append(hit)
        for hit in touched:
            hit.changed()

    @never_raises
    def stored(self, rows: Sequence[NewEvent], added: Sequence[Added]) -> None:
        """A commit wrote these rows (the pipeline's `on_stored`): tell the traces of those
        that belong to a traced hit."""
        pending = self.tracing.pending
        if not pending:
            return
        touched: list[HitTrace] = []
        for row, result in zip(rows, added, strict=False):
            found = pending.get(id(row))
            if found is None or found[0] is not row:
                continue
            del pending[id(row)]
            _, hit, traced = found
            hit.row_stored(traced, result)
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
            "request_body": body_text(masker, request.body),
            "http_status": answer.status,
            "response_body": masker.scrub(response),
            "latency_ms": round(latency_ms, 1),
            "verdict": str(result.verdict),
            "message": masker.scrub(answer.error or result.message)[:1000],
        }

    def _drop(self, session: Session[HitTrace]) -> None:
        self.sessions.pop(session.id, None)
        session.live = False
        for trace in session.traces:
            self.tracing.forget(trace)
        session.traces.clear()

    def _expire(self, now: float) -> None:
        for session in [s for s in self.sessions.values() if s.expires_at <= now]:
            self._drop(session)


__all__ = ["COOKIE", "HEADER", "HitTrace", "Preview", "Session"]
