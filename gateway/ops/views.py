"""The operator's pages: liveness, readiness with each destination's state, Prometheus
metrics, and the admin overview."""

from __future__ import annotations

import asyncio
import time
from typing import Final

import structlog
from aiohttp import web

from gateway import admin
from gateway.ops.queues import QueueStats
from gateway.typedefs import BACKLOG, CONFIG, DESTINATIONS, METRICS, QUEUE_CACHE, STORE, WORKERS

log = structlog.get_logger("gateway.ops")

READY_PING_S: Final = 2.0
"""/readyz waits this long for its probe write before it says 503."""


async def healthz(request: web.Request) -> web.Response:
    """200 while the process serves at all."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
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
    stats = await app[QUEUE_CACHE].read(store)
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


async def metrics(request: web.Request) -> web.Response:
    """The Prometheus text format, queue gauges refreshed from the store when it answers."""
    counters = request.app[METRICS]
    stats: QueueStats | None = None
    if STORE in request.app:
        try:
            stats = await request.app[QUEUE_CACHE].read(request.app[STORE])
        except Exception as exc:  # storage down: the rest of the metrics matter all the more
            log.warning("metrics.queue_stats_failed", error=type(exc).__name__)
            stats = None
    if stats is not None:
        now = time.time()
        for name in request.app[DESTINATIONS]:
            depth, oldest = stats.get(name, (0, None))
            counters.queue_depth.labels(name).set(depth)
            counters.oldest_queued.labels(name).set(now - oldest if oldest else 0)
    body = counters.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def admin_page(request: web.Request) -> web.Response:
    """The admin overview, behind the admin token."""
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
