"""`listen.ops`: the operator's routes on a listener of their own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.config import Config


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


def operators_on(port: int) -> Middleware:
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
