"""A real browser: headless Chromium loads a shop page on shop.localhost whose tags send to the
gateway on t.shop.localhost, the way a shop moves its tags to its own subdomain.

The page fires an image GET and a sendBeacon to /tr, a credentialed fetch POST to
/api/v2/pixel (a CORS preflight first), a multi-event sendBeacon to /g/collect, and loads
/fbevents.js from the gateway (served from a fake upstream). Checked: what the gateway stored,
the first-party cookies the browser now holds, and that the console stayed clean.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import async_playwright

from gateway.config import Config
from tests.conftest import CHROMIUM_FLAGS, FakePlatform, Gateway, eventually

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]

UPSTREAM_SCRIPT = (
    "window.fbqEndpoint = 'https://www.facebook.com/tr';\nwindow.fbeventsLoaded = true;\n"
)

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>shop</title>
<script src="{gw}/fbevents.js"></script>
</head><body><h1>Wool socks</h1>
<script>
(async () => {{
  const gw = "{gw}";
  const dl = encodeURIComponent(location.href);
  const ts = Date.now();
  const img = new Image();
  img.src = `${{gw}}/tr?id=1234567890&ev=PageView&eid=img-1&ts=${{ts}}&dl=${{dl}}&rqm=GET`;
  const form = new FormData();
  for (const [k, v] of Object.entries({{id: "1234567890", ev: "ViewContent", eid: "beacon-1",
      ts: String(ts), dl: location.href, "cd[value]": "19.90", "cd[currency]": "EUR", rqm: "SB"}}))
    form.append(k, v);
  navigator.sendBeacon(`${{gw}}/tr/`, form);
  const tiktok = await fetch(`${{gw}}/api/v2/pixel`, {{
    method: "POST", credentials: "include", headers: {{"Content-Type": "application/json"}},
    body: JSON.stringify({{event: "AddToCart", event_id: "tt-1",
      timestamp: new Date().toISOString(),
      context: {{pixel: {{code: "CABC123"}}, page: {{url: location.href}}}},
      properties: {{currency: "EUR", value: "19.90",
        contents: [{{content_id: "264", price: 19.9, quantity: 1}}]}}}})
  }});
  window.tiktokAnswer = await tiktok.json();
  const lines = "en=page_view&ep.event_id=ga-1&_et=10\\nen=add_to_cart&ep.event_id=ga-2&_et=20";
  navigator.sendBeacon(
    `${{gw}}/g/collect?v=2&tid=G-ABC123&cid=1489945657.1691089601&_p=1&dl=${{dl}}`,
    new Blob([lines], {{type: "text/plain"}}));
  window.done = true;
}})();
</script></body></html>"""


async def test_a_shop_page_in_chromium(
    start_gateway: Start,
    make_config: MakeConfig,
    fake_platform: FakePlatform,
    chromium: str,
) -> None:
    fake_platform.default = lambda r: web.json_response({"code": 0, "events_received": 1})
    # The fake upstream of the first-party script.
    upstream_app = web.Application()
    upstream_hits: list[str] = []

    async def fbevents(request: web.Request) -> web.Response:
        upstream_hits.append(request.path_qs)
        return web.Response(text=UPSTREAM_SCRIPT, content_type="application/javascript")

    upstream_app.router.add_get("/en_US/fbevents.js", fbevents)
    upstream = TestServer(upstream_app, host="127.0.0.1")
    await upstream.start_server()

    # The shop's page server; the page is filled in once the gateway's port is known.
    page_html: list[str] = []

    async def serve_page(request: web.Request) -> web.Response:
        return web.Response(text=page_html[0], content_type="text/html")

    shop_app = web.Application()
    shop_app.router.add_get("/product", serve_page)
    shop = TestServer(shop_app, host="127.0.0.1")
    await shop.start_server()
    shop_origin = f"http://shop.localhost:{shop.port}"

    cfg = make_config(
        f"""
allowed_origins: ["{shop_origin}"]
cookies: {{domain: shop.localhost, max_age_days: 90}}
scripts:
  - path: /fbevents.js
    upstream: {upstream.make_url("/en_US/fbevents.js")!s}
    ttl: 1h
    rewrite: {{"https://www.facebook.com/tr": "GATEWAY/tr"}}
destinations:
  meta: {{type: meta_capi, pixel_id: "1234567890", access_token: T, endpoint: {fake_platform.url}}}
  tiktok:
    {{type: tiktok_events, pixel_code: CABC123, access_token: T, endpoint: {fake_platform.url}}}
  ga4: {{type: ga4_mp, measurement_id: G-ABC123, api_secret: S, endpoint: {fake_platform.url}}}
sources:
  meta_pixel: {{send_to: [meta]}}
  tiktok_pixel: {{send_to: [tiktok]}}
  ga4: {{send_to: [ga4, meta]}}
"""
    )
    gw = await start_gateway(cfg)
    gateway_origin = f"http://t.shop.localhost:{gw.client.port}"
    page_html.append(PAGE.format(gw=gateway_origin))

    console: list[str] = []
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            try:
                context = await browser.new_context()
                page = await context.new_page()
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
                await page.goto(
                    f"{shop_origin}/product?fbclid=IwAR_browser_test_1&ttclid=E.C.P.test"
                )
                await page.wait_for_function("window.done === true", timeout=10_000)
                assert await page.evaluate("window.fbeventsLoaded") is True
                assert await page.evaluate("window.fbqEndpoint") == "GATEWAY/tr"
                assert await page.evaluate("window.tiktokAnswer") == {"code": 0, "message": "OK"}

                async def stored() -> bool:
                    ids = {r[0] for r in await gw.rows("SELECT event_id FROM events")}
                    return ids >= {"img-1", "beacon-1", "tt-1", "ga-1", "ga-2"}

                await eventually(stored, within=10)
                cookies = {c["name"]: c for c in await context.cookies(gateway_origin)}
            finally:
                await browser.close()
    finally:
        await shop.close()
        await upstream.close()

    noisy = [line for line in console if line.startswith(("error", "warning", "pageerror"))]
    assert noisy == []
    assert len(upstream_hits) == 1
    # First-party cookies, on the shop's registrable domain.
    assert {"_fbp", "_fbc", "_ttp", "ttclid"} <= set(cookies)
    for name in ("_fbp", "_fbc", "_ttp"):
        assert cookies[name]["domain"].lstrip(".") == "shop.localhost"
        assert cookies[name]["sameSite"] == "Lax"
        assert cookies[name]["expires"] > time.time() + 80 * 86400
    assert cookies["_fbc"]["value"].endswith(".IwAR_browser_test_1")
    # The events carry the same IDs the browser now holds.
    await asyncio.sleep(0)
    fbp = cookies["_fbp"]["value"]

    async def meta_saw_fbp() -> bool:
        return any(
            e["user_data"].get("fbp") == fbp
            for r in fake_platform.requests
            if r.path.endswith("/events")
            for e in r.json().get("data", [])
        )

    await eventually(meta_saw_fbp, within=10)
