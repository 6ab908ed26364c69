"""The preview's HTTP surface: the admin API, the page, and the link that starts tracing a phone.

POST /admin/api/preview                       start a session (admin token)
GET  /admin/api/preview/<id>/traces?after=N   traces changed after seq N, long-polling
GET  /admin/preview                           the page (and its own CSS and JS)
GET  /preview/<id>?to=<url>                   set `tg_preview`, redirect to the shop (no token)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Final

from aiohttp import web
from yarl import URL

from gateway import admin
from gateway.config import Config
from gateway.preview.traces import COOKIE, Preview

PREVIEW: Final = web.AppKey("preview", Preview)
CONFIG_KEY: Final = web.AppKey("preview_config", Config)
LONG_POLL_S: Final = 25.0
_STATIC: Final = {"preview.js": "application/javascript", "preview.css": "text/css"}
_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(app: web.Application, config: Config) -> Preview:
    """Mount the preview on an app that has an admin token; the sessions' registry."""
    assert config.admin is not None
    token = config.admin.token.get_secret_value()
    preview = app[PREVIEW] = Preview(config)
    app[CONFIG_KEY] = config
    files = resources.files("gateway.preview") / "static"
    static = {name: (files / name).read_bytes() for name in (*_STATIC, "preview.html")}

    def guarded(handler: Handler) -> Handler:
        async def check(request: web.Request) -> web.StreamResponse:
            if not admin.authorized(request, token):
                return web.Response(
                    status=401,
                    text="admin token required",
                    headers={"WWW-Authenticate": 'Basic realm="tag-gateway admin"'},
                )
            return await handler(request)

        return check

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            body=static["preview.html"],
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-store", "Content-Security-Policy": _CSP},
        )

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        return web.Response(
            body=static[name],
            content_type=_STATIC[name],
            charset="utf-8",
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    app.router.add_post("/admin/api/preview", guarded(_start))
    app.router.add_get("/admin/api/preview/{id}/traces", guarded(_traces))
    app.router.add_get("/admin/preview", guarded(page))
    app.router.add_get("/admin/preview/{name}", guarded(asset))
    app.router.add_get("/preview/{id}", _link)
    return preview


async def _start(request: web.Request) -> web.Response:
    session = request.app[PREVIEW].start()
    return web.json_response(
        {"id": session.id, "expires_at": int(session.expires_at)},
        status=201,
        headers={"Cache-Control": "no-store"},
    )


async def _traces(request: web.Request) -> web.Response:
    session = request.app[PREVIEW].get(request.match_info["id"])
    if session is None:
        return web.json_response({"error": "unknown or expired preview session"}, status=404)
    try:
        after = int(request.query.get("after", "0"))
        wait_s = min(max(float(request.query.get("wait", LONG_POLL_S)), 0.0), LONG_POLL_S)
    except ValueError:
        return web.json_response({"error": "after: an integer seq; wait: seconds"}, status=400)
    traces = await session.wait(after, wait_s)
    return web.json_response(
        {
            "traces": [t.view() for t in traces],
            "next": max((t.seq for t in traces), default=max(after, 0)),
            "expires_at": int(session.expires_at),
        },
        headers={"Cache-Control": "no-store"},
    )


async def _link(request: web.Request) -> web.StreamResponse:
    """Set the preview cookie and send the visitor to the shop: how a phone joins a session."""
    config = request.app[CONFIG_KEY]
    to = request.query.get("to", "")
    if not allowed_target(to, config):
        return web.Response(
            status=400,
            text="to: an https URL on the shop's own domain (cookies.domain or allowed_origins)",
        )
    session = request.app[PREVIEW].get(request.match_info["id"])
    if session is None:
        return web.Response(status=404, text="unknown or expired preview session")
    response = web.Response(status=302, headers={"Location": to})
    host = (request.host or "").split(":")[0].lower()
    domain = config.cookies.domain.lower().lstrip(".") if config.cookies else None
    secure = request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    response.set_cookie(
        COOKIE,
        session.id,
        # The shop's registrable domain when the gateway sits under it, so pages that read
        # nothing still carry it on every hit to the gateway; else the gateway's host alone.
        domain=domain if domain and (host == domain or host.endswith("." + domain)) else None,
        path="/",
        max_age=max(1, int(session.expires_at - time.time())),
        httponly=True,
        samesite="Lax",
        secure=secure,
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def allowed_target(to: str, config: Config) -> bool:
    """True for an https URL on `cookies.domain` (or a subdomain) or one of `allowed_origins`:
    never an open redirect."""
    if not to or any(c in to for c in "\\\r\n\t ") or len(to) > 4096:
        return False
    try:
        url = URL(to)
    except ValueError:
        return False
    if url.scheme != "https" or not url.host or url.user or url.password:
        return False
    host = url.host.lower().rstrip(".")
    if config.cookies is not None:
        domain = config.cookies.domain.lower().strip(".")
        if host == domain or host.endswith("." + domain):
            return True
    origin = f"https://{host}" + (f":{url.port}" if url.explicit_port else "")
    return origin in {o.lower().rstrip("/") for o in config.allowed_origins}
