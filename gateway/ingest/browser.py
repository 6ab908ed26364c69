"""The browser handler: a tag's hit in, the vendor's own answer out, whatever happens.

The hit is parsed by its source, given the request's consent signals, filtered of IDs nobody
configured, given first-party IDs, and stored through the outage backlog; the page gets the
vendor's answer (with its cookies) even when any of that fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Final

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError

from gateway import cookies
from gateway.backlog import Kept
from gateway.encoding import DecodedTooLarge, EncodingError, decode_body
from gateway.event import Event
from gateway.ingest.first_party import first_party_ids
from gateway.ingest.request import hit_of, read_body
from gateway.ingest.signals import with_request_signals
from gateway.preview import HitTrace, Preview
from gateway.sources.base import Hit, Outcome, Source
from gateway.sources.coerce import known_currency
from gateway.typedefs import BACKLOG, CONFIG, METRICS, PIPELINE

log = structlog.get_logger("gateway.ingest")

BROWSER_STORE_WAIT_S: Final = 5.0
"""A browser hit waits this long for its commit, then gets its answer anyway."""


def browser_handler(
    source: Source, cookie_vendors: Sequence[str], preview: Preview | None = None
) -> Handler:
    """The handler of a browser source's routes; `cookie_vendors` are the vendors whose
    first-party cookies its answers refresh."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await take(request)
        except Exception as exc:  # whatever happened, the page gets the vendor's answer
            log.error("hit.unhandled", source=source.name, error=type(exc).__name__)
            return source.answer(None)

    async def take(request: web.Request) -> web.StreamResponse:
        received = time.time()
        config = request.app[CONFIG]
        trace = preview.trace(request) if preview is not None else None
        hit: Hit | None = None
        cookie_plan: cookies.CookiePlan | None = None
        notes: dict[str, str] = {}
        outcome = Outcome.OK
        event_ids: list[str] = []
        names: list[str] = []
        try:
            body = await read_body(request) if request.can_read_body else b""
            body = decode_body(
                body, request.headers.get("Content-Encoding"), config.listen.max_body_bytes
            )
        except (web.HTTPRequestEntityTooLarge, DecodedTooLarge):
            outcome, body = Outcome.TOO_LARGE, None
        except (EncodingError, RequestPayloadError):  # not what its Content-Encoding says
            outcome, body = Outcome.MALFORMED, None
        except TimeoutError:
            outcome, body = Outcome.TOO_SLOW, None
        if body is not None:
            hit = hit_of(request, body, received, config)
            outcome, cookie_plan = await _ingest(
                request.app, source, hit, event_ids, names, cookie_vendors, notes, trace
            )
        request.app[METRICS].count_hit(source.name, str(outcome))
        log.info(
            "hit",
            source=source.name,
            outcome=str(outcome),
            event_ids=event_ids,
            event_names=names,
            notes=notes,
            latency_ms=round((time.time() - received) * 1000, 2),
        )
        if trace is not None:
            trace.finish(request, body, source.name, str(outcome), notes.get("reason"))
        response = source.answer(hit)
        if cookie_plan is not None:
            cookie_plan.apply(response)
        if outcome is Outcome.TOO_SLOW:
            response.force_close()  # the rest of the body may still be on its way
        return response

    return handle


async def _ingest(
    app: web.Application,
    source: Source,
    hit: Hit,
    event_ids: list[str],
    names: list[str],
    cookie_vendors: Sequence[str],
    notes: dict[str, str],
    trace: HitTrace | None = None,
) -> tuple[Outcome, cookies.CookiePlan | None]:
    """Parse, prepare and store one hit; its outcome and the cookies its answer sets."""
    try:
        parsed = source.parse(hit)
    except Exception as exc:  # bad input never breaks a page
        log.warning("hit.malformed", source=source.name, error=type(exc).__name__)
        if trace is not None:
            notes["reason"] = f"could not be parsed ({type(exc).__name__})"
        return Outcome.MALFORMED, None
    notes.update(parsed.notes)
    if trace is not None:
        trace.learned(parsed.events)
    if parsed.reason:
        notes["reason"] = parsed.reason
    if not parsed.events:
        return parsed.outcome, None
    config = app[CONFIG]
    events = with_request_signals(parsed.events, hit, config.consent)
    pipeline, send_to = app[PIPELINE], source.settings.send_to
    unknown = [pipeline.unknown_id(e, send_to) for e in events]
    if any(unknown):
        # A pixel or stream nobody configured: counted and logged with its ID, sent nowhere
        # but to destinations that take every event (cross-vendor routes, dry_run).
        notes["unknown_id"] = next(i for i in unknown if i)[:64]
        events = [
            e for e, i in zip(events, unknown, strict=True) if not i or pipeline.routed(e, send_to)
        ]
        if not events:
            notes["reason"] = f"unknown id {notes['unknown_id']}"
            return Outcome.IGNORED, None
    _warn_value_without_currency(source, events)
    plan = None
    settings = config.cookies
    if settings is not None and cookie_vendors:
        events, plan = first_party_ids(
            pipeline, events, hit, settings, cookie_vendors, parsed.carried
        )
    event_ids.extend(e.event_id for e in events)
    names.extend(e.event_name for e in events)
    try:
        rows = pipeline.prepare(events, send_to)
        if trace is not None:
            trace.prepared(events, rows, send_to)
        # The rows end held or stored even when the wait runs out first.
        kept = await _within(app[BACKLOG].submit(rows), BROWSER_STORE_WAIT_S)
    except Exception as exc:
        log.error("hit.store_failed", source=source.name, error=type(exc).__name__)
        return Outcome.STORE_ERROR, plan
    if kept is None:
        log.warning("hit.store_slow", source=source.name, waited_s=BROWSER_STORE_WAIT_S)
    elif kept is Kept.DROPPED:
        if trace is not None:
            trace.lost()
        return Outcome.STORE_ERROR, plan
    elif kept is Kept.HELD:
        notes["stored"] = "held in memory: storage refuses writes"
    return parsed.outcome, plan


async def _within(future: asyncio.Future[Kept], timeout_s: float) -> Kept | None:
    """The future's result, or None when `timeout_s` passes first; the future is left to
    finish. (asyncio.wait would wrap it in a task of its own: a third of a hit's wait.)"""
    if not future.done():
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def release(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        timer = asyncio.get_running_loop().call_later(timeout_s, release)
        future.add_done_callback(release)
        try:
            await waiter
        finally:
            timer.cancel()
            future.remove_done_callback(release)
        if not future.done():
            return None
    return future.result()


def _warn_value_without_currency(source: Source, events: Sequence[Event]) -> None:
    """docs/http.md §4: a value without a known currency is an error on the server API, a
    logged warning on a browser hit (the page's answer never depends on it)."""
    for event in events:
        custom = event.custom
        if custom.value is not None and not known_currency(custom.currency):
            log.warning(
                "hit.value_without_currency",
                source=source.name,
                event_id=event.event_id,
                currency=(custom.currency or "")[:8] or None,
            )
