"""The app factory: wiring only. Where each stage lives:

- `ingest/` — HTTP request to `Hit`, the browser and server-API handlers;
- `pipeline` — consent, field rules, routing and payloads, then the outbox;
- `delivery` — one worker per destination;
- `ops/` — health, readiness, metrics and the admin page;
- `contexts.py`, `retention.py` — what opens before serving and closes after;
- `routes.py` — every route; `typedefs.py` — the keys of the app's shared state.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway import destinations as destination_types
from gateway.config import Config
from gateway.contexts import backlog_context, delivery_context, scripts_context, storage_context
from gateway.cors import cors_middleware
from gateway.destinations.base import Destination
from gateway.metrics import Metrics
from gateway.middlewares import never_a_500
from gateway.ops.listener import operators_on, ops_port
from gateway.ops.queues import QueueCache
from gateway.retention import retention_context
from gateway.routes import browser_paths, setup_routes
from gateway.typedefs import CONFIG, DESTINATIONS, METRICS, QUEUE_CACHE


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
    middlewares: list[Middleware] = [never_a_500]
    if config.allowed_origins:
        middlewares.insert(0, cors_middleware(config.allowed_origins, browser_paths(config)))
    if (port := ops_port(config)) is not None:
        middlewares.append(operators_on(port))
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
    # Opened in this order, closed in reverse: workers stop, the backlog writes, the store closes.
    app.cleanup_ctx.append(storage_context)
    app.cleanup_ctx.append(backlog_context)
    app.cleanup_ctx.append(delivery_context)
    app.cleanup_ctx.append(retention_context)
    if config.scripts:
        app.cleanup_ctx.append(scripts_context)
    setup_routes(app, config)
    return app
