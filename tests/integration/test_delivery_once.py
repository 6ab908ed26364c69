"""Exactly once per destination (contract §8) when delivery takes long: isolating many bad
events, per-visitor GA4 requests, and stopping while requests are on the wire.

Each test has a control that shows the slow path really happened.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.config import Config
from gateway.typedefs import WORKERS
from tests.conftest import FakePlatform, Gateway, Recorded, eventually
from tests.integration.test_batches import post_all

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]


def shop_events(prefix: str, n: int, *, visitors: bool = False) -> list[dict[str, object]]:
    now = int(time.time())
    return [
        {
            "event_id": f"{prefix}-{i}",
            "event_name": "purchase",
            "event_time": now,
            "event_source_url": "https://shop.example/thanks",
            "user": {
                "email": f"buyer{i}@example.com",
                "user_agent": "UA",
                "ga_client_id": f"{i}.1" if visitors else "555.666",
            },
            "custom": {"value": "1", "currency": "EUR"},
        }
        for i in range(n)
    ]


def bad(event_id: str) -> bool:
    """Every tenth event is one the platform refuses (and with it, its whole batch)."""
    return int(event_id.rsplit("-", 1)[1]) % 10 == 0


async def test_isolating_many_bad_events_sends_each_good_one_once(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    """300 events, 30 of them refused by Meta (`error.code` 100) and TikTok (`code` 40002 in an
    HTTP 200). Isolating them takes about 200 requests a platform, which at 150 ms each took
    longer than the lease: a second slot claimed the same rows and sent the good ones again."""
    accepted: dict[str, Counter[str]] = {"meta": Counter(), "tiktok": Counter()}

    async def platform(r: Recorded) -> web.Response:
        await asyncio.sleep(0.15)
        vendor = "tiktok" if r.path.startswith("/open_api") else "meta"
        ids = [e["event_id"] for e in r.json()["data"]]
        if any(bad(i) for i in ids):
            if vendor == "meta":
                error = {"message": "Invalid parameter", "code": 100, "error_subcode": 2804019}
                return web.json_response({"error": error}, status=400)
            return web.json_response({"code": 40002, "message": "Invalid value", "data": {}})
        accepted[vendor].update(ids)
        if vendor == "meta":
            return web.json_response({"events_received": len(ids)})
        return web.json_response({"code": 0, "message": "OK", "data": {}})

    fake_platform.default = platform
    cfg = make_config(
        f"""
destinations:
  meta:
    type: meta_capi
    pixel_id: "1234567890"
    access_token: TOKEN
    endpoint: {fake_platform.url}
    timeout_ms: 1000
    batch: {{max_wait_ms: 0}}
  tiktok:
    type: tiktok_events
    pixel_code: CABC123
    access_token: TOKEN
    endpoint: {fake_platform.url}
    timeout_ms: 1000
    batch: {{max_wait_ms: 0}}
sources:
  server: {{send_to: [meta, tiktok], api_keys: [test-api-key-0001]}}
"""
    )
    gw = await start_gateway(cfg)
    await post_all(gw, [shop_events("e", 300)])

    async def settled() -> bool:
        rows = await gw.rows("SELECT COUNT(*) FROM deliveries WHERE status IN ('sent', 'dead')")
        return rows[0][0] == 600

    await eventually(settled, within=120)
    await asyncio.sleep(0.5)  # anything sent twice would be on its way by now
    statuses = await gw.rows(
        "SELECT destination, status, COUNT(*) FROM deliveries GROUP BY 1, 2 ORDER BY 1, 2"
    )
    assert statuses == [
        ("meta", "dead", 30),
        ("meta", "sent", 270),
        ("tiktok", "dead", 30),
        ("tiktok", "sent", 270),
    ]
    for vendor, counts in accepted.items():
        assert len(counts) == 270, vendor
        twice = sorted(i for i, n in counts.items() if n > 1)
        assert twice == [], f"{vendor}: {len(twice)} good events accepted twice"
    # Control: the isolation took many refused requests, first of all the whole batch.
    assert len(fake_platform.requests) > 200
    assert len(fake_platform.requests[0].json()["data"]) == 300


GA4 = """
destinations:
  ga4:
    type: ga4_mp
    measurement_id: G-ABC123
    api_secret: S
    endpoint: {url}
    timeout_ms: 30000
    batch: {{max_wait_ms: 0}}
sources:
  server: {{send_to: [ga4], api_keys: [test-api-key-0001]}}
"""


async def test_each_ga4_request_is_recorded_as_it_completes_and_a_stop_returns_the_rest(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    """25 visitors are 25 GA4 requests in one claimed batch. 13 answer, 12 hang: on stop the
    13 are `sent` (not sent again after a restart) and the 12 are back in the queue, due now."""
    hang = asyncio.Event()
    answered: list[str] = []

    async def ga4(r: Recorded) -> web.Response:
        client = r.json()["client_id"]
        if int(client.split(".")[0]) >= 13:
            await hang.wait()
        answered.append(client)
        return web.Response(status=204)

    fake_platform.default = ga4
    cfg = make_config(GA4.format(url=fake_platform.url))
    gw = await start_gateway(cfg)
    await post_all(gw, [shop_events("v", 25, visitors=True)])
    await eventually(lambda: len(answered) == 13, within=20)

    async def recorded() -> bool:
        rows = await gw.rows("SELECT COUNT(*) FROM deliveries WHERE status = 'sent'")
        return rows[0][0] == 13

    # Recorded as each request completed, while the batch's other requests are on the wire.
    await eventually(recorded, within=10)
    stopped = time.monotonic()
    await gw.app[WORKERS]["ga4"].stop(0.5)
    assert time.monotonic() - stopped < 3
    rows = await gw.rows(
        "SELECT status, leased_until, COUNT(*) FROM deliveries GROUP BY 1, 2 ORDER BY 1"
    )
    assert rows == [("queued", 0.0, 12), ("sent", 0.0, 13)]
    assert len(answered) == 13  # control: the 12 were still hanging when the worker stopped
    hang.set()


async def test_a_stop_gives_every_slow_destination_one_grace_together(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, sqlite_only: None
) -> None:
    """Three destinations whose platforms hang: the workers used to stop one after another,
    6 s each (21-23 s in all, past Docker's 10 s); now they share one grace, and every row still
    on the wire at its end is back in the queue."""
    hang = asyncio.Event()
    on_the_wire: set[str] = set()

    async def slow(r: Recorded) -> web.Response:
        on_the_wire.add(r.path.split("/")[1])
        await hang.wait()
        return web.Response(status=204)

    fake_platform.default = slow
    url = fake_platform.url
    cfg = make_config(
        f"""
destinations:
  meta: {{type: meta_capi, pixel_id: "1234567890", access_token: T, endpoint: {url}/meta,
          timeout_ms: 60000, batch: {{max_wait_ms: 0}}}}
  tiktok: {{type: tiktok_events, pixel_code: CABC123, access_token: T, endpoint: {url}/tiktok,
            timeout_ms: 60000, batch: {{max_wait_ms: 0}}}}
  ga4: {{type: ga4_mp, measurement_id: G-ABC123, api_secret: S, endpoint: {url}/ga4,
         timeout_ms: 60000, batch: {{max_wait_ms: 0}}}}
sources:
  server: {{send_to: [meta, tiktok, ga4], api_keys: [test-api-key-0001]}}
"""
    )
    gw = await start_gateway(cfg)
    await post_all(gw, [shop_events("s", 3)])
    await eventually(lambda: on_the_wire == {"meta", "tiktok", "ga4"}, within=10)
    db = cfg.storage.path
    stopping = time.monotonic()
    await gw.client.close()  # the app's cleanup, as on SIGTERM
    took = time.monotonic() - stopping
    hang.set()
    print(f"\nstop with three hanging destinations: {took:.1f} s")
    assert took < 8.0, f"stopping took {took:.1f} s"
    with sqlite3.connect(db) as conn:
        rows = list(
            conn.execute("SELECT status, leased_until, COUNT(*) FROM deliveries GROUP BY 1, 2")
        )
    assert rows == [("queued", 0.0, 9)]  # all back in the queue, due at once


def outage_config(url: str, retry: str) -> str:
    return f"""
destinations:
  meta:
    type: meta_capi
    pixel_id: "1234567890"
    access_token: TOKEN
    endpoint: {url}
    batch: {{max_events: 10, max_wait_ms: 0}}
    retry: {retry}
sources:
  server: {{send_to: [meta], api_keys: [test-api-key-0001]}}
"""


def down_for(seconds: float) -> Callable[[Recorded], web.Response]:
    """A platform that answers 503 until `seconds` after its first request, then accepts."""
    first: list[float] = []

    def reply(r: Recorded) -> web.Response:
        first.append(first[0] if first else time.monotonic())
        if time.monotonic() - first[0] < seconds:
            return web.Response(status=503, text="upstream down")
        return web.json_response({"events_received": len(r.json()["data"])})

    return reply


async def test_an_outage_longer_than_eight_attempts_loses_no_event(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    """Retries run for a time (4 h by default), not a count: 8 attempts used to end in
    seconds, so an outage of 30 s left half the events dead. Scaled down: backoff of 20-200 ms,
    and a platform that stays down for every event until it has refused it 12 times."""
    seen: Counter[str] = Counter()

    def reply(r: Recorded) -> web.Response:
        ids = [e["event_id"] for e in r.json()["data"]]
        seen.update(ids)
        if any(seen[i] <= 12 for i in ids):
            return web.Response(status=503, text="upstream down")
        return web.json_response({"events_received": len(r.json()["data"])})

    fake_platform.default = reply
    gw = await start_gateway(
        make_config(outage_config(fake_platform.url, "{base_ms: 20, max_ms: 200}"))
    )
    await post_all(gw, [shop_events("o", 30)])

    async def settled() -> bool:
        rows = await gw.rows("SELECT COUNT(*) FROM deliveries WHERE status IN ('sent', 'dead')")
        return rows[0][0] == 30

    await eventually(settled, within=60)
    rows = await gw.rows("SELECT status, MIN(attempts) FROM deliveries GROUP BY 1")
    assert [r[0] for r in rows] == ["sent"]
    assert rows[0][1] > 8  # control: every event outlasted the old eight attempts


async def test_retries_stop_when_the_time_budget_is_spent(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = down_for(3600)
    gw = await start_gateway(
        make_config(
            outage_config(fake_platform.url, "{base_ms: 20, max_ms: 100, give_up_after: 2s}")
        )
    )
    await post_all(gw, [shop_events("b", 3)])

    async def settled() -> bool:
        rows = await gw.rows("SELECT COUNT(*) FROM deliveries WHERE status = 'dead'")
        return rows[0][0] == 3

    started = time.monotonic()
    await eventually(settled, within=15)
    assert time.monotonic() - started > 1.5  # control: it did retry for the budget
    (message, attempts), *_ = await gw.rows("SELECT message, attempts FROM deliveries")
    assert message.startswith("gave up after 2s and "), message
    assert "upstream down" in message
    assert attempts > 8


async def test_max_attempts_still_ends_retries_first_when_set(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = down_for(3600)
    gw = await start_gateway(
        make_config(outage_config(fake_platform.url, "{base_ms: 10, max_ms: 20, max_attempts: 3}"))
    )
    await post_all(gw, [shop_events("m", 1)])

    async def settled() -> bool:
        return await gw.rows("SELECT status, attempts FROM deliveries") == [("dead", 3)]

    await eventually(settled, within=10)
    assert len(fake_platform.requests) == 3
