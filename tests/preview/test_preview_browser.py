"""The preview page in Debian's Chromium: start a session on the page, send hits that carry it,
and watch them arrive without a reload, expand one, filter by event ID, copy it as curl. The
screenshot is kept in test-artifacts/preview.png."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from playwright.async_api import async_playwright

from gateway.config import Config
from tests.conftest import ARTIFACTS, CHROMIUM_FLAGS, FakePlatform, Gateway, eventually

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]


async def test_the_preview_page_shows_a_hit_live(
    start_gateway: Start,
    make_config: MakeConfig,
    fake_platform: FakePlatform,
    chromium: str,
    sqlite_only: None,
) -> None:
    fake_platform.default = lambda r: web.json_response({"events_received": 1, "fbtrace_id": "Ab"})
    gw = await start_gateway(
        make_config(
            f"""
admin: {{token: s3cret-admin-0123456789}}
destinations:
  meta:
    type: meta_capi
    pixel_id: "1234567890"
    access_token: META-TOKEN
    endpoint: {fake_platform.url}
    batch: {{max_wait_ms: 0}}
  buys: {{type: dry_run, events: [purchase]}}
sources:
  meta_pixel: {{send_to: [meta, buys]}}
"""
        )
    )
    console: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            context = await browser.new_context(
                extra_http_headers={"Authorization": "Bearer s3cret-admin-0123456789"},
                viewport={"width": 1366, "height": 900},  # a laptop screen
            )
            page = await context.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            response = await page.goto(str(gw.client.make_url("/admin/preview")))
            assert response is not None
            assert response.status == 200
            await page.evaluate("window.loadedOnce = true")
            await page.click("#start")
            await page.wait_for_selector("#live:not([hidden])")
            session = (await page.locator("#sid").inner_text()).strip()
            assert len(session) >= 22
            assert await page.locator("article.hit").count() == 0

            dl = "https%3A%2F%2Fshop.example%2Fsocks%3Fcolor%3Dblue"
            sent_at = time.monotonic()
            hit = await gw.client.get(
                f"/tr?id=1234567890&ev=ViewContent&eid=vc-77&dl={dl}&cd[value]=19.90"
                "&cd[currency]=EUR",
                headers={"X-Tag-Gateway-Preview": session, "User-Agent": "Mozilla/5.0 (phone)"},
            )
            assert hit.status == 200
            await page.wait_for_selector("article.hit", timeout=5_000)
            appeared_s = time.monotonic() - sent_at
            print(f"hit on the page {appeared_s * 1000:.0f} ms after it was sent")
            await gw.client.get(
                f"/tr?id=1234567890&ev=Purchase&eid=ord-1001&dl={dl}&cd[value]=129.90"
                "&cd[currency]=EUR",
                headers={"X-Tag-Gateway-Preview": session, "User-Agent": "Mozilla/5.0 (phone)"},
            )
            # Newest first; and the attempts arrive on the page as they happen (Meta for
            # both, the dry run for the purchase).
            # (Polled from here: the page's CSP forbids the eval wait_for_function uses.)
            await eventually(
                lambda: page.evaluate(
                    "document.querySelectorAll('article.hit').length === 2"
                    " && document.querySelectorAll('article.hit .chip .badge.sent').length === 3"
                ),
                within=10,
            )
            order = await page.locator("article.hit .summary .eid").all_inner_texts()
            assert order == ["ord-1001", "vc-77"]
            assert await page.evaluate("window.loadedOnce") is True  # never reloaded

            # Expand the purchase: its events, destinations, the payload and Meta's answer.
            await page.locator("article.hit").first.locator(".summary").click()
            detail = page.locator("article.hit").first.locator(".detail")
            await detail.locator(".attempt").first.wait_for()
            text = await detail.inner_text()
            assert "meta_pixel" in text
            assert "HTTP 200" in text
            assert "fbtrace_id" in text
            assert "META-TOKEN" not in text
            await detail.locator("details[data-key$=':meta:payload'] > summary").click()
            payload = await detail.locator("details[data-key$=':meta:payload'] pre").inner_text()
            assert '"event_id": "ord-1001"' in payload

            # Filter by event ID.
            await page.fill("#filter", "vc-")
            assert await page.locator("article.hit").count() == 1
            await page.fill("#filter", "nothing-like-it")
            assert await page.locator("article.hit").count() == 0
            await page.fill("#filter", "")
            assert await page.locator("article.hit").count() == 2

            # Copy as curl (the clipboard may be refused headless: the command is shown too).
            await (
                page.locator("article.hit").first.get_by_role("button", name="Copy as curl").click()
            )
            curl = await page.locator("article.hit").first.locator("textarea.curl").input_value()
            assert curl.startswith("curl -i")
            assert "ev=Purchase" in curl
            assert f"X-Tag-Gateway-Preview: {session}" in curl

            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "preview.png"), full_page=True)
        finally:
            await browser.close()
    noisy = [line for line in console if line.startswith(("error", "warning", "pageerror"))]
    assert noisy == []
