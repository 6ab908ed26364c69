"""The safety net every request passes through (CORS is `cors.py`, the operator split
`ops/listener.py`)."""

from __future__ import annotations

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

log = structlog.get_logger("gateway.middlewares")


@web.middleware
async def never_a_500(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A bug must not answer 500: log it and say 503 (browser routes answer for themselves)."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        log.error("http.unhandled", path=request.path, error=type(exc).__name__)
        return web.json_response({"error": "unavailable"}, status=503)
