"""`GET /admin`: refused without its token, and, in a real headless Chromium, charts that draw
the expected series. The screenshot is kept in test-artifacts/admin.png."""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable

from playwright.async_api import async_playwright

from gateway.config import Config
from gateway.outbox import NewDelivery, NewEvent, Status
from tests.conftest import ARTIFACTS, CHROMIUM_FLAGS, Gateway

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]

CONFIG = """
admin: {token: s3cret-admin-0123456789}
destinations:
  meta: {type: dry_run}
  ga4: {type: dry_run}
sources:
  meta_pixel: {send_to: [meta]}
"""


async def fill(gw: Gateway) -> None:
    now = time.time()
    events = []
    for i in range(12):
        status = Status.DEAD if i == 0 else Status.SENT
        events.append(
            NewEvent(
                event_id=f"e-{i}",
                event_name="purchase",
                source="server",
                event_time=int(now - 3600 * (i % 3)),
                received_at=now - 3600 * (i % 3),
                dedupable=True,
                match_keys=0b101001 if i % 2 else 0b001000,
                deliveries=[
                    NewDelivery(
                        "meta", status, message="100/2804050: too little data" if i == 0 else None
                    ),
                    NewDelivery(
                        "ga4",
                        Status.DROPPED_CONSENT,
                        message="consent: analytics_storage denied (gcs)",
                    ),
                ],
                value="10",
                currency="EUR",
            )
        )
    await gw.store.add(events)


async def test_admin_needs_its_token(start_gateway: Start, make_config: MakeConfig) -> None:
    gw = await start_gateway(make_config(CONFIG))
    assert (await gw.client.get("/admin")).status == 401
    wrong = await gw.client.get("/admin", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    basic = base64.b64encode(b"ops:s3cret-admin-0123456789").decode()
    ok = await gw.client.get("/admin", headers={"Authorization": f"Basic {basic}"})
    assert ok.status == 200
    assert "<svg" in await ok.text()


async def test_admin_is_off_without_a_token(start_gateway: Start, make_config: MakeConfig) -> None:
    gw = await start_gateway(
        make_config(CONFIG.replace("admin: {token: s3cret-admin-0123456789}\n", ""))
    )
    assert (await gw.client.get("/admin", headers={"Authorization": "Bearer x"})).status == 404


async def test_admin_page_renders_its_charts_in_chromium(
    start_gateway: Start, make_config: MakeConfig, chromium: str
) -> None:
    gw = await start_gateway(make_config(CONFIG))
    await fill(gw)
    url = str(gw.client.make_url("/admin"))
    console_errors: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(
                extra_http_headers={"Authorization": "Bearer s3cret-admin-0123456789"},
                viewport={"width": 1200, "height": 1400},
            )
            page.on(
                "console", lambda m: console_errors.append(m.text) if m.type == "error" else None
            )
            response = await page.goto(url)
            assert response is not None
            assert response.status == 200
            charts = await page.locator("svg.chart.hourly").evaluate_all(
                "els => els.map(e => e.dataset.destination)"
            )
            assert charts == ["ga4", "meta"]
            meta_series = await page.locator(
                "svg.hourly[data-destination=meta] rect.bar"
            ).evaluate_all("els => [...new Set(els.map(e => e.dataset.series))].sort()")
            assert meta_series == ["dead", "sent"]
            counts = await page.locator("svg.hourly[data-destination=meta] rect.bar").evaluate_all(
                "els => els.reduce((n, e) => n + Number(e.dataset.count), 0)"
            )
            assert counts == 12
            # The bars have drawn size, not just markup.
            box = await page.locator(
                "svg.hourly[data-destination=meta] rect.bar"
            ).first.bounding_box()
            assert box is not None
            assert box["height"] > 0
            shares = await page.locator("svg.coverage rect.bar").evaluate_all(
                "els => Object.fromEntries("
                "els.map(e => [e.dataset.series, Number(e.dataset.share)]))"
            )
            assert shares["meta:fbp"] == 1.0
            assert shares["meta:email"] == 0.5
            assert "too little data" in await page.locator("table.dead").inner_text()
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "admin.png"), full_page=True)
        finally:
            await browser.close()
    assert console_errors == []
