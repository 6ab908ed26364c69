"""Personal data on the side paths: page URLs, `forward`, `dry_run` (contract §7, §8).

Each test searches the real SQLite files (main, -wal, -shm) and what the fake platforms got,
beside a control that proves the search would have found the value.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from gateway.config import Config
from tests.conftest import FakePlatform, Gateway, Recorded, eventually

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]

UA = "Mozilla/5.0 (X11)"
EMAIL = "jane@example.com"
LEAKS = (EMAIL.encode(), b"jane%40example.com", b"jane%2540example.com")


def _answer(recorded: Recorded) -> web.Response:
    if recorded.path.startswith("/open_api/"):
        return web.json_response({"code": 0, "message": "OK"})
    if recorded.path.startswith(("/mp/", "/g/")):
        return web.Response(status=204)
    if "/events" in recorded.path:
        return web.json_response({"events_received": 1})
    return web.Response(status=200, body=b"GIF89a", content_type="image/gif")


def _config(make_config: MakeConfig, endpoint: str, extra: str = "") -> Config:
    return make_config(
        f"""
consent: {{default: granted, honor_gpc: true}}
destinations:
  meta:
    type: meta_capi
    pixel_id: "1234567890"
    access_token: TOKEN
    endpoint: {endpoint}
    on_denied: limited
    batch: {{max_wait_ms: 0}}
  ga4:
    type: ga4_mp
    measurement_id: G-ABC123
    api_secret: SECRET
    endpoint: {endpoint}
    batch: {{max_wait_ms: 0}}
  tiktok:
    type: tiktok_events
    pixel_code: CABC123
    access_token: TT
    endpoint: {endpoint}
    batch: {{max_wait_ms: 0}}
  meta_forward: {{type: forward, vendor: meta, endpoint: "{endpoint}", batch: {{max_wait_ms: 0}}}}
  ga4_forward: {{type: forward, vendor: ga4, endpoint: "{endpoint}", batch: {{max_wait_ms: 0}}}}
sources:
  meta_pixel: {{send_to: [meta, meta_forward]}}
  ga4: {{send_to: [ga4, ga4_forward]}}
  tiktok_pixel: {{send_to: [tiktok]}}
  server: {{send_to: [meta, ga4], api_keys: [test-api-key-0001]}}
{extra}
"""
    )


def on_disk(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))


def _sent(platform: FakePlatform) -> bytes:
    return b"".join(
        r.path.encode() + b"?" + "&".join(f"{k}={v}" for k, v in r.query.items()).encode() + r.body
        for r in platform.requests
    )


async def _settle(gw: Gateway, count: int) -> None:
    async def done() -> bool:
        rows = await gw.rows("SELECT status FROM deliveries")
        return len(rows) >= count and all(r[0] not in ("queued", "failed") for r in rows)

    await eventually(done, within=15)


async def test_an_email_in_a_page_url_is_neither_stored_nor_sent(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, db_path: Path
) -> None:
    fake_platform.default = _answer
    gw = await start_gateway(_config(make_config, fake_platform.url))
    page = "https%3A%2F%2Fshop.example%2Fthanks%3Femail%3Djane%40example.com%26sku%3D7"
    ts = int(time.time() * 1000)
    meta = await gw.client.get(
        f"/tr/?id=1234567890&ev=PageView&eid=m-1&ts={ts}&dl={page}&rl={page}",
        headers={"User-Agent": UA},
    )
    ga4 = await gw.client.get(
        f"/g/collect?v=2&tid=G-ABC123&cid=1.2&en=page_view&ep.event_id=g-1&dl={page}&dr={page}",
        headers={"User-Agent": UA},
    )
    tiktok = await gw.client.post(
        "/api/v2/pixel",
        json={
            "event": "Pageview",
            "event_id": "t-1",
            "context": {
                "pixel": {"code": "CABC123"},
                "page": {"url": f"https://shop.example/p?tel=%2B14155550100&e={EMAIL}&sku=7"},
            },
        },
        headers={"User-Agent": UA},
    )
    server = await gw.client.post(
        "/v1/events",
        json={
            "events": [
                {
                    "event_id": "s-1",
                    "event_name": "purchase",
                    "event_time": int(time.time()) - 5,
                    "event_source_url": f"https://shop.example/thanks?customer_email={EMAIL}"
                    "&sku=7#/done?phone=%2B14155550100",
                    "referrer": f"https://shop.example/cart?user%5Bemail%5D={EMAIL}&sku=7",
                    "user": {
                        "email": "x@y.example",
                        "client_ip": "203.0.113.9",
                        "user_agent": UA,
                        "ga_client_id": "1.2",
                    },
                    "custom": {"value": "10", "currency": "EUR"},
                    "consent": {"ad_user_data": "denied"},
                }
            ]
        },
        headers={"Authorization": "Bearer test-api-key-0001"},
    )
    assert (meta.status, ga4.status, tiktok.status, server.status) == (200, 204, 200, 202)
    await _settle(gw, 7)  # every row final: whatever was to be sent has been
    await gw.client.close()

    sent, disk = _sent(fake_platform), on_disk(db_path)
    for needle in (*LEAKS, b"4155550100"):
        assert needle not in sent, needle
        assert needle not in disk, needle
    # The controls: every page URL arrived, the rest of it intact.
    assert sent.count(b"sku") >= 7
    meta_hit = next(r for r in fake_platform.requests if r.path == "/tr/")
    assert meta_hit.query["dl"] == "https://shop.example/thanks?sku=7"
    ga4_hit = next(r for r in fake_platform.requests if r.path == "/g/collect")
    assert ga4_hit.query["dr"] == "https://shop.example/thanks?sku=7"


async def test_forward_keeps_the_query_bytes_and_obeys_redact_url_params(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _answer
    rules = "rules:\n  - redact_url_params: [token]\n"
    gw = await start_gateway(_config(make_config, fake_platform.url, rules))
    page = "https%3A%2F%2Fshop.example%2Fs%3Fq%3Da%2526b%26token%3Dsecret1"
    query = f"v=2&tid=G-ABC123&cid=1.2&en=page_view&ep.event_id=g-2&ep.q=a%26b&dl={page}"
    response = await gw.client.get(
        f"/g/collect?{query}", headers={"User-Agent": UA, "Accept-Language": "de-CH,de;q=0.9"}
    )
    assert response.status == 204
    await eventually(lambda: any(r.path == "/g/collect" for r in fake_platform.requests), within=15)
    hit = next(r for r in fake_platform.requests if r.path == "/g/collect")
    raw = hit.raw_query
    assert "ep.q=a%26b" in raw  # not `ep.q=a&b`: the browser's encoding, kept
    assert "secret1" not in raw
    assert "token" not in raw
    assert hit.query["dl"] == "https://shop.example/s?q=a%26b"
    assert hit.headers["Accept-Language"] == "de-CH,de;q=0.9"
    assert hit.headers["User-Agent"] == UA


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()


async def test_under_gpc_the_ga4_forward_carries_no_hashed_identifier(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _answer
    gw = await start_gateway(_config(make_config, fake_platform.url))
    em = f"tv.1~em.{_b64(EMAIL)}"
    for eid, headers in (("gpc", {"Sec-GPC": "1"}), ("no-gpc", {})):
        response = await gw.client.get(
            f"/g/collect?v=2&tid=G-ABC123&cid=1.2&en=login&ep.event_id={eid}&gcs=G111"
            f"&em={em}&uid=cust-42&dl=https%3A%2F%2Fshop.example%2F",
            headers={"User-Agent": UA, **headers},
        )
        assert response.status == 204
    await eventually(
        lambda: sum(r.path == "/g/collect" for r in fake_platform.requests) == 2, within=15
    )
    hits = {r.query["ep.event_id"]: r for r in fake_platform.requests if r.path == "/g/collect"}
    assert "em" not in hits["gpc"].query
    assert "uid" not in hits["gpc"].query
    # The control: without GPC the hashed email and user ID go on.
    assert hits["no-gpc"].query["em"] == em
    assert hits["no-gpc"].query["uid"] == hashlib.sha256(b"cust-42").hexdigest()


async def test_a_consent_mode_ping_is_forwarded_as_gtag_would_send_it(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _answer
    blocked = """
  blocked_forward:
    type: forward
    vendor: ga4
    endpoint: {url}
    requires: [analytics_storage]
    batch: {{max_wait_ms: 0}}
"""
    text = f"""
consent: {{default: granted}}
destinations:
  ga4_forward:
    type: forward
    vendor: ga4
    endpoint: {fake_platform.url}
    batch: {{max_wait_ms: 0}}
{blocked.format(url=fake_platform.url)}
sources:
  ga4: {{send_to: [ga4_forward, blocked_forward]}}
"""
    gw = await start_gateway(make_config(text))
    em = f"tv.1~em.{_b64(EMAIL)}"
    response = await gw.client.get(
        f"/g/collect?v=2&tid=G-ABC123&cid=1.2&en=page_view&ep.event_id=p-1&gcs=G100&em={em}"
        "&dl=https%3A%2F%2Fshop.example%2F",
        headers={"User-Agent": UA},
    )
    assert response.status == 204
    await _settle(gw, 2)
    rows = dict(await gw.rows("SELECT destination, status FROM deliveries"))
    assert rows == {"ga4_forward": "sent", "blocked_forward": "dropped_consent"}
    (hit,) = [r for r in fake_platform.requests if r.path == "/g/collect"]
    assert hit.query["gcs"] == "G100"
    assert "em" not in hit.query  # gcs=G100 denies ad_storage, and ad_user_data with it


async def test_tiktok_gets_limited_data_use_where_meta_would(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _answer
    text = f"""
consent: {{default: granted, honor_gpc: true}}
destinations:
  tiktok:
    type: tiktok_events
    pixel_code: CABC123
    access_token: TT
    endpoint: {fake_platform.url}
    on_denied: limited
    batch: {{max_wait_ms: 0}}
sources:
  tiktok_pixel: {{send_to: [tiktok]}}
"""
    gw = await start_gateway(make_config(text))
    for eid, headers in (("gpc", {"Sec-GPC": "1"}), ("plain", {})):
        body = {"event": "Pageview", "event_id": eid, "context": {"page": {"url": "https://s.x/"}}}
        response = await gw.client.post(
            "/api/v2/pixel", json=body, headers={"User-Agent": UA, **headers}
        )
        assert response.status == 200
    await _settle(gw, 2)  # the two may share one request
    events = {e["event_id"]: e for r in fake_platform.requests for e in r.json()["data"]}
    assert events["gpc"]["limited_data_use"] is True
    assert "limited_data_use" not in events["plain"]  # the control


async def test_dry_run_follows_consent_and_keeps_no_ip_or_user_agent(
    start_gateway: Start, make_config: MakeConfig, db_path: Path
) -> None:
    text = """
consent: {default: granted}
destinations:
  dry_run: {type: dry_run}
sources:
  server: {send_to: [dry_run], api_keys: [test-api-key-0001]}
"""
    gw = await start_gateway(make_config(text))
    denied = dict.fromkeys(
        ("ad_storage", "analytics_storage", "ad_user_data", "ad_personalization"), "denied"
    )

    def event(event_id: str, email: str, consent: dict[str, str]) -> dict[str, object]:
        return {
            "event_id": event_id,
            "event_name": "purchase",
            "event_time": int(time.time()) - 5,
            "event_source_url": "https://shop.example/thanks",
            "user": {
                "email": email,
                "client_ip": "203.0.113.77",
                "user_agent": "Agent/7.7",
                "fbp": f"fb.1.1795000000000.{len(event_id)}777",
            },
            "custom": {"value": "10", "currency": "EUR"},
            "consent": consent,
        }

    response = await gw.client.post(
        "/v1/events",
        json={
            "events": [
                event("o-denied", "denied.person@example.com", denied),
                event("o-granted", "granted.person@example.com", {}),
            ]
        },
        headers={"Authorization": "Bearer test-api-key-0001"},
    )
    assert response.status == 202
    await _settle(gw, 2)
    rows = await gw.rows("SELECT event_id, status, payload FROM deliveries ORDER BY id")
    await gw.client.close()

    assert [r[:2] for r in rows] == [("o-denied", "dropped_consent"), ("o-granted", "sent")]
    assert rows[0][2] is None  # a denied event never gets a payload
    disk = on_disk(db_path)
    denied_hash = hashlib.sha256(b"denied.person@example.com").hexdigest()
    for needle in (denied_hash, "203.0.113.77", "Agent/7.7", "fb.1.1795000000000.8777"):
        assert needle.encode() not in disk, needle
    # The control: the granted twin's record is there, hashed, and without its IP or agent.
    assert hashlib.sha256(b"granted.person@example.com").hexdigest().encode() in rows[1][2]
    assert b"fb.1.1795000000000.9777" in rows[1][2]


async def test_item_parameters_and_free_text_pass_the_same_gate(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, db_path: Path
) -> None:
    fake_platform.default = _answer
    text = f"""
consent: {{default: granted}}
destinations:
  ga4:
    type: ga4_mp
    measurement_id: G-ABC123
    api_secret: SECRET
    endpoint: {fake_platform.url}
    on_denied: limited
    batch: {{max_wait_ms: 0}}
  tiktok:
    type: tiktok_events
    pixel_code: CABC123
    access_token: TT
    endpoint: {fake_platform.url}
    batch: {{max_wait_ms: 0}}
  audit: {{type: dry_run, format: ga4_mp, requires: []}}
  ga4_forward:
    type: forward
    vendor: ga4
    endpoint: {fake_platform.url}
    batch: {{max_wait_ms: 0}}
sources:
  ga4: {{send_to: [ga4, audit, ga4_forward]}}
  tiktok_pixel: {{send_to: [tiktok]}}
  server: {{send_to: [ga4, tiktok, audit], api_keys: [test-api-key-0001]}}
"""
    phone = "+44 20 7946 0958"
    gw = await start_gateway(make_config(text))
    ga4 = await gw.client.get(
        "/g/collect?v=2&tid=G-ABC123&cid=1.2&en=purchase&ep.event_id=g-1&gcs=G100&cu=EUR"
        "&pr1=ids1~nmMug~k0email~v0only.in.item%40example.com~k1size~v1L"
        "&pr2=ids2~nmfor%20jane%40example.com&dt=Order%20of%20jane%40example.com"
        "&dl=https%3A%2F%2Fshop.example%2F",
        headers={"User-Agent": UA},
    )
    tiktok = await gw.client.post(
        "/api/v2/pixel",
        json={
            "event": "AddToCart",
            "event_id": "t-1",
            "context": {"pixel": {"code": "CABC123"}, "page": {"url": "https://shop.example/"}},
            "properties": {
                "contents": [{"content_id": "s3", "content_name": f"gift for {EMAIL}"}],
                "description": f"call {phone}",
            },
        },
        headers={"User-Agent": UA},
    )
    server = await gw.client.post(
        "/v1/events",
        json={
            "events": [
                {
                    "event_id": "s-1",
                    "event_name": "purchase",
                    "event_time": int(time.time()) - 5,
                    "event_source_url": "https://shop.example/thanks",
                    "user": {"ga_client_id": "1.2", "user_agent": UA},
                    "custom": {
                        "value": "10",
                        "currency": "EUR",
                        "page_title": f"Thanks {EMAIL}",
                        "description": f"ship to {phone}",
                        "contents": [{"id": "s4", "name": f"engraved {EMAIL}", "quantity": 1}],
                    },
                }
            ]
        },
        headers={"Authorization": "Bearer test-api-key-0001"},
    )
    assert (ga4.status, tiktok.status, server.status) == (204, 200, 202)
    await _settle(gw, 7)
    await gw.client.close()

    sent, disk = _sent(fake_platform), on_disk(db_path)
    for needle in (*LEAKS, b"only.in.item", phone.encode(), b"7946"):
        assert needle not in sent, needle
        assert needle not in disk, needle
    # The controls: the items and the other item parameter went out, and dry_run kept them.
    for needle in (b"Mug", b"s1", b"s2", b"s3", b"s4", b"size"):
        assert needle in sent, needle
        assert needle in disk or needle == b"s3", needle  # s3 only went to TikTok: erased
