"""Nothing is sent, or written, without a legal basis (docs/consent.md, docs/operations.md §5).

Each test runs a denied event beside a granted twin: the twin proves the path works and that
the search for leaked data would have found it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from aiohttp import web

from gateway.config import Config
from gateway.destinations.meta_capi import meta_user_data
from gateway.event import User
from tests.conftest import FakePlatform, Gateway, eventually

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]

DENIED_EMAIL = "Denied.Person@Example.com"
GRANTED_EMAIL = "Granted.Person@Example.com"


def config(endpoint: str, on_denied: str = "drop", extra: str = "") -> str:
    return f"""
consent: {{default: granted, honor_gpc: true}}
destinations:
  meta:
    type: meta_capi
    pixel_id: "1234567890"
    access_token: TOKEN
    endpoint: {endpoint}
    on_denied: {on_denied}
    batch: {{max_wait_ms: 0}}
sources:
  meta_pixel: {{send_to: [meta]}}
  server: {{send_to: [meta], api_keys: [test-api-key-0001]}}
{extra}
"""


def server_event(event_id: str, email: str, ad_user_data: str) -> dict[str, object]:
    return {
        "event_id": event_id,
        "event_name": "purchase",
        "event_time": int(time.time()) - 5,
        "event_source_url": "https://shop.example/thanks",
        "user": {
            "email": email,
            "phone": "+1 (415) 555-0100",
            "client_ip": "203.0.113.77",
            "user_agent": "Mozilla/5.0",
        },
        "custom": {"value": "10", "currency": "EUR"},
        "consent": {"ad_storage": "granted", "ad_user_data": ad_user_data},
    }


def on_disk(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))


async def test_a_denied_event_leaves_no_personal_data_anywhere(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, db_path: Path
) -> None:
    denied_hash = meta_user_data(User(email=DENIED_EMAIL))["em"]
    granted_hash = meta_user_data(User(email=GRANTED_EMAIL))["em"]
    with structlog.testing.capture_logs() as logs:
        gw = await start_gateway(make_config(config(fake_platform.url)))
        response = await gw.client.post(
            "/v1/events",
            json={
                "events": [
                    server_event("ord-denied", DENIED_EMAIL, "denied"),
                    server_event("ord-granted", GRANTED_EMAIL, "granted"),
                ]
            },
            headers={"Authorization": "Bearer test-api-key-0001"},
        )
        assert response.status == 202

        async def settled() -> bool:
            rows = await gw.rows("SELECT event_id, status, message FROM deliveries ORDER BY id")
            return [r[1] for r in rows] == ["dropped_consent", "sent"]

        await eventually(settled)
        await gw.client.close()  # checkpoint nothing away: read the files as they are

    delivered = [e["event_id"] for r in fake_platform.requests for e in r.json()["data"]]
    assert delivered == ["ord-granted"]
    disk = on_disk(db_path)
    log_text = repr(logs)
    for needle in (DENIED_EMAIL, DENIED_EMAIL.lower(), denied_hash, "203.0.113.77"):
        assert needle.encode() not in disk, needle
        assert needle not in log_text, needle
    # The controls: the files searched do hold this run's rows, and the granted twin went out
    # with its hash (its plaintext was never written either).
    assert b"ord-denied" in disk
    assert fake_platform.requests[0].json()["data"][0]["user_data"]["em"] == granted_hash
    assert GRANTED_EMAIL.lower().encode() not in disk


async def test_the_drop_names_the_purpose_and_the_signal(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    gw = await start_gateway(make_config(config(fake_platform.url)))
    await gw.client.post(
        "/v1/events",
        json={"events": [server_event("o-1", DENIED_EMAIL, "denied")]},
        headers={"Authorization": "Bearer test-api-key-0001"},
    )
    ((message,),) = await gw.rows("SELECT message FROM deliveries")
    assert message == "consent: ad_user_data denied (server)"


async def test_gpc_denies_a_pixel_hit(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    gw = await start_gateway(make_config(config(fake_platform.url)))
    ts = int(time.time() * 1000)
    for eid, headers in (("gpc", {"Sec-GPC": "1"}), ("no-gpc", {})):
        response = await gw.client.get(
            f"/tr?id=1234567890&ev=PageView&eid={eid}&ts={ts}&dl=https%3A%2F%2Fs.example%2F",
            headers={"User-Agent": "UA", **headers},
        )
        assert response.status == 200  # the page never notices
    await eventually(lambda: len(fake_platform.requests) == 1)
    rows = await gw.rows("SELECT event_id, status, message FROM deliveries ORDER BY id")
    assert rows[0] == (
        "gpc",
        "dropped_consent",
        "consent: ad_storage denied (gpc), ad_user_data denied (gpc)",
    )
    assert fake_platform.requests[0].json()["data"][0]["event_id"] == "no-gpc"


async def test_limited_sends_the_event_without_identifiers(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    gw = await start_gateway(make_config(config(fake_platform.url, on_denied="limited")))
    await gw.client.post(
        "/v1/events",
        json={"events": [server_event("o-lim", DENIED_EMAIL, "denied")]},
        headers={"Authorization": "Bearer test-api-key-0001"},
    )
    await eventually(lambda: len(fake_platform.requests) == 1)
    (event,) = fake_platform.requests[0].json()["data"]
    assert event["user_data"] == {
        "client_ip_address": "203.0.113.0",
        "client_user_agent": "Mozilla/5.0",
    }
    assert event["data_processing_options"] == ["LDU"]
    assert (event["data_processing_options_country"], event["data_processing_options_state"]) == (
        0,
        0,
    )
    assert event["custom_data"]["value"] == 10  # business data stays


async def test_rules_drop_and_redact(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    rules = """
rules:
  - redact_url_params: [email, token]
  - drop_events: {user_agent_matches: "(?i)bot|crawler"}
"""
    gw = await start_gateway(make_config(config(fake_platform.url, extra=rules)))
    ts = int(time.time() * 1000)
    url = "https%3A%2F%2Fs.example%2Fp%3Femail%3Dj%40x.com%26sku%3D7%26token%3Dabc"
    for eid, ua in (("bot", "Googlebot/2.1"), ("human", "Mozilla/5.0")):
        await gw.client.get(
            f"/tr?id=1234567890&ev=PageView&eid={eid}&ts={ts}&dl={url}",
            headers={"User-Agent": ua},
        )
    await eventually(lambda: len(fake_platform.requests) == 1)
    (event,) = fake_platform.requests[0].json()["data"]
    assert event["event_id"] == "human"
    assert event["event_source_url"] == "https://s.example/p?sku=7"
    rows = await gw.rows("SELECT event_id, status, message FROM deliveries ORDER BY id")
    assert rows[0][:2] == ("bot", "dropped_rule")
    assert rows[0][2].startswith("rules[1]")


async def test_personal_data_in_free_form_fields_is_never_stored_or_sent(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, db_path: Path
) -> None:
    fake_platform.default = lambda r: web.Response(status=503)  # rows stay, payloads with them
    cfg = make_config(
        f"""
consent: {{default: granted}}
destinations:
  ga4:
    type: ga4_mp
    measurement_id: G-ABC123
    api_secret: GA4-SECRET
    endpoint: {fake_platform.url}
    batch: {{max_wait_ms: 0}}
sources:
  ga4: {{send_to: [ga4]}}
  server: {{send_to: [ga4], api_keys: [test-api-key-0001]}}
"""
    )
    with structlog.testing.capture_logs() as logs:
        gw = await start_gateway(cfg)
        hit = await gw.client.get(
            "/g/collect?v=2&tid=G-ABC123&cid=1489945657.1691089601&_p=1&en=sign_up"
            "&ep.event_id=ga-1&ep.email=jane%40example.com&up.phone=4155550100"
            "&ep.coupon=SUMMER&dl=https%3A%2F%2Fshop.example%2F",
            headers={"User-Agent": "UA"},
        )
        assert hit.status == 204
        server = await gw.client.post(
            "/v1/events",
            json={
                "events": [
                    {
                        "event_id": "ord-1",
                        "event_name": "purchase",
                        "event_time": int(time.time()) - 5,
                        "event_source_url": "https://shop.example/thanks",
                        "user": {"ga_client_id": "123.456"},
                        "custom": {
                            "value": "10",
                            "currency": "EUR",
                            "customer_email": "jane@example.com",
                            "note": "ship to jane@example.com",
                            "coupon": "SUMMER",
                            "search_string": "orders of jane@example.com",
                        },
                    }
                ]
            },
            headers={"Authorization": "Bearer test-api-key-0001"},
        )
        assert server.status == 202, await server.text()
        assert (await server.json())["accepted"] == 1, await server.text()
        await eventually(lambda: len(fake_platform.requests) >= 2)
        payloads = await gw.rows("SELECT event_id, payload FROM deliveries ORDER BY id")
        await gw.client.close()

    # The controls: both events are stored with their other free-form field, and were sent.
    assert [event_id for event_id, _ in payloads] == ["ga-1", "ord-1"]
    assert all(b"SUMMER" in payload for _, payload in payloads)
    sent = b"".join(r.body for r in fake_platform.requests)
    assert b"SUMMER" in sent
    disk = on_disk(db_path)
    for needle in (b"jane@example.com", b"jane%40example.com", b"4155550100"):
        assert needle not in disk, needle
        assert needle not in sent, needle
    dropped = [line["fields"] for line in logs if line["event"] == "event.personal_data_dropped"]
    assert dropped == [
        ["custom.email", "user_properties.phone"],
        ["custom.customer_email", "custom.note", "custom.search_string"],
    ]
    assert "jane@example.com" not in repr(logs)
