"""The server API handler (`POST /v1/events`): a shop backend's batch in, `202` once stored.

Unlike a browser hit, everything here answers in JSON with a status the backend acts on: a
`503` means not stored and so not acknowledged, to be sent again.
"""

from __future__ import annotations

import time

import orjson
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError

from gateway import destinations as destination_types
from gateway.encoding import DecodedTooLarge, EncodingError, decode_body
from gateway.ingest.request import read_body
from gateway.preview import HitTrace, Preview
from gateway.sources.base import Outcome
from gateway.sources.server import BodyError, ServerSource, authorized, parse_body
from gateway.typedefs import CONFIG, METRICS, PIPELINE

log = structlog.get_logger("gateway.ingest")


def server_handler(source: ServerSource, preview: Preview | None = None) -> Handler:
    """The handler of the server source's route."""

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
                await read_body(request), request.headers.get("Content-Encoding"), limit
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
