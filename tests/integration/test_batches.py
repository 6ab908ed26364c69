"""Batch limits through the whole gateway: 2,500 events to Meta are 3 requests, 60 to GA4 are 3."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.config import Config
from tests.conftest import FakePlatform, Gateway, Recorded, eventually

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]


def events(prefix: str, n: int) -> list[dict[str, object]]:
    now = int(time.time())
    return [
        {
            "event_id": f"{prefix}-{i}",
            "event_name": "purchase",
            "event_time": now,
            "event_source_url": "https://shop.example/thanks",
            # One person: GA4 carries user_data per request, so only their events share one.
            "user": {"email": "jane@example.com", "user_agent": "UA", "ga_client_id": "555.666"},
            "custom": {"value": "1", "currency": "EUR"},
        }
        for i in range(n)
    ]


async def post_all(gw: Gateway, batches: list[list[dict[str, object]]]) -> None:
    """Post while the writer is held, so every event is queued before a worker claims any."""
    release = asyncio.Event()

    async def hold(conn: object) -> None:
        await release.wait()

    blocker = asyncio.create_task(gw.store.write(hold))
    posts = [
        asyncio.create_task(
            gw.client.post(
                "/v1/events",
                json={"events": b},
                headers={"Authorization": "Bearer test-api-key-0001"},
            )
        )
        for b in batches
    ]
    await asyncio.sleep(0.5)
    release.set()
    for response in await asyncio.gather(*posts):
        assert response.status == 202
    await blocker


async def test_2500_events_to_meta_are_three_requests(
    start_gateway: Start,
    make_config: MakeConfig,
    fake_platform: FakePlatform,
    sqlite_only: None,
) -> None:
    fake_platform.default = lambda r: web.json_response({"events_received": len(r.json()["data"])})
    gw = await start_gateway(
        make_config(
            f"""
destinations:
  meta: {{type: meta_capi, pixel_id: "1234567890", access_token: T, endpoint: {fake_platform.url}}}
sources:
  server: {{send_to: [meta], api_keys: [test-api-key-0001]}}
"""
        )
    )
    all_events = events("m", 2500)
    await post_all(gw, [all_events[:1000], all_events[1000:2000], all_events[2000:]])
    await eventually(lambda: sum(len(r.json()["data"]) for r in fake_platform.requests) == 2500)
    assert sorted(len(r.json()["data"]) for r in fake_platform.requests) == [500, 1000, 1000]


async def test_60_events_to_ga4_are_three_requests(
    start_gateway: Start,
    make_config: MakeConfig,
    fake_platform: FakePlatform,
    sqlite_only: None,
) -> None:
    def count(r: Recorded) -> int:
        return len(r.json()["events"])

    fake_platform.default = lambda r: web.Response(status=204)
    gw = await start_gateway(
        make_config(
            f"""
destinations:
  ga4: {{type: ga4_mp, measurement_id: G-ABC123, api_secret: S, endpoint: {fake_platform.url}}}
sources:
  server: {{send_to: [ga4], api_keys: [test-api-key-0001]}}
"""
        )
    )
    await post_all(gw, [events("g", 60)])
    await eventually(lambda: sum(count(r) for r in fake_platform.requests) == 60)
    assert sorted(count(r) for r in fake_platform.requests) == [10, 25, 25]
    first = fake_platform.requests[0]
    assert first.path == "/mp/collect"
    assert first.query == {"measurement_id": "G-ABC123", "api_secret": "S"}
    assert first.json()["client_id"] == "555.666"


async def test_a_slow_batch_is_never_claimed_twice(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, sqlite_only: None
) -> None:
    """25 people's events are 25 GA4 requests in one claimed batch. At 0.45 s each the batch
    takes ~11 s, past the old fixed 10 s lease after which the worker's second slot claimed the
    same rows and sent them again; the lease now covers the whole batch."""

    async def slow(r: Recorded) -> web.Response:
        await asyncio.sleep(0.45)
        return web.Response(status=204)

    fake_platform.default = slow
    gw = await start_gateway(
        make_config(
            f"""
destinations:
  ga4:
    type: ga4_mp
    measurement_id: G-ABC123
    api_secret: S
    endpoint: {fake_platform.url}
    timeout_ms: 1000
sources:
  server: {{send_to: [ga4], api_keys: [test-api-key-0001]}}
"""
        )
    )
    people = events("p", 25)
    for i, event in enumerate(people):
        event["user"] = {"ga_client_id": f"{i}.1"}
    await post_all(gw, [people])

    def sent() -> list[str]:
        return [r.json()["client_id"] for r in fake_platform.requests]

    await eventually(lambda: len(set(sent())) == 25, within=30)
    await asyncio.sleep(1.0)
    assert len(sent()) == 25  # each person's request went out once
    assert len(fake_platform.requests[0].json()["events"]) == 1  # control: one request each
