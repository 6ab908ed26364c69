"""GA4, TikTok and forward end to end: a Meta pixel hit in, fake platforms on 127.0.0.1 out."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from gateway.config import Config
from gateway.event import Custom, Event, User
from gateway.personal_data.hashing import sha256_hex
from gateway.typedefs import PIPELINE
from tests.conftest import FakePlatform, Gateway, Recorded, eventually

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]

MADE = "b" * 64  # an email hash the pixel made (Meta's rules)
UA = "Mozilla/5.0 (X11)"


def _answer(recorded: Recorded) -> web.Response:
    """Each fake platform's normal answer, by path."""
    if recorded.path.startswith("/open_api/"):
        return web.json_response({"code": 0, "message": "OK", "request_id": "r-ok", "data": {}})
    if recorded.path.startswith("/mp/"):
        return web.Response(status=204)
    return web.Response(status=200, body=b"GIF89a", content_type="image/gif")


def _config(make_config: MakeConfig, endpoint: str, send_to: str) -> Config:
    return make_config(
        f"""
trusted_proxies: [127.0.0.1/32]
destinations:
  ga4:
    type: ga4_mp
    measurement_id: G-ABC123
    api_secret: GA4-SECRET
    endpoint: {endpoint}
    batch: {{max_wait_ms: 0}}
  tiktok:
    type: tiktok_events
    pixel_code: CABC123
    access_token: TT-TOKEN
    endpoint: {endpoint}
    batch: {{max_wait_ms: 0}}
    retry: {{base_ms: 10, max_ms: 20}}
  meta_forward:
    type: forward
    vendor: meta
    endpoint: {endpoint}
    batch: {{max_wait_ms: 0}}
sources:
  meta_pixel: {{send_to: [{send_to}]}}
"""
    )


async def test_a_pixel_hit_reaches_ga4_tiktok_and_the_forward(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _answer
    gw = await start_gateway(_config(make_config, fake_platform.url, "ga4, tiktok, meta_forward"))
    ts = int(time.time() * 1000)
    query = (
        f"id=1234567890&ev=Purchase&eid=ord-7&ts={ts}"
        "&dl=https%3A%2F%2Fshop.example%2Fthanks&rl=https%3A%2F%2Fshop.example%2Fcart"
        "&cd[value]=79.5&cd[currency]=EUR&cd[order_id]=ord-7&cd[content_ids]=%5B%22264%22%5D"
        f"&ud[em]={MADE}&v=2.9.205&rqm=GET"
    )
    response = await gw.client.get(
        f"/tr/?{query}",
        headers={
            "User-Agent": UA,
            "X-Forwarded-For": "198.51.100.1, 203.0.113.9",
            "Cookie": "_ga=GA1.1.1489945657.1691089601",  # gtag's, on the shop's domain
        },
    )
    assert response.status == 200

    await eventually(lambda: len(fake_platform.requests) == 3)
    by_path = {r.path: r for r in fake_platform.requests}
    assert set(by_path) == {"/mp/collect", "/open_api/v1.3/event/track/", "/tr/"}
    event_time = ts // 1000

    ga4 = by_path["/mp/collect"]
    assert ga4.method == "POST"
    assert ga4.query == {"measurement_id": "G-ABC123", "api_secret": "GA4-SECRET"}
    assert ga4.headers["Content-Type"] == "application/json"
    body = ga4.json()
    # The consent rules may resolve the configured default onto the event; nothing else varies.
    assert body.pop("consent", None) in (
        None,
        {"ad_user_data": "GRANTED", "ad_personalization": "GRANTED"},
    )
    assert body == {
        "client_id": "1489945657.1691089601",  # the browser's own GA4 client, from `_ga`
        "timestamp_micros": event_time * 1_000_000,
        "ip_override": "203.0.113.9",
        "user_data": {"sha256_email_address": [MADE]},
        "events": [
            {
                "name": "purchase",
                "params": {
                    "page_location": "https://shop.example/thanks",
                    "page_referrer": "https://shop.example/cart",
                    "currency": "EUR",
                    "value": 79.5,
                    "transaction_id": "ord-7",
                    "items": [{"item_id": "264"}],
                    "event_id": "ord-7",
                },
                "timestamp_micros": event_time * 1_000_000,
            }
        ],
    }

    tiktok = by_path["/open_api/v1.3/event/track/"]
    assert tiktok.method == "POST"
    assert tiktok.query == {}
    assert tiktok.headers["Access-Token"] == "TT-TOKEN"
    assert tiktok.json() == {
        "event_source": "web",
        "event_source_id": "CABC123",
        "data": [
            {
                "event": "Purchase",
                "event_time": event_time,
                "event_id": "ord-7",
                "user": {"email": MADE, "ip": "203.0.113.9", "user_agent": UA},
                "properties": {
                    "currency": "EUR",
                    "value": 79.5,
                    "contents": [{"content_id": "264"}],
                    "order_id": "ord-7",
                },
                "page": {
                    "url": "https://shop.example/thanks",
                    "referrer": "https://shop.example/cart",
                },
            }
        ],
    }

    forward = by_path["/tr/"]
    assert forward.method == "GET"
    assert forward.query == dict(parse_qsl(query))  # the original query, parameter for parameter
    assert forward.headers["User-Agent"] == UA  # the browser's, not the gateway's
    assert forward.headers["X-Forwarded-For"] == "203.0.113.9"
    assert forward.body == b""

    async def all_sent() -> bool:
        rows = await gw.rows(
            "SELECT destination, status, http_status, payload FROM deliveries ORDER BY destination"
        )
        return rows == [
            ("ga4", "sent", 204, None),
            ("meta_forward", "sent", 200, None),
            ("tiktok", "sent", 200, None),
        ]

    await eventually(all_sent)


async def test_one_bad_event_in_a_tiktok_batch_is_isolated(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    def tiktok(recorded: Recorded) -> web.Response:
        ids = [e["event_id"] for e in recorded.json()["data"]]
        if any(i.startswith("bad") for i in ids):
            # TikTok fails the whole batch for one bad row, inside an HTTP 200.
            return web.json_response(
                {"code": 40002, "message": "Invalid value for properties.value", "data": {}}
            )
        return web.json_response({"code": 0, "message": "OK", "data": {}})

    fake_platform.default = tiktok
    gw = await start_gateway(_config(make_config, fake_platform.url, "tiktok"))
    now = int(time.time())
    ids = ["good-0", "good-1", "bad-2", "good-3", "good-4"]
    events = [
        Event(
            event_id=event_id,
            event_name="purchase",
            event_time=now,
            source="server",
            event_source_url="https://shop.example/thanks",
            user=User(email="jane@example.com"),
            custom=Custom(value=Decimal("10"), currency="EUR"),
        )
        for event_id in ids
    ]
    await gw.app[PIPELINE].ingest(events, ["tiktok"])

    async def settled() -> bool:
        rows = await gw.rows("SELECT event_id, status, message FROM deliveries ORDER BY id")
        return all(status in ("sent", "dead") for _, status, _ in rows)

    await eventually(settled)
    rows = await gw.rows("SELECT event_id, status, message, payload FROM deliveries ORDER BY id")
    statuses = {event_id: (status, message) for event_id, status, message, _ in rows}
    assert {k: v[0] for k, v in statuses.items()} == {
        "good-0": "sent",
        "good-1": "sent",
        "bad-2": "dead",
        "good-3": "sent",
        "good-4": "sent",
    }
    assert statuses["bad-2"][1] == "code 40002: Invalid value for properties.value"
    # A dead row keeps its (hashed) payload for a replay; no plain email in it.
    (payload,) = [p for event_id, _, _, p in rows if event_id == "bad-2"]
    assert orjson.loads(payload)["user"]["email"] == sha256_hex("jane@example.com")

    # The fault fired: the first request carried the whole batch and was refused.
    sent_ids = [[e["event_id"] for e in r.json()["data"]] for r in fake_platform.requests]
    assert sent_ids[0] == ids
    assert ["bad-2"] in sent_ids
    delivered = {
        i for batch in sent_ids for i in batch if not any(b.startswith("bad") for b in batch)
    }
    assert delivered == {"good-0", "good-1", "good-3", "good-4"}
