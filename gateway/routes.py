"""Every route the gateway answers, and which of them browsers call."""

from __future__ import annotations

from aiohttp import web

from gateway import sources as source_types
from gateway.config import Config
from gateway.ingest import browser_handler, cookie_vendors, server_handler
from gateway.ops import views as ops_views
from gateway.preview import pages as preview_pages
from gateway.sources.server import ServerSource
from gateway.typedefs import SCRIPTS


def setup_routes(app: web.Application, config: Config) -> None:
    """The sources' routes, the first-party scripts, the preview and the operator's pages."""
    preview = preview_pages.add_routes(app, config) if config.admin is not None else None
    for name, settings in config.sources.items():
        source = source_types.TYPES[name](settings)
        handler = (
            server_handler(source, preview)
            if isinstance(source, ServerSource)
            else browser_handler(source, cookie_vendors(config, settings.send_to), preview)
        )
        for method, path in source.routes():
            app.router.add_route(method, path, handler)
    for script in config.scripts:
        app.router.add_get(script.path, _script)
    if config.admin is not None:
        app.router.add_get("/admin", ops_views.admin_page)
    app.router.add_get("/healthz", ops_views.healthz)
    app.router.add_get("/readyz", ops_views.readyz)
    app.router.add_get("/metrics", ops_views.metrics)


def browser_paths(config: Config) -> set[str]:
    """The routes browser tags call: the pixel sources' and the first-party scripts'."""
    paths = {script.path for script in config.scripts}
    for name, settings in config.sources.items():
        source = source_types.TYPES[name](settings)
        if not isinstance(source, ServerSource):
            paths.update(path for _, path in source.routes())
    return paths


async def _script(request: web.Request) -> web.Response:
    # The proxy opens at start-up (contexts.scripts_context), after the routes are set.
    return await request.app[SCRIPTS].handle(request)
