"""Logs, metrics and health: what an operator sees, and what never shows in it."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from gateway.config import Config
from gateway.destinations.meta_capi import meta_user_data
from gateway.event import User
from tests.conftest import FakePlatform, Gateway, eventually

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]

TOKEN = "EAAB-secret-token-42"
EMAIL = "jane.doe@example.com"


def config(endpoint: str) -> str:
    return f"""
destinations:
  meta:
    type: meta_capi
    pixel_id: "1234567890"
    access_token: {TOKEN}
    endpoint: {endpoint}
    batch: {{max_wait_ms: 0}}
    retry: {{max_attempts: 100, base_ms: 10, max_ms: 20}}
sources:
  meta_pixel: {{send_to: [meta]}}
  server: {{send_to: [meta], api_keys: [api-key-xyz-0123456789]}}
"""


async def test_a_full_run_logs_no_token_and_no_personal_data(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    # Meta echoes a failure once so error paths are logged too.
    fake_platform.then(lambda r: web.Response(status=500, text="boom"))
    email_hash = meta_user_data(User(email=EMAIL))["em"]
    with structlog.testing.capture_logs() as logs:
        gw = await start_gateway(make_config(config(fake_platform.url)))
        event = {
            "event_id": "ord-9",
            "event_name": "purchase",
            "event_time": int(time.time()),
            "event_source_url": "https://shop.example/thanks",
            "user": {"email": EMAIL, "user_agent": "UA", "client_ip": "198.51.100.23"},
            "custom": {"value": "5", "currency": "EUR"},
        }
        response = await gw.client.post(
            "/v1/events",
            json={"events": [event]},
            headers={"Authorization": "Bearer api-key-xyz-0123456789"},
        )
        assert response.status == 202
        await gw.client.get(
            f"/tr?id=1234567890&ev=Lead&eid=l-1&ts={int(time.time() * 1000)}"
            f"&dl=https%3A%2F%2Fs.example%2F&ud[em]={email_hash}",
            headers={"User-Agent": "UA"},
        )

        async def both_sent() -> bool:
            return [r[0] for r in await gw.rows("SELECT status FROM deliveries")] == ["sent"] * 2

        await eventually(both_sent)
    text = repr(logs)
    # Controls: the run was logged, including the failed attempt.
    assert any(line.get("event") == "hit" for line in logs)
    assert any(line.get("verdict") == "retry" for line in logs)
    for secret in (TOKEN, "api-key-xyz-0123456789", EMAIL, email_hash, "198.51.100.23"):
        assert secret not in text, secret


async def test_metrics_and_readyz(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    async def hang(r: object) -> web.Response:
        return web.Response(status=503)

    fake_platform.default = hang
    gw = await start_gateway(make_config(config(fake_platform.url)))
    for i in range(3):
        await gw.client.get(
            f"/tr?id=1234567890&ev=PageView&eid=m-{i}&dl=https%3A%2F%2Fs.example%2F",
            headers={"User-Agent": "UA"},
        )
    await gw.client.get("/tr?ev=PageView")  # not an event

    await eventually(lambda: len(fake_platform.requests) >= 3)
    ready = await gw.client.get("/readyz")
    assert ready.status == 200
    body = await ready.json()
    meta = body["destinations"]["meta"]
    assert meta["queued"] == 3
    assert meta["healthy"] is False
    assert meta["last_error"] == "HTTP 503"

    text = await (await gw.client.get("/metrics")).text()
    assert 'tag_gateway_hits_total{outcome="ok",source="meta_pixel"} 3.0' in text
    assert 'tag_gateway_hits_total{outcome="ignored",source="meta_pixel"} 1.0' in text
    assert 'tag_gateway_deliveries_total{destination="meta",status="queued"} 3.0' in text
    assert 'tag_gateway_queue_depth{destination="meta"} 3.0' in text
    assert "tag_gateway_delivery_latency_seconds_bucket" in text
    assert (await gw.client.get("/healthz")).status == 200


async def test_a_browser_value_without_currency_is_a_logged_warning(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    with structlog.testing.capture_logs() as logs:
        gw = await start_gateway(make_config(config(fake_platform.url)))
        for eid, extra in (("v-1", "&cd[value]=10"), ("v-2", "&cd[value]=10&cd[currency]=EUR")):
            response = await gw.client.get(
                f"/tr?id=1234567890&ev=Purchase&eid={eid}&dl=https%3A%2F%2Fs.example%2F{extra}",
                headers={"User-Agent": "UA"},
            )
            assert response.status == 200
    warned = [line["event_id"] for line in logs if line["event"] == "hit.value_without_currency"]
    assert warned == ["v-1"]
