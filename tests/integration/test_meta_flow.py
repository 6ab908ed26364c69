"""A Meta pixel hit, end to end: gateway on a socket, SQLite on disk, a fake Meta on 127.0.0.1."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.config import Config
from tests.conftest import GIF_PREFIX, FakePlatform, Gateway, eventually

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]


def meta_config(make_config: MakeConfig, endpoint: str) -> Config:
    return make_config(
        f"""
trusted_proxies: [127.0.0.1/32]
destinations:
  meta:
    type: meta_capi
    pixel_id: "1234567890"
    access_token: TOKEN-abc
    endpoint: {endpoint}
    batch: {{max_wait_ms: 0}}
    retry: {{base_ms: 10, max_ms: 20}}
sources:
  meta_pixel: {{send_to: [meta]}}
"""
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


async def test_get_hit_becomes_a_conversions_api_event(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    gw = await start_gateway(meta_config(make_config, fake_platform.url))
    ts = _now_ms()
    target = (
        f"/tr/?id=1234567890&ev=AddToCart&eid=cart-42&ts={ts}"
        "&dl=https%3A%2F%2Fshop.example%2Fp%2F264&rl=https%3A%2F%2Fshop.example%2F"
        "&cd[content_ids]=%5B%22264%22%5D&cd[value]=79.5&cd[currency]=EUR"
        f"&ud[em]={'b' * 64}&v=2.9.205&rqm=GET"
    )
    response = await gw.client.get(
        target,
        headers={
            "User-Agent": "Mozilla/5.0 (X11)",
            "X-Forwarded-For": "198.51.100.1, 203.0.113.9",
            "Cookie": "_fbp=fb.1.1748957013743.1524724929324944; _fbc=fb.1.1748957013743.IwAR",
        },
    )
    assert response.status == 200
    assert response.content_type == "image/gif"
    assert (await response.read()).startswith(GIF_PREFIX)

    await eventually(lambda: len(fake_platform.requests) == 1)
    sent = fake_platform.requests[0]
    assert sent.method == "POST"
    assert sent.path == "/v25.0/1234567890/events"
    body = sent.json()
    assert body["access_token"] == "TOKEN-abc"
    (event,) = body["data"]
    assert event == {
        "event_name": "AddToCart",
        "event_time": ts // 1000,
        "event_id": "cart-42",
        "action_source": "website",
        "event_source_url": "https://shop.example/p/264",
        "referrer_url": "https://shop.example/",
        "user_data": {
            "em": "b" * 64,
            # The peer is a trusted proxy: the right-most untrusted XFF hop is the client.
            "client_ip_address": "203.0.113.9",
            "client_user_agent": "Mozilla/5.0 (X11)",
            "fbp": "fb.1.1748957013743.1524724929324944",
            "fbc": "fb.1.1748957013743.IwAR",
        },
        "custom_data": {"value": 79.5, "currency": "EUR", "content_ids": ["264"]},
    }

    async def sent_row() -> bool:
        rows = await gw.rows("SELECT status, attempts, http_status, payload FROM deliveries")
        return rows == [("sent", 1, 200, None)]

    await eventually(sent_row)


async def test_form_post_and_multipart_beacon_are_delivered(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    gw = await start_gateway(meta_config(make_config, fake_platform.url))
    ts = _now_ms()
    form = (
        f"id=1234567890&ev=Lead&eid=lead-1&ts={ts}&dl=https%3A%2F%2Fshop.example%2Fform"
        f"&ud%5Bem%5D={'c' * 64}&rqm=formPOST"
    )
    r1 = await gw.client.post(
        "/tr/",
        data=form,
        headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "UA"},
    )
    assert r1.status == 200
    assert await r1.read() == b""
    boundary = "XyZ"
    parts = {
        "id": "1234567890",
        "ev": "Contact",
        "eid": "contact-1",
        "ts": str(ts),
        "dl": "https://shop.example/c",
    }
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in parts.items()
        )
        + f"--{boundary}--\r\n".encode()
    )
    r2 = await gw.client.post(
        "/tr",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "User-Agent": "UA"},
    )
    assert r2.status == 200

    def delivered() -> set[str]:
        return {e["event_id"] for r in fake_platform.requests for e in r.json()["data"]}

    await eventually(lambda: delivered() == {"lead-1", "contact-1"})


async def test_the_answer_waits_for_the_commit(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, db_path: object
) -> None:
    gw = await start_gateway(meta_config(make_config, fake_platform.url))
    target = f"/tr?id=1234567890&ev=PageView&eid=pv-1&ts={_now_ms()}&dl=https%3A%2F%2Fs.example%2F"

    # Control: with the writer free, the answer is quick.
    started = time.monotonic()
    assert (await gw.client.get(target, headers={"User-Agent": "UA"})).status == 200
    quick = time.monotonic() - started
    assert quick < 0.5

    # Hold the writer for 1.2 s: the next hit's answer must wait for its own commit.
    async def slow(conn: object) -> None:
        await asyncio.sleep(1.2)

    blocker = asyncio.create_task(gw.store.write(slow))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    response = await gw.client.get(target.replace("pv-1", "pv-2"), headers={"User-Agent": "UA"})
    waited = time.monotonic() - started
    assert response.status == 200
    assert waited >= 1.0
    # And once answered, the event is on disk for any other reader.
    with sqlite3.connect(str(db_path)) as conn:
        ids = {row[0] for row in conn.execute("SELECT event_id FROM events")}
    assert "pv-2" in ids
    await blocker


async def test_a_failed_send_is_retried_not_lost(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.then(lambda r: web.Response(status=503, text="down"))
    gw = await start_gateway(meta_config(make_config, fake_platform.url))
    target = f"/tr?id=1234567890&ev=PageView&eid=pv-9&ts={_now_ms()}&dl=https%3A%2F%2Fs.example%2F"
    assert (await gw.client.get(target, headers={"User-Agent": "UA"})).status == 200

    async def sent() -> bool:
        rows = await gw.rows("SELECT status, attempts, http_status FROM deliveries")
        return rows == [("sent", 2, 200)]

    await eventually(sent)
    # The fault fired: the first request got the 503, the second went through.
    assert len(fake_platform.requests) == 2
    assert fake_platform.requests[0].json()["data"][0]["event_id"] == "pv-9"


async def test_bad_hits_and_a_broken_store_still_get_the_normal_answer(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    gw = await start_gateway(meta_config(make_config, fake_platform.url))
    for target in ("/tr?ev=PageView", "/tr?id=1&ev=X&ts=zzz&cd[value]=NaN&cd[contents]=[{", "/tr/"):
        response = await gw.client.get(target)
        assert response.status == 200
        assert (await response.read()).startswith(GIF_PREFIX)
    garbage = await gw.client.post(
        "/tr", data=b"\xff\xfe--", headers={"Content-Type": "multipart/form-data; boundary=q"}
    )
    assert garbage.status == 200

    metrics = await (await gw.client.get("/metrics")).text()
    assert 'tag_gateway_hits_total{outcome="store_error",source="meta_pixel"}' not in metrics
    await gw.store.close()  # the fault: storage is gone
    response = await gw.client.get("/tr?id=1234567890&ev=PageView&eid=x")
    assert response.status == 200
    assert (await response.read()).startswith(GIF_PREFIX)
    metrics = await (await gw.client.get("/metrics")).text()
    assert 'tag_gateway_hits_total{outcome="store_error",source="meta_pixel"} 1.0' in metrics
