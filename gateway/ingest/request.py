"""What ingest reads off an HTTP request: its body, in time, and the `Hit` a source parses."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

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


_PAIR: Final = r"[A-Za-z0-9_.\-]+=[A-Za-z0-9_.\-$%+/:=]*"
PLAIN_COOKIES: Final = re.compile(rf"{_PAIR}(?:; ?{_PAIR})*")
"""A Cookie header of plain `name=value` pairs: what tags and shops set (`_ga`, `_fbp`, a
session ID, base64 or percent-encoded values)."""


def cookies_of(request: web.Request) -> Mapping[str, str]:
    """The request's cookies, as aiohttp reads them. aiohttp's RFC 6265 reader (quoted values,
    dates, odd names) builds a `Morsel` a cookie, about 10 µs a hit; a plain header it reads
    as a split on `;` and the first `=` would (tests/ingest/test_request.py holds the two
    together), so that is what a plain header gets, and any other header goes to aiohttp."""
    header = request.headers.get("Cookie", "")
    if not header or not PLAIN_COOKIES.fullmatch(header):
        return request.cookies
    pairs = (pair.lstrip().partition("=") for pair in header.split(";"))
    return MappingProxyType({name: value for name, _, value in pairs})


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
        cookies=cookies_of(request),
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
