"""CORS for the shop's origins: preflights, credentials, and nothing for anyone else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDictProxy

from gateway.cors import ALLOW_METHODS, MAX_AGE_S, cors_middleware
from gateway.middlewares import never_a_500

SHOP = "https://shop.example"
WWW = "https://www.shop.example"
Client = TestClient[web.Request, web.Application]
StartApp = Callable[..., Awaitable[Client]]


def acah_headers(headers: CIMultiDictProxy[str]) -> set[str]:
    """The Access-Control-* headers present in an answer."""
    return {k.lower() for k in headers if k.lower().startswith("access-control-")}


@pytest.fixture
def start_app(aiohttp_client: Callable[..., Awaitable[Client]]) -> StartApp:
    async def start(origins: Sequence[str] = (SHOP, WWW)) -> Client:
        async def pixel(request: web.Request) -> web.StreamResponse:
            return web.json_response({"code": 0, "message": "OK"})

        async def varied(request: web.Request) -> web.StreamResponse:
            return web.Response(text="x", headers={"Vary": "Accept-Encoding"})

        async def bad(request: web.Request) -> web.StreamResponse:
            raise web.HTTPBadRequest(text="no")

        async def bug(request: web.Request) -> web.StreamResponse:
            raise RuntimeError("a bug")

        app = web.Application(middlewares=[cors_middleware(origins), never_a_500])
        app.router.add_post("/api/v2/pixel", pixel)
        app.router.add_get("/varied", varied)
        app.router.add_post("/bad", bad)
        app.router.add_post("/bug", bug)
        return await aiohttp_client(app)

    return start


def preflight_headers(
    origin: str | None, request_headers: str | None = "content-type"
) -> dict[str, str]:
    headers = {"Access-Control-Request-Method": "POST"}
    if origin is not None:
        headers["Origin"] = origin
    if request_headers is not None:
        headers["Access-Control-Request-Headers"] = request_headers
    return headers


# --- preflight ----------------------------------------------------------------------------------


async def test_preflight_from_an_allowed_origin(start_app: StartApp) -> None:
    client = await start_app()
    resp = await client.options(
        "/api/v2/pixel", headers=preflight_headers(WWW, "content-type, X-Requested-With")
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == WWW
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert resp.headers["Access-Control-Allow-Methods"] == ALLOW_METHODS == "GET, POST, OPTIONS"
    assert resp.headers["Access-Control-Allow-Headers"] == "content-type, X-Requested-With"
    assert resp.headers["Access-Control-Max-Age"] == str(MAX_AGE_S) == "600"
    assert "Origin" in [v.strip() for v in resp.headers["Vary"].split(",")]
    assert await resp.read() == b""


async def test_preflight_answered_for_any_path(start_app: StartApp) -> None:
    client = await start_app()
    for path in ("/api/v2/pixel/", "/g/collect", "/not-routed"):
        resp = await client.options(path, headers=preflight_headers(SHOP))
        assert resp.status == 204, path
        assert resp.headers["Access-Control-Allow-Origin"] == SHOP


async def test_preflight_requested_headers_sanitised(start_app: StartApp) -> None:
    client = await start_app()
    resp = await client.options(
        "/api/v2/pixel",
        headers=preflight_headers(SHOP, "content-type, bad header, a(b), Content-Type, x-ok,,"),
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Headers"] == "content-type, x-ok"

    nothing_valid = await client.options(
        "/api/v2/pixel", headers=preflight_headers(SHOP, "bad header")
    )
    assert nothing_valid.status == 204
    assert "Access-Control-Allow-Headers" not in nothing_valid.headers
    none_asked = await client.options("/api/v2/pixel", headers=preflight_headers(SHOP, None))
    assert "Access-Control-Allow-Headers" not in none_asked.headers


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://shop.example",  # another scheme is another origin
        "https://shop.example.evil.example",
        "https://sub.shop.example",
        "null",
        None,
    ],
)
async def test_preflight_from_other_origins_refused_without_cors_headers(
    start_app: StartApp, origin: str | None
) -> None:
    client = await start_app()
    resp = await client.options("/api/v2/pixel", headers=preflight_headers(origin))
    assert resp.status == 403
    assert acah_headers(resp.headers) == set()


async def test_no_allowed_origins_refuses_every_preflight(start_app: StartApp) -> None:
    client = await start_app(origins=())
    resp = await client.options("/api/v2/pixel", headers=preflight_headers(SHOP))
    assert resp.status == 403
    assert acah_headers(resp.headers) == set()


async def test_origin_compared_as_browsers_serialize_it(start_app: StartApp) -> None:
    client = await start_app(origins=("https://Shop.Example/",))
    resp = await client.options("/api/v2/pixel", headers=preflight_headers(SHOP))
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == SHOP  # echoed as the browser sent it


async def test_plain_options_is_not_a_preflight(start_app: StartApp) -> None:
    client = await start_app()
    resp = await client.options("/api/v2/pixel", headers={"Origin": SHOP})
    assert resp.status == 405  # the router's answer, decorated like any other
    assert resp.headers["Access-Control-Allow-Origin"] == SHOP


# --- actual requests ----------------------------------------------------------------------------


async def test_credentialed_post_from_an_allowed_origin(start_app: StartApp) -> None:
    client = await start_app()
    resp = await client.post(
        "/api/v2/pixel",
        json={"event": "Pageview"},
        headers={"Origin": SHOP, "Cookie": "_ttp=abc"},
    )
    assert resp.status == 200
    assert await resp.json() == {"code": 0, "message": "OK"}
    assert resp.headers["Access-Control-Allow-Origin"] == SHOP
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert resp.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Methods" not in resp.headers  # preflight-only


@pytest.mark.parametrize("origin", ["https://evil.example", None])
async def test_other_origins_get_no_cors_headers(start_app: StartApp, origin: str | None) -> None:
    client = await start_app()
    headers = {"Origin": origin} if origin else {}
    resp = await client.post("/api/v2/pixel", json={"event": "Pageview"}, headers=headers)
    assert resp.status == 200  # the hit is still taken; only the browser may not read it
    assert acah_headers(resp.headers) == set()
    # Still `Vary: Origin`, so a shared cache cannot replay this answer to the shop's origin.
    assert resp.headers["Vary"] == "Origin"


async def test_error_answers_carry_the_headers(start_app: StartApp) -> None:
    client = await start_app()
    for method, path, status in (
        ("POST", "/bad", 400),
        ("POST", "/bug", 503),
        ("GET", "/missing", 404),
        ("GET", "/api/v2/pixel", 405),
    ):
        resp = await client.request(method, path, headers={"Origin": SHOP})
        assert resp.status == status, path
        assert resp.headers["Access-Control-Allow-Origin"] == SHOP, path
        assert resp.headers["Access-Control-Allow-Credentials"] == "true", path
        assert "Origin" in resp.headers["Vary"], path


async def test_vary_merged_with_the_handlers(start_app: StartApp) -> None:
    client = await start_app()
    resp = await client.get("/varied", headers={"Origin": SHOP})
    assert resp.headers["Vary"] == "Accept-Encoding, Origin"
    assert resp.headers.getall("Vary") == ["Accept-Encoding, Origin"]


# --- which routes (the real app) ---------------------------------------------------------------

APP_CONFIG = """
allowed_origins: [https://shop.example]
admin: {token: admin-token-0123456789}
destinations:
  audit: {type: dry_run}
sources:
  meta_pixel: {send_to: [audit]}
  server: {send_to: [audit], api_keys: [test-api-key-0001]}
"""


async def test_cors_only_on_the_browser_tag_routes(
    start_gateway: Callable[..., Awaitable[Any]], make_config: Callable[[str], Any]
) -> None:
    # /admin with Allow-Credentials for the shop's origin would let a script on the shop read
    # the admin page with an operator's saved Basic credentials.
    gw = await start_gateway(make_config(APP_CONFIG))
    hit = await gw.client.get("/tr/?id=1&ev=PageView", headers={"Origin": SHOP})
    assert hit.headers["Access-Control-Allow-Origin"] == SHOP  # control: CORS is on
    auth = {"Authorization": "Bearer admin-token-0123456789"}
    for path in ("/admin", "/healthz", "/readyz", "/metrics"):
        resp = await gw.client.get(path, headers={"Origin": SHOP, **auth})
        assert resp.status == 200, path
        assert acah_headers(resp.headers) == set(), path
    api = await gw.client.post("/v1/events", json={"events": []}, headers={"Origin": SHOP})
    assert acah_headers(api.headers) == set()
    for path in ("/admin", "/v1/events"):
        pre = await gw.client.options(path, headers=preflight_headers(SHOP))
        assert pre.status != 204, path
        assert acah_headers(pre.headers) == set(), path
    pre = await gw.client.options("/tr/", headers=preflight_headers(SHOP))
    assert pre.status == 204
