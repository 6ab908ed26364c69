"""`POST /v1/events` over a real socket: auth, shapes, limits, store-then-202."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from gateway.config import Config
from tests.conftest import Gateway

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]

CONFIG = """
listen: {max_body_bytes: 4096}
destinations:
  audit: {type: dry_run}
sources:
  server: {send_to: [audit], api_keys: [key-1-0123456789abc, key-2-0123456789abc]}
"""
AUTH = {"Authorization": "Bearer key-2-0123456789abc"}


def event(event_id: str, **extra: object) -> dict[str, object]:
    return {
        "event_id": event_id,
        "event_name": "purchase",
        "event_time": int(time.time()) - 5,
        "event_source_url": "https://shop.example/thanks",
        "user": {"email": "jane@example.com"},
        "custom": {"value": "10.00", "currency": "EUR"},
        **extra,
    }


async def stored_ids(gw: Gateway) -> list[str]:
    return [row[0] for row in await gw.rows("SELECT event_id FROM events ORDER BY id")]


async def test_mixed_batch(start_gateway: Start, make_config: MakeConfig) -> None:
    gw = await start_gateway(make_config(CONFIG))
    bad = event("b", custom={"value": "1", "currency": "EURO"})
    response = await gw.client.post(
        "/v1/events", json={"events": [event("a"), bad, event("c")]}, headers=AUTH
    )
    assert response.status == 202
    assert await response.json() == {
        "accepted": 2,
        "duplicates": 0,
        "rejected": [{"index": 1, "error": "custom.currency: unknown currency 'EURO'"}],
    }
    # 202 came after COMMIT: another connection sees the rows at once.
    assert await stored_ids(gw) == ["a", "c"]

    again = await gw.client.post("/v1/events", json={"events": [event("a")]}, headers=AUTH)
    assert await again.json() == {"accepted": 0, "duplicates": 1, "rejected": []}


async def test_no_key_stores_nothing(start_gateway: Start, make_config: MakeConfig) -> None:
    gw = await start_gateway(make_config(CONFIG))
    for headers in (
        {},
        {"Authorization": "Bearer key-3-0123456789abc"},
        {"Authorization": "key-1-0123456789abc"},
    ):
        response = await gw.client.post(
            "/v1/events", json={"events": [event("x")]}, headers=headers
        )
        assert response.status == 401
    assert await stored_ids(gw) == []


async def test_bad_shapes_and_size(start_gateway: Start, make_config: MakeConfig) -> None:
    gw = await start_gateway(make_config(CONFIG))
    for body, reason in (
        (b"not json", "body is not JSON"),
        (b"[1]", "body must be a JSON object"),
        (b'{"evnts": []}', "events: required"),
    ):
        response = await gw.client.post("/v1/events", data=body, headers=AUTH)
        assert response.status == 400
        assert (await response.json())["error"].startswith(reason)
    big = b'{"events": [' + b" " * 5000 + b"]}"
    response = await gw.client.post("/v1/events", data=big, headers=AUTH)
    assert response.status == 413
