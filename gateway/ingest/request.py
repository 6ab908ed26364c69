"""What ingest reads off an HTTP request: its body, in time, and the `Hit` a source parses."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.client_ip import client_ip, forwarded_for
from gateway.config import Config
from gateway.sources.base import Hit
from gateway.typedefs import CONFIG


async def read_body(request: web.Request) -> bytes:
    """The request body, or TimeoutError once `listen.body_timeout_s` has passed since its
    headers: aiohttp waits for a body as long as its client keeps the connection open."""
    async with asyncio.timeout(request.app[CONFIG].listen.body_timeout_s):
        return await request.read()


def hit_of(request: web.Request, body: bytes, received: float, config: Config) -> Hit:
    """The browser request as a source sees it: body decoded, client IP and `Sec-GPC` read."""
    return Hit(
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
