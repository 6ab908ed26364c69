"""Reading the platforms' answers through the whole gateway: a 200 that is not the platform's
answer (a captive proxy's HTML, an empty or cut-off body) is retried, and `Retry-After` is
honoured as an HTTP date as well as in seconds (RFC 9110 §10.2.3)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate

import pytest
from aiohttp import web

from gateway.config import Config
from tests.conftest import FakePlatform, Gateway, Recorded, eventually
from tests.integration.test_delivery_once import shop_events

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]

DESTINATIONS = {
    "meta": 'type: meta_capi, pixel_id: "1234567890", access_token: T',
    "tiktok": "type: tiktok_events, pixel_code: CABC123, access_token: T",
}
GOOD = {
    "meta": lambda r: web.json_response({"events_received": len(r.json()["data"])}),
    "tiktok": lambda r: web.json_response({"code": 0, "message": "OK", "data": {}}),
}


def config(url: str, name: str) -> str:
    return f"""
destinations:
  {name}: {{{DESTINATIONS[name]}, endpoint: {url}, batch: {{max_wait_ms: 0}},
          retry: {{base_ms: 20, max_ms: 50}}}}
sources:
  server: {{send_to: [{name}], api_keys: [test-api-key-0001]}}
"""


async def post(gw: Gateway, prefix: str, n: int = 1) -> None:
    response = await gw.client.post(
        "/v1/events",
        json={"events": shop_events(prefix, n)},
        headers={"Authorization": "Bearer test-api-key-0001"},
    )
    assert response.status == 202


@pytest.mark.parametrize("name", ["meta", "tiktok"])
async def test_a_200_without_the_platforms_answer_is_retried(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, name: str
) -> None:
    fake_platform.then(
        lambda r: web.Response(text="<html><body>Sign in to the Wi-Fi</body></html>"),
        lambda r: web.Response(status=200),
        lambda r: web.Response(body=b'{"events_rec', content_type="application/json"),
    )
    fake_platform.default = GOOD[name]
    gw = await start_gateway(make_config(config(fake_platform.url, name)))
    await post(gw, "shape")

    async def sent() -> bool:
        return await gw.rows("SELECT status, attempts FROM deliveries") == [("sent", 4)]

    await eventually(sent, within=10)
    assert len(fake_platform.requests) == 4  # control: the three odd 200s really came first


async def test_retry_after_as_an_http_date_is_honoured(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    seen: list[float] = []

    def busy(r: Recorded) -> web.Response:
        seen.append(time.time())
        # Two to three seconds ahead (a date has whole seconds), as an IMF-fixdate.
        when = formatdate(int(time.time()) + 3, usegmt=True)
        return web.Response(status=503, text="busy", headers={"Retry-After": when})

    def ok(r: Recorded) -> web.Response:
        seen.append(time.time())
        return GOOD["meta"](r)

    fake_platform.then(busy, ok)
    gw = await start_gateway(make_config(config(fake_platform.url, "meta")))
    await post(gw, "date")
    await eventually(lambda: len(seen) == 2, within=10)
    # The backoff is 20-50 ms; only the date explains a wait of two seconds or more.
    assert seen[1] - seen[0] >= 2.0, seen[1] - seen[0]
    assert seen[1] >= int(seen[0]) + 3
