"""CORS for the shop's own origins (`allowed_origins:`), with credentials.

Browser tags mostly send simple requests (image GETs, form POSTs, `sendBeacon`) that need no
CORS. Two kinds do: TikTok's pixel POSTs `application/json`, which triggers a preflight, and a
`fetch` with `credentials: "include"` (so first-party cookies go along) needs
`Access-Control-Allow-Credentials: true` and the exact origin echoed, never `*`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

ALLOW_METHODS: Final = "GET, POST, OPTIONS"
MAX_AGE_S: Final = 600
"""How long a browser may reuse a preflight answer (Chromium caps it at 7200 s anyway)."""
MAX_ALLOWED_HEADERS: Final = 32
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
"""An RFC 9110 token: what a header name may be. Anything else is dropped, not echoed."""


def normalize_origin(origin: str) -> str:
    """An origin as browsers serialize it: lowercase, no trailing slash."""
    return origin.strip().rstrip("/").lower()


def cors_middleware(
    allowed_origins: Sequence[str], paths: Collection[str] | None = None
) -> Middleware:
    """A middleware that answers preflights and adds CORS headers for `allowed_origins` only,
    on `paths` only (None: every path). The app passes the browser tag routes: `/admin`, the
    server API and the probes are never read cross-origin, least of all with credentials.

    - A preflight (`OPTIONS` with `Access-Control-Request-Method`) from an allowed origin is
      answered here with 204, for any of those paths: the router has no OPTIONS routes, and a
      preflight answer reveals nothing a GET would not.
    - A preflight from any other origin, or without `Origin`, gets 403 with no CORS headers, so
      the refusal shows plainly in the browser's console and in access logs.
    - Any other request from an allowed origin gets `Access-Control-Allow-Origin` (the origin
      itself), `Access-Control-Allow-Credentials: true` and `Vary: Origin`, on error answers too.
    - Requests from other origins, or without `Origin`, get no CORS headers. Every answer still
      says `Vary: Origin`: without it a shared cache could hand a copy made without CORS headers
      to the shop's origin (a cached first-party script, for one).

    Place it first in the app's middleware list so it also decorates answers that inner
    middlewares make up (the 503 of `middlewares.never_a_500`).
    """
    allowed = frozenset(normalize_origin(o) for o in allowed_origins if o.strip())
    only = frozenset(paths) if paths is not None else None

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        if only is not None and request.path not in only:
            return await handler(request)
        origin = request.headers.get(hdrs.ORIGIN)
        is_allowed = origin is not None and normalize_origin(origin) in allowed
        if request.method == hdrs.METH_OPTIONS and hdrs.ACCESS_CONTROL_REQUEST_METHOD in (
            request.headers
        ):
            if not is_allowed or origin is None:
                return web.Response(status=403, headers={hdrs.VARY: "Origin"})
            return _preflight(request, origin)
        echo = origin if is_allowed else None
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            # aiohttp's HTTP exceptions are answers too (404, 405, 413): a script must be able
            # to read their status, so they carry the headers as well.
            _decorate(exc, echo)
            raise
        _decorate(response, echo)
        return response

    return cors


def _preflight(request: web.Request, origin: str) -> web.Response:
    headers = {
        hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
        hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS: "true",
        hdrs.ACCESS_CONTROL_ALLOW_METHODS: ALLOW_METHODS,
        hdrs.ACCESS_CONTROL_MAX_AGE: str(MAX_AGE_S),
        # The answer echoes Origin and the requested headers, so caches must key on both.
        hdrs.VARY: "Origin, Access-Control-Request-Headers",
    }
    requested = _tokens(request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS, ""))
    if requested:
        headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ", ".join(requested)
    return web.Response(status=204, headers=headers)


def _tokens(raw: str) -> list[str]:
    seen: dict[str, str] = {}
    for part in raw.split(","):
        name = part.strip()
        if _TOKEN.fullmatch(name) and name.lower() not in seen:
            seen[name.lower()] = name
    return list(seen.values())[:MAX_ALLOWED_HEADERS]


def _decorate(response: web.StreamResponse, origin: str | None) -> None:
    if response.prepared:  # a streamed answer has sent its headers already
        return
    if origin is not None:
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
    vary = response.headers.get(hdrs.VARY, "")
    names = [v.strip() for v in vary.split(",") if v.strip()]
    if "*" not in names and "origin" not in {n.lower() for n in names}:
        response.headers[hdrs.VARY] = ", ".join([*names, "Origin"])
