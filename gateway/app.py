"""The app factory: wiring only. Sources, the pipeline, the store and the workers meet here."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import aiohttp
import orjson
import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestPayloadError

from gateway import admin, cookies
from gateway import destinations as destination_types
from gateway import sources as source_types
from gateway.backlog import Backlog, Kept
from gateway.client_ip import client_ip, forwarded_for
from gateway.config import Config, Cookies
from gateway.cors import cors_middleware
from gateway.delivery import Worker
from gateway.destinations.base import Destination
from gateway.encoding import DecodedTooLarge, EncodingError, decode_body
from gateway.event import ConsentState, Event
from gateway.metrics import Metrics
from gateway.outbox import Storage, open_outbox
from gateway.pipeline import Pipeline
from gateway.preview import HitTrace, Preview
from gateway.preview import pages as preview_pages
from gateway.scripts import ScriptProxy
from gateway.sources.base import Hit, Outcome, Source
from gateway.sources.coerce import known_currency
from gateway.sources.server import BodyError, ServerSource, authorized, parse_body

log = structlog.get_logger("gateway.app")


@dataclass(slots=True)
class QueueCache:
    """Queue statistics, re-read at most every few seconds for /readyz and /metrics."""

    read_at: float = float("-inf")
    stats: dict[str, tuple[int, float | None]] = field(default_factory=dict)


CONFIG: Final = web.AppKey("config", Config)
STORE: Final = web.AppKey("store", Storage)
PIPELINE: Final = web.AppKey("pipeline", Pipeline)
METRICS: Final = web.AppKey("metrics", Metrics)
WORKERS: Final = web.AppKey("workers", dict[str, Worker])
DESTINATIONS: Final = web.AppKey("destinations", Mapping[str, Destination])
QUEUE_CACHE: Final = web.AppKey("queue_cache", QueueCache)
SCRIPTS: Final = web.AppKey("scripts", ScriptProxy)
BACKLOG: Final = web.AppKey("backlog", Backlog)
_RNG: Final = random.SystemRandom()

BROWSER_STORE_WAIT_S: Final = 5.0
"""A browser hit waits this long for its commit, then gets its answer anyway."""
RETENTION_EVERY_S: Final = 300.0
READY_PING_S: Final = 2.0
"""/readyz waits this long for its probe write before it says 503."""
SHUTDOWN_GRACE_S: Final = 5.0
"""On SIGTERM, every destination's in-flight deliveries get this long together, writing back
included. With aiohttp's 2 s for open requests before it, a stop takes at most ~7 s: inside
Docker's default 10 s."""


def build_destinations(config: Config) -> dict[str, Destination]:
    """One Destination object per configured destination."""
    return {
        name: destination_types.TYPES[settings.type](name, settings)
        for name, settings in config.destinations.items()
    }


def create_app(config: Config) -> web.Application:
    """The gateway as an aiohttp application (the same factory serves tests and `serve`)."""
    # CORS outermost, so even a 503 from the safety net carries the shop's CORS headers; no
    # CORS layer at all (one coroutine less per hit) when no origin is allowed.
    middlewares: list[Middleware] = [_never_a_500]
    if config.allowed_origins:
        middlewares.insert(0, cors_middleware(config.allowed_origins, _browser_paths(config)))
    if (port := ops_port(config)) is not None:
        middlewares.append(_operators_on(port))
    app = web.Application(
        client_max_size=config.listen.max_body_bytes,
        middlewares=middlewares,
        # Bodies are decoded by the handlers (gateway/encoding.py), not by aiohttp's parser.
        handler_args={"auto_decompress": False},
    )
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app[DESTINATIONS] = build_destinations(config)
    app[QUEUE_CACHE] = QueueCache()
    app.cleanup_ctx.append(_storage)
    app.cleanup_ctx.append(_backlog)
    app.cleanup_ctx.append(_delivery)
    app.cleanup_ctx.append(_retention)
    preview = preview_pages.add_routes(app, config) if config.admin is not None else None
    for name, settings in config.sources.items():
        source = source_types.TYPES[name](settings)
        handler = (
            _server_handler(source, preview)
            if isinstance(source, ServerSource)
            else _browser_handler(source, _cookie_vendors(config, settings.send_to), preview)
        )
        for method, path in source.routes():
            app.router.add_route(method, path, handler)
    if config.scripts:
        app.cleanup_ctx.append(_scripts)
        for script in config.scripts:
            app.router.add_get(script.path, _script)
    if config.admin is not None:
        app.router.add_get("/admin", _admin)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    return app


def ops_port(config: Config) -> int | None:
    """The port of a separate operator listener, or None when the operator's routes share
    the public one (no `listen.ops`, or one that names the same address)."""
    ops = config.listen.ops
    if ops is None or ((ops.host or config.listen.host), ops.port) == (
        config.listen.host,
        config.listen.port,
    ):
        return None
    return ops.port


def _operators_on(port: int) -> Middleware:
    """Keep /metrics and /admin off the public listener, and its /readyz to a status code:
    their detail (the config file, destination names, platform error messages) is for
    operators, not for whoever can reach the shop's tagging subdomain."""

    @web.middleware
    async def operators_only(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if sockname is not None and sockname[1] == port:
            return await handler(request)
        path = request.path
        if path == "/metrics" or path == "/admin" or path.startswith("/admin/"):
            return web.Response(status=404, text="not found")
        if path == "/readyz":
            response = await handler(request)
            return web.Response(status=response.status)
        return await handler(request)

    return operators_only


def _browser_paths(config: Config) -> set[str]:
    """The routes browser tags call: the pixel sources' and the first-party scripts'."""
    paths = {script.path for script in config.scripts}
    for name, settings in config.sources.items():
        source = source_types.TYPES[name](settings)
        if not isinstance(source, ServerSource):
            paths.update(path for _, path in source.routes())
    return paths


@web.middleware
async def _never_a_500(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A bug must not answer 500: log it and say 503 (browser routes answer for themselves)."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        log.error("http.unhandled", path=request.path, error=type(exc).__name__)
        return web.json_response({"error": "unavailable"}, status=503)


async def _storage(app: web.Application) -> AsyncIterator[None]:
    storage = app[CONFIG].storage
    store = await open_outbox(storage.path, storage.url, storage.synchronous, exclusive=True)
    try:
        released = await store.release_leases()
    except BaseException:
        # Close what opened (aiosqlite's thread would keep a failed process alive).
        await store.close()
        raise
    if released:
        log.info("store.recovered_in_flight", deliveries=released)
    app[STORE] = store
    config = app[CONFIG]
    app[PIPELINE] = Pipeline(store, app[DESTINATIONS], config.consent, config.rules, app[METRICS])
    if (preview := app.get(preview_pages.PREVIEW)) is not None:
        app[PIPELINE].on_stored = preview.stored
    yield
    await store.close()


async def _backlog(app: web.Application) -> AsyncIterator[None]:
    """Hits held through a storage outage; written (or logged as lost) before the store
    closes, after the workers stopped (cleanups run in reverse)."""
    limits = app[CONFIG].storage.outage_buffer
    backlog = Backlog(app[PIPELINE].commit, app[METRICS], limits.max_events, limits.max_bytes)
    backlog.start()
    app[BACKLOG] = backlog
    yield
    await backlog.close()


async def _delivery(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    async with aiohttp.ClientSession(
        headers={"User-Agent": "tag-gateway"}, raise_for_status=False
    ) as session:
        workers = {
            name: Worker(dest, store, session, app[METRICS], app.get(preview_pages.PREVIEW))
            for name, dest in app[DESTINATIONS].items()
        }
        app[WORKERS] = workers

        def wake(names: Iterable[str]) -> None:
            for name in names:
                if worker := workers.get(name):
                    worker.wake()

        store.on_queued = wake
        for worker in workers.values():
            worker.start()
        yield
        # All at once: one grace for the whole gateway, however many destinations are slow.
        await asyncio.gather(*(w.stop(SHUTDOWN_GRACE_S) for w in workers.values()))


async def _retention(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_prune_forever(app), name="retention")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _prune_forever(app: web.Application) -> None:
    store, days = app[STORE], app[CONFIG].storage.retention_days
    while True:
        try:
            cutoff = time.time() - days * 86400
            pruned = 0
            while (n := await store.prune(cutoff)) > 0:
                pruned += n
                await asyncio.sleep(0.05)  # let hits in between batches
            if pruned:
                log.info("retention.pruned", deliveries=pruned, older_than_days=days)
        except Exception as exc:
            log.error("retention.failed", error=type(exc).__name__)
        await asyncio.sleep(RETENTION_EVERY_S)


def _cookie_vendors(config: Config, send_to: Sequence[str]) -> tuple[str, ...]:
    """Vendors whose first-party cookies a source's answers refresh: those its events go to
    (a GA4 hit routed to Meta gets `_fbp` and `_fbc` too)."""
    vendors = {destination_types.TYPES[config.destinations[d].type].vendor for d in send_to}
    return tuple(sorted(v for v in vendors if v in cookies.VENDORS))


async def _scripts(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(headers={"User-Agent": "tag-gateway"}) as session:
        app[SCRIPTS] = ScriptProxy(app[CONFIG].scripts, session)
        yield
        await app[SCRIPTS].close()


async def _script(request: web.Request) -> web.Response:
    return await request.app[SCRIPTS].handle(request)


def _browser_handler(
    source: Source, cookie_vendors: Sequence[str], preview: Preview | None = None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
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
            body = await _read_body(request) if request.can_read_body else b""
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
            hit = Hit(
                method=request.method,
                path=request.path,
                query=request.query,
                # As it came: yarl's decoded `query_string` turns `%25` into `%` and `+` into a
                # space, and a forward must pass the browser's bytes on.
                query_string=request.rel_url.raw_query_string,
                body=body,
                content_type=request.headers.get("Content-Type"),
                cookies=request.cookies,
                client_ip=client_ip(
                    request.remote,
                    forwarded_for(request.headers.getall("X-Forwarded-For", ())),
                    config.trusted_proxies,
                ),
                user_agent=request.headers.get("User-Agent"),
                received_at=received,
                referer=request.headers.get("Referer"),
                gpc=request.headers.get("Sec-GPC", "").strip() == "1",
                accept_language=request.headers.get("Accept-Language"),
            )
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


async def _read_body(request: web.Request) -> bytes:
    """The request body, or TimeoutError once `listen.body_timeout_s` has passed since its
    headers: aiohttp waits for a body as long as its client keeps the connection open."""
    async with asyncio.timeout(request.app[CONFIG].listen.body_timeout_s):
        return await request.read()


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
    events = _with_request_signals(parsed.events, hit, app[CONFIG])
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
    for event in events:
        custom = event.custom
        if custom.value is not None and not known_currency(custom.currency):
            # docs/http.md §4: an error on the server API, a logged warning on a browser hit.
            log.warning(
                "hit.value_without_currency",
                source=source.name,
                event_id=event.event_id,
                currency=(custom.currency or "")[:8] or None,
            )
    plan = None
    settings = app[CONFIG].cookies
    if settings is not None and cookie_vendors:
        events, plan = _first_party_ids(app, events, hit, settings, cookie_vendors, parsed.carried)
    event_ids.extend(e.event_id for e in events)
    names.extend(e.event_name for e in events)
    try:
        rows = app[PIPELINE].prepare(events, source.settings.send_to)
        if trace is not None:
            trace.prepared(events, rows, source.settings.send_to)
        # A task, so that a write slower than the wait still ends held or stored.
        write = asyncio.ensure_future(app[BACKLOG].write(rows))
        done, _ = await asyncio.wait((write,), timeout=BROWSER_STORE_WAIT_S)
        kept = write.result() if done else None
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


def _first_party_ids(
    app: web.Application,
    events: Sequence[Event],
    hit: Hit,
    settings: Cookies,
    vendors: Sequence[str],
    carried: Mapping[str, str],
) -> tuple[Sequence[Event], cookies.CookiePlan]:
    """Create or renew `_fbp`, `_fbc`, `_ttp`, `ttclid` once for this request, and put the same
    values on every event of it. Nothing is set when consent denies ad_storage."""
    first = app[PIPELINE].resolve_consent(events[0])
    denied = first.consent.ad_storage is ConsentState.DENIED
    page_url = events[0].event_source_url or hit.referer
    plan = cookies.plan(
        hit.cookies,
        page_url,
        settings,
        int(hit.received_at * 1000),
        denied,
        _RNG,
        vendors=vendors,
        carried=carried,
    )
    fields = plan.user_fields()
    if not fields:
        return events, plan
    return [
        dataclasses.replace(e, user=dataclasses.replace(e.user, ids={**e.user.ids, **fields}))
        for e in events
    ], plan


def _with_request_signals(events: Sequence[Event], hit: Hit, config: Config) -> Sequence[Event]:
    """Consent signals that come with the request rather than the tag: `Sec-GPC` and a
    configured TCF cookie (a TC string on the hit itself wins over the cookie)."""
    before: dict[str, str] = {}
    after: dict[str, str] = {}
    cookie = config.consent.tcf_cookie
    if cookie and (tc_string := hit.cookies.get(cookie)):
        before = {"gdpr": "1", "gdpr_consent": tc_string}
    if hit.gpc:
        after = {"gpc": "1"}
    if not before and not after:
        return events
    return [
        dataclasses.replace(e, consent_signals={**before, **e.consent_signals, **after})
        for e in events
    ]


def _server_handler(
    source: ServerSource, preview: Preview | None = None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    def answer(request: web.Request, status: int, body: object, outcome: str) -> web.Response:
        request.app[METRICS].count_hit(source.name, outcome)
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")

    async def handle(request: web.Request) -> web.StreamResponse:
        trace = preview.trace(request) if preview is not None else None
        if trace is None:
            return await take(request, None)
        response = await take(request, trace)
        await trace.answered(request, response, source.name)
        return response

    async def take(request: web.Request, trace: HitTrace | None) -> web.StreamResponse:
        received = time.time()
        if not authorized(request.headers.get("Authorization"), source.settings.api_keys):
            log.info("server.unauthorized")
            return answer(request, 401, {"error": "missing or wrong API key"}, "unauthorized")
        limit = request.app[CONFIG].listen.max_body_bytes
        try:
            body = decode_body(
                await _read_body(request), request.headers.get("Content-Encoding"), limit
            )
        except TimeoutError:
            slow = answer(request, 408, {"error": "body not received in time"}, "too_slow")
            slow.force_close()
            return slow
        except web.HTTPRequestEntityTooLarge:
            return answer(
                request, 413, {"error": f"body over {limit} bytes"}, str(Outcome.TOO_LARGE)
            )
        except DecodedTooLarge as exc:
            return answer(request, 413, {"error": str(exc)}, str(Outcome.TOO_LARGE))
        except (EncodingError, RequestPayloadError) as exc:
            error = str(exc) if isinstance(exc, EncodingError) else "body cannot be read"
            return answer(request, 400, {"error": error}, str(Outcome.MALFORMED))
        try:
            batch = parse_body(body, received, destination_types.IDENTIFIERS)
        except BodyError as exc:
            return answer(request, 400, {"error": str(exc)}, str(Outcome.MALFORMED))
        events = [event for _, event in batch.events]
        try:
            added = await request.app[PIPELINE].ingest(events, source.settings.send_to, trace)
        except Exception as exc:
            # Not stored, so not acknowledged: the backend must send it again.
            log.error("server.store_failed", error=type(exc).__name__)
            request.app[METRICS].count_hit(source.name, str(Outcome.STORE_ERROR))
            return web.Response(
                status=503,
                body=orjson.dumps({"error": "storage unavailable; retry"}),
                content_type="application/json",
                headers={"Retry-After": "5"},
            )
        # An event counts as a duplicate when no destination took it afresh.
        duplicates = sum(1 for a in added if a.duplicates and not a.queued)
        log.info(
            "hit",
            source=source.name,
            outcome="ok",
            accepted=len(added) - duplicates,
            duplicates=duplicates,
            rejected=len(batch.rejected),
            event_ids=[e.event_id for e in events][:50],
            latency_ms=round((time.time() - received) * 1000, 2),
        )
        return answer(
            request,
            202,
            {
                "accepted": len(added) - duplicates,
                "duplicates": duplicates,
                "rejected": batch.rejected,
            },
            "ok",
        )

    return handle


async def _admin(request: web.Request) -> web.Response:
    settings = request.app[CONFIG].admin
    if settings is None or not admin.authorized(request, settings.token.get_secret_value()):
        return web.Response(
            status=401,
            text="admin token required",
            headers={"WWW-Authenticate": 'Basic realm="tag-gateway admin"'},
        )
    html = await admin.page(request.app[STORE])
    return web.Response(
        text=html,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
        },
    )


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _queues(app: web.Application) -> dict[str, tuple[int, float | None]]:
    """Queue depth and oldest waiting delivery per destination, read at most every 5 s."""
    cache = app[QUEUE_CACHE]
    if time.monotonic() - cache.read_at > 5:
        cache.stats = await app[STORE].queue_stats()
        cache.read_at = time.monotonic()
    return cache.stats


async def _readyz(request: web.Request) -> web.Response:
    """200 when storage takes writes and the config is loaded, with each destination's state.

    A destination that is down does not make the gateway unready: hits are still taken and
    queued, which is the point of the outbox.
    """
    app = request.app
    store = app.get(STORE)
    if store is None:
        return web.json_response({"status": "starting"}, status=503)
    backlog = app.get(BACKLOG)
    held = backlog.events if backlog is not None else 0
    try:
        # Shielded: a probe given up on still ends, and still records what it found.
        await asyncio.wait_for(asyncio.shield(store.ping()), READY_PING_S)
    except Exception as exc:
        error = store.write_health.error or type(exc).__name__
        return web.json_response({"status": "storage", "error": error, "held": held}, status=503)
    stats = await _queues(app)
    now = time.time()
    destinations = {}
    for name, worker in app[WORKERS].items():
        depth, oldest = stats.get(name, (0, None))
        destinations[name] = {
            "healthy": worker.health.healthy,
            "auth_failed": worker.health.auth_error is not None,
            "queued": depth,
            "oldest_queued_s": round(now - oldest, 1) if oldest else None,
            "last_error": worker.health.last_error,
        }
    return web.json_response(
        {
            "status": "ready",
            "config": app[CONFIG].origin,
            "held": held,
            "destinations": destinations,
        }
    )


async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    stats: dict[str, tuple[int, float | None]] | None = None
    if STORE in request.app:
        try:
            stats = await _queues(request.app)
        except Exception as exc:  # storage down: the rest of the metrics matter all the more
            log.warning("metrics.queue_stats_failed", error=type(exc).__name__)
            stats = None
    if stats is not None:
        now = time.time()
        for name in request.app[DESTINATIONS]:
            depth, oldest = stats.get(name, (0, None))
            metrics.queue_depth.labels(name).set(depth)
            metrics.oldest_queued.labels(name).set(now - oldest if oldest else 0)
    body = metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})
