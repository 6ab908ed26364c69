"""First-party scripts (`scripts:`): cache, validators, refresh, last good copy, limits.

Every test runs the proxy in a real aiohttp app against a fake upstream on 127.0.0.1 that counts
requests, fails on command and answers 304 to a matching `If-None-Match`.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.scripts import RETRY_AFTER_S, Script, ScriptProxy, parse_ttl
from tests.conftest import eventually

PIXEL_JS = b"!function(){var u='https://www.facebook.com/tr';send(u)}();\n" * 40
PROXY: web.AppKey[ScriptProxy] = web.AppKey("proxy", ScriptProxy)

ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@dataclass
class Seen:
    """One request the fake upstream received, and what it answered."""

    path: str
    query: str
    headers: dict[str, str]
    status: int = 0


@dataclass
class Upstream:
    """A vendor's script host: counts requests, fails on command, honours If-None-Match."""

    server: TestServer | None = None
    body: bytes = PIXEL_JS
    etag: str = '"v1"'
    fail: bool = False
    delay_s: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    active: int = 0
    peak: int = 0
    """The most requests it was answering at once."""

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    @property
    def statuses(self) -> list[int]:
        return [s.status for s in self.seen]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(request.path, request.query_string, dict(request.headers))
        self.seen.append(seen)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            return await self._answer(request, seen)
        finally:
            self.active -= 1

    async def _answer(self, request: web.Request, seen: Seen) -> web.StreamResponse:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail:
            seen.status = 500
            return web.Response(status=500, text="upstream broken")
        if request.headers.get("If-None-Match") == self.etag:
            seen.status = 304
            return web.Response(status=304, headers={"ETag": self.etag})
        seen.status = 200
        return web.Response(
            body=self.body,
            headers={
                "ETag": self.etag,
                "Last-Modified": "Tue, 01 Sep 2026 10:00:00 GMT",
                "Content-Type": "text/javascript; charset=utf-8",
                "Cache-Control": "private, max-age=5",
                "Set-Cookie": "vendor=1",
            },
        )


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Upstream:
    fake = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    fake.server = await aiohttp_server(app, host="127.0.0.1")
    return fake


StartProxy = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
def start_proxy(aiohttp_client: ClientFactory) -> StartProxy:
    """A gateway-like app with the proxy built in a cleanup context, as contexts.py wires it."""

    async def start(*scripts: Script, **options: Any) -> TestClient[web.Request, web.Application]:
        app = web.Application()

        async def proxy_ctx(app: web.Application) -> AsyncIterator[None]:
            async with aiohttp.ClientSession() as session:
                proxy = ScriptProxy(scripts, session, **options)
                app[PROXY] = proxy
                yield
                await proxy.close()

        async def serve(request: web.Request) -> web.StreamResponse:
            return await request.app[PROXY].handle(request)

        app.cleanup_ctx.append(proxy_ctx)
        for script in scripts:
            app.router.add_get(script.path, serve)
        return await aiohttp_client(app)

    return start


def script(path: str, upstream: str, ttl: str = "1h", **rewrite: str) -> Script:
    return Script(path=path, upstream=upstream, ttl=ttl, rewrite=rewrite)


# --- caching and validators --------------------------------------------------------------------


async def test_many_requests_one_upstream_fetch(
    upstream: Upstream, start_proxy: StartProxy
) -> None:
    client = await start_proxy(script("/fbevents.js", upstream.url("/en_US/fbevents.js")))
    for _ in range(5):
        resp = await client.get("/fbevents.js")
        assert resp.status == 200
        assert await resp.read() == PIXEL_JS
    assert len(upstream.seen) == 1
    assert upstream.seen[0].path == "/en_US/fbevents.js"
    assert resp.headers["Cache-Control"] == "public, max-age=3600"
    assert resp.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert "Set-Cookie" not in resp.headers  # the vendor's cookies stay with the vendor


async def test_concurrent_first_requests_share_one_fetch(
    upstream: Upstream, start_proxy: StartProxy
) -> None:
    upstream.delay_s = 0.2
    client = await start_proxy(script("/fbevents.js", upstream.url("/fbevents.js")))
    responses = await asyncio.gather(*(client.get("/fbevents.js") for _ in range(10)))
    assert [r.status for r in responses] == [200] * 10
    assert len(upstream.seen) == 1


async def test_etag_and_304(upstream: Upstream, start_proxy: StartProxy) -> None:
    client = await start_proxy(script("/fbevents.js", upstream.url("/fbevents.js")))
    plain = {"Accept-Encoding": "identity"}
    first = await client.get("/fbevents.js", headers=plain)
    etag = first.headers["ETag"]
    assert etag == f'"{hashlib.sha256(PIXEL_JS).hexdigest()[:32]}"'  # ours, not the upstream's

    again = await client.get("/fbevents.js", headers={**plain, "If-None-Match": etag})
    assert again.status == 304
    assert await again.read() == b""
    assert again.headers["ETag"] == etag
    assert again.headers["Cache-Control"] == "public, max-age=3600"

    weak = await client.get("/fbevents.js", headers={**plain, "If-None-Match": f'"x", W/{etag}'})
    assert weak.status == 304
    other = await client.get("/fbevents.js", headers={**plain, "If-None-Match": '"other"'})
    assert other.status == 200
    assert await other.read() == PIXEL_JS
    assert len(upstream.seen) == 1


async def test_gzip_served_when_accepted_with_its_own_etag(
    upstream: Upstream, start_proxy: StartProxy
) -> None:
    client = await start_proxy(script("/fbevents.js", upstream.url("/fbevents.js")))
    zipped = await client.get(
        "/fbevents.js", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    raw = await zipped.read()
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert len(raw) < len(PIXEL_JS)
    assert gzip.decompress(raw) == PIXEL_JS
    assert "Accept-Encoding" in zipped.headers["Vary"]

    plain = await client.get("/fbevents.js", headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "Content-Encoding" not in plain.headers
    assert await plain.read() == PIXEL_JS
    assert plain.headers["ETag"] != zipped.headers["ETag"]

    revalidated = await client.get(
        "/fbevents.js",
        headers={"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["ETag"]},
    )
    assert revalidated.status == 304


async def test_head_answers_headers_only(upstream: Upstream, start_proxy: StartProxy) -> None:
    client = await start_proxy(script("/fbevents.js", upstream.url("/fbevents.js")))
    resp = await client.head("/fbevents.js")
    assert resp.status == 200
    assert "ETag" in resp.headers
    assert await resp.read() == b""


async def test_rewrite_applied_to_the_served_body(
    upstream: Upstream, start_proxy: StartProxy
) -> None:
    client = await start_proxy(
        Script(
            path="/fbevents.js",
            upstream=upstream.url("/fbevents.js"),
            rewrite={"https://www.facebook.com/tr": "https://t.shop.example/tr"},
        )
    )
    resp = await client.get("/fbevents.js", headers={"Accept-Encoding": "identity"})
    body = await resp.read()
    expected = PIXEL_JS.replace(b"https://www.facebook.com/tr", b"https://t.shop.example/tr")
    assert body == expected
    assert b"www.facebook.com" not in body
    assert resp.headers["ETag"] == f'"{hashlib.sha256(expected).hexdigest()[:32]}"'


# --- refresh and failure -----------------------------------------------------------------------


async def test_refresh_after_ttl_serves_stale_then_new(
    upstream: Upstream, start_proxy: StartProxy
) -> None:
    client = await start_proxy(script("/fbevents.js", upstream.url("/fbevents.js"), ttl="1s"))
    first = await client.get("/fbevents.js")
    assert await first.read() == PIXEL_JS
    upstream.body, upstream.etag = b"console.log('v2');\n", '"v2"'

    fresh = await client.get("/fbevents.js")
    assert await fresh.read() == PIXEL_JS  # inside the ttl: no upstream request
    assert len(upstream.seen) == 1

    await asyncio.sleep(1.1)
    stale = await client.get("/fbevents.js")
    assert await stale.read() == PIXEL_JS  # served at once while the refresh runs
    await eventually(lambda: len(upstream.seen) == 2)
    refresh = upstream.seen[1]
    assert refresh.headers["If-None-Match"] == '"v1"'
    assert refresh.headers["If-Modified-Since"] == "Tue, 01 Sep 2026 10:00:00 GMT"

    async def new_body_served() -> bool:
        resp = await client.get("/fbevents.js")
        return await resp.read() == b"console.log('v2');\n"

    await eventually(new_body_served)
    assert len(upstream.seen) == 2


async def test_upstream_304_keeps_the_body(upstream: Upstream, start_proxy: StartProxy) -> None:
    client = await start_proxy(script("/fbevents.js", upstream.url("/fbevents.js"), ttl="1s"))
    first = await client.get("/fbevents.js")
    etag = first.headers["ETag"]
    await asyncio.sleep(1.1)
    await client.get("/fbevents.js")
    await eventually(lambda: upstream.statuses == [200, 304])
    after = await client.get("/fbevents.js")
    assert await after.read() == PIXEL_JS
    assert after.headers["ETag"] == etag
    assert upstream.statuses == [200, 304]  # revalidated: fresh again, no further fetch


async def test_last_good_copy_when_the_upstream_fails(
    upstream: Upstream, start_proxy: StartProxy
) -> None:
    client = await start_proxy(script("/fbevents.js", upstream.url("/fbevents.js"), ttl="1s"))
    assert await (await client.get("/fbevents.js")).read() == PIXEL_JS
    upstream.fail = True
    await asyncio.sleep(1.1)

    stale = await client.get("/fbevents.js")
    assert stale.status == 200
    assert await stale.read() == PIXEL_JS
    await eventually(lambda: 500 in upstream.statuses)  # control: the refresh did fail
    later = await client.get("/fbevents.js")
    assert later.status == 200
    assert await later.read() == PIXEL_JS

    upstream.fail, upstream.body, upstream.etag = False, b"v3();\n", '"v3"'

    async def recovered() -> bool:
        resp = await client.get("/fbevents.js")
        return await resp.read() == b"v3();\n"

    await eventually(recovered)


async def test_nothing_cached_and_upstream_failing_is_503(
    upstream: Upstream, start_proxy: StartProxy
) -> None:
    upstream.fail = True
    client = await start_proxy(script("/fbevents.js", upstream.url("/fbevents.js")))
    resp = await client.get("/fbevents.js")
    assert resp.status == 503
    assert resp.headers["Retry-After"] == str(RETRY_AFTER_S)
    assert upstream.statuses == [500]  # control: the upstream was asked and failed

    upstream.fail = False  # no negative caching: the next request tries again
    resp = await client.get("/fbevents.js")
    assert resp.status == 200
    assert await resp.read() == PIXEL_JS


async def test_unreachable_upstream_is_503_not_an_exception(start_proxy: StartProxy) -> None:
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = await start_proxy(
        script("/fbevents.js", f"http://127.0.0.1:{port}/fbevents.js"), timeout_s=2.0
    )
    resp = await client.get("/fbevents.js")
    assert resp.status == 503
    assert "Retry-After" in resp.headers


async def test_oversized_body_is_refused(upstream: Upstream, start_proxy: StartProxy) -> None:
    client = await start_proxy(
        script("/fbevents.js", upstream.url("/fbevents.js")), max_body_bytes=1000
    )
    resp = await client.get("/fbevents.js")
    assert resp.status == 503
    assert upstream.statuses == [200]  # control: the upstream did answer, with too much


# --- what is proxied ---------------------------------------------------------------------------


async def test_query_string_kept(upstream: Upstream, start_proxy: StartProxy) -> None:
    client = await start_proxy(script("/gtag/js", upstream.url("/gtag/js")))
    resp = await client.get("/gtag/js?id=G-ABC123")
    assert resp.status == 200
    assert (upstream.seen[0].path, upstream.seen[0].query) == ("/gtag/js", "id=G-ABC123")

    await client.get("/gtag/js?id=G-ABC123")
    await client.get("/gtag/js?id=G-OTHER&l=dataLayer")
    assert [s.query for s in upstream.seen] == ["id=G-ABC123", "id=G-OTHER&l=dataLayer"]


async def test_upstream_query_is_fixed_and_request_adds_to_it(
    upstream: Upstream, start_proxy: StartProxy
) -> None:
    client = await start_proxy(script("/fbevents.js", upstream.url("/fbevents.js?v=2.9.1")))
    await client.get("/fbevents.js?v=evil&id=1")
    assert upstream.seen[0].query == "v=2.9.1&id=1"


async def test_cache_busting_queries_share_one_fetch(
    upstream: Upstream, start_proxy: StartProxy
) -> None:
    # 200 concurrent `?cb=<unique>` requests made 200 upstream fetches: a query parameter the
    # script does not use is not forwarded, so they are one variant and one fetch.
    upstream.delay_s = 0.1
    client = await start_proxy(script("/fbevents.js", upstream.url("/fbevents.js")))
    responses = await asyncio.gather(*(client.get(f"/fbevents.js?cb={n}") for n in range(200)))
    assert [r.status for r in responses] == [200] * 200
    assert [s.query for s in upstream.seen] == [""]
    # Repeats of a forwarded key are one variant too (the first value counts).
    await client.get("/fbevents.js?id=1&id=2&cb=3")
    await client.get("/fbevents.js?id=1&id=3")
    assert [s.query for s in upstream.seen] == ["", "id=1"]


async def test_configured_query_keys_are_the_only_ones_forwarded(
    upstream: Upstream, start_proxy: StartProxy
) -> None:
    client = await start_proxy(Script(path="/s.js", upstream=upstream.url("/s.js"), query=("v",)))
    await client.get("/s.js?id=G-1&v=3&cb=9")
    assert [s.query for s in upstream.seen] == ["v=3"]


async def test_one_fetch_at_a_time_per_upstream(
    upstream: Upstream, start_proxy: StartProxy
) -> None:
    # Distinct variants (`id=G-n`) are fetched one after another, never 20 at once.
    upstream.delay_s = 0.05
    client = await start_proxy(script("/gtag/js", upstream.url("/gtag/js")))
    responses = await asyncio.gather(*(client.get(f"/gtag/js?id=G-{n}") for n in range(20)))
    assert [r.status for r in responses] == [200] * 20
    assert len(upstream.seen) == 20  # control: 20 fetches happened
    assert upstream.peak == 1


async def test_unknown_path_not_proxied(upstream: Upstream, start_proxy: StartProxy) -> None:
    client = await start_proxy(script("/fbevents.js", upstream.url("/fbevents.js")))
    assert (await client.get("/other.js")).status == 404
    assert (await client.get("/fbevents.js/../other.js")).status == 404
    assert (await client.post("/fbevents.js")).status == 405
    assert upstream.seen == []


async def test_handle_refuses_a_path_it_was_not_given(upstream: Upstream) -> None:
    async with aiohttp.ClientSession() as session:
        proxy = ScriptProxy([script("/fbevents.js", upstream.url("/fbevents.js"))], session)
        app = web.Application()
        app.router.add_get("/{tail:.*}", proxy.handle)  # a catch-all route must not open it up
        async with (
            TestServer(app, host="127.0.0.1") as server,
            session.get(server.make_url("/gtag/js")) as resp,
        ):
            assert resp.status == 404
        await proxy.close()
    assert upstream.seen == []


async def test_query_variants_capped_per_path(upstream: Upstream, start_proxy: StartProxy) -> None:
    client = await start_proxy(script("/gtag/js", upstream.url("/gtag/js")), max_variants=3)
    for n in (1, 2, 3, 4):
        assert (await client.get(f"/gtag/js?id=G-{n}")).status == 200
    assert len(upstream.seen) == 4
    for n in (2, 3, 4):  # still cached
        await client.get(f"/gtag/js?id=G-{n}")
    assert len(upstream.seen) == 4
    await client.get("/gtag/js?id=G-1")  # the least recently served was evicted
    assert len(upstream.seen) == 5
    assert upstream.seen[-1].query == "id=G-1"


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h", 3600), ("1d", 86400), ("2", 2), (" 1.5h ", 5400)],
)
def test_parse_ttl(text: str, seconds: float) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "1w", "h", "0s", "0.5s", "-1s", "1 hour"])
def test_parse_ttl_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a duration|too short"):
        parse_ttl(text)


async def test_bad_scripts_refused_at_start() -> None:
    async with aiohttp.ClientSession() as session:
        # The config refuses a bad ttl first; the proxy still checks what it is handed.
        with pytest.raises(ValueError, match="not a duration"):
            script("/a.js", "https://cdn.example/a.js", ttl="soon")
        unchecked = Script.model_construct(
            path="/a.js", upstream="https://cdn.example/a.js", ttl="soon", rewrite={}
        )
        with pytest.raises(ValueError, match=r"/a\.js: ttl"):
            ScriptProxy([unchecked], session)
        with pytest.raises(ValueError, match="listed twice"):
            ScriptProxy(
                [script("/a.js", "https://cdn.example/a.js")] * 2,
                session,
            )
        proxy = ScriptProxy(
            [script("/a.js", "https://cdn.example/a.js"), script("/gtag/js", "https://g.example/")],
            session,
        )
        assert proxy.paths == ("/a.js", "/gtag/js")
