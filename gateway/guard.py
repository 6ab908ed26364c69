"""Slow and greedy clients: a connection cap, and a deadline for a connection's first headers.

aiohttp times out none of this itself: 1,600 connections sending a byte every 10 s stayed open,
and at a 1,024-descriptor limit 1,100 half-sent requests made every hit and `/healthz` time out
(and asyncio logged `Too many open files` on every accept). Here each accepted connection is
counted; past `max_connections` the oldest connection that has not sent its first request's
headers is closed to make room (a slow-loris holds exactly those), else the new one is. A
connection whose first headers are not complete after `header_timeout_s` is closed. Later
requests on a kept-alive connection fall under aiohttp's keep-alive timeout, which closes a
connection still without a whole request when it runs out; bodies are timed by the handlers.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = structlog.get_logger("gateway.guard")

REPORT_EVERY_S: Final = 10.0
"""Connections shed for the cap are logged as one line at most this often, with a count."""


class ConnectionGuard:
    """Wraps aiohttp's protocol factory; one per listening site."""

    def __init__(self, server: web.Server, max_connections: int, header_timeout_s: float) -> None:
        self._server = server
        self._max = max_connections
        self._header_timeout_s = header_timeout_s
        self._open: set[_Guarded] = set()
        self._waiting: OrderedDict[_Guarded, None] = OrderedDict()
        """Connections without a first request yet, oldest first."""
        self._shed = 0
        self._timed_out = 0
        self._reported_at = float("-inf")

    @property
    def open(self) -> int:
        """Client connections open now."""
        return len(self._open)

    def factory(self) -> Callable[[], asyncio.Protocol]:
        """The protocol factory for `loop.create_server`."""
        return lambda: _Guarded(self, self._server())

    def _admit(self, conn: _Guarded) -> bool:
        if len(self._open) >= self._max:
            self._shed += 1
            if self._waiting:
                oldest = next(iter(self._waiting))
                self._gone(oldest)  # now, not when asyncio reports it lost
                oldest.abort()
            else:
                self._report()
                return False
            self._report()
        self._open.add(conn)
        self._waiting[conn] = None
        return True

    def _started(self, conn: _Guarded) -> None:
        self._waiting.pop(conn, None)

    def _expired(self, conn: _Guarded) -> None:
        self._timed_out += 1
        self._report()

    def _gone(self, conn: _Guarded) -> None:
        self._open.discard(conn)
        self._waiting.pop(conn, None)

    def _report(self) -> None:
        now = time.monotonic()
        if now - self._reported_at < REPORT_EVERY_S:
            return
        self._reported_at = now
        log.warning(
            "connections.shed",
            over_cap=self._shed,
            header_timeouts=self._timed_out,
            open=len(self._open),
            max_connections=self._max,
            note="counts since the last such line",
        )
        self._shed = self._timed_out = 0


class _Guarded(asyncio.Protocol):
    """aiohttp's RequestHandler, counted, with a deadline for the first request's headers."""

    def __init__(self, guard: ConnectionGuard, inner: RequestHandler) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if not self._guard._admit(self):
            transport.abort()
            return
        self._admitted = True
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard._header_timeout_s, self._expire)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        self._inner.data_received(data)
        # aiohttp counts each request whose headers it has parsed (no public accessor).
        if self._timer is not None and self._inner._request_count > 0:
            self._timer.cancel()
            self._timer = None
            self._guard._started(self)

    def eof_received(self) -> bool | None:
        if self._admitted:
            self._inner.eof_received()
        return None

    def pause_writing(self) -> None:
        if self._admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._admitted:
            self._guard._gone(self)
            self._inner.connection_lost(exc)

    def _expire(self) -> None:
        self._timer = None
        self._guard._expired(self)
        self.abort()

    def abort(self) -> None:
        """Close at once (no answer: the client never finished asking)."""
        if self._transport is not None:
            self._transport.abort()
