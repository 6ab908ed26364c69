"""Snapchat Conversions API: Snap's published hash vectors, payload, requests, answers, and the
whole path against a fake Snap built from its documented request and answer shapes."""

from __future__ import annotations

import io
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal

import orjson
import pytest
from aiohttp import web
from pydantic import SecretStr

from gateway.config import Config
from gateway.destinations.base import Answer, Item, Rejected, Verdict
from gateway.destinations.snapchat_capi import (
    SnapchatCapi,
    SnapchatCapiSettings,
    classify_snapchat,
    snapchat_user_data,
)
from gateway.event import Custom, Event, User
from gateway.personal_data.hashing import sha256_hex
from gateway.typedefs import PIPELINE
from gateway.validate import run_validate
from tests.conftest import FakePlatform, Gateway, Recorded, eventually

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]
UA = "Mozilla/5.0 (X11)"
PIXEL = "1ec32188-754e-4be2-8e55-c949a984a39f"  # the shape of Snap's own example
TOKEN = "SNAP-TOKEN-0123456789"  # the fake Snap's only valid token

# Snap's published inputs and hashed outputs (developers.snap.com, Conversions API, Parameters).
VECTORS = {
    "Person@Example.com": "542d240129883c019e106e3b1b2d3f3cb3537c43c425364de8e951d5a3083345",
    "+44 844 412 4653": "dc008fda46e2e64002cf2f82a4906236282d431c4f75e5b60bfe79fc48546383",
    "John": "96d9632f363564cc3032521409cf22a852f2032eec099ed5967c0d000cec607a",
    "Raphaël": "e74bb89e718fe1e19c422a48382870399f8bf7ca8dfa008739e75b0be76627b7",
}


def _dest(**extra: object) -> SnapchatCapi:
    settings = SnapchatCapiSettings(
        type="snapchat_capi",
        pixel_id=PIXEL,
        access_token=SecretStr(TOKEN),
        **extra,  # type: ignore[arg-type]
    )
    return SnapchatCapi("snapchat", settings)


def _event(**extra: object) -> Event:
    fields: dict[str, object] = {
        "event_id": "ord-7",
        "event_name": "purchase",
        "event_time": 1_700_000_000,
        "source": "server",
        "event_source_url": "https://shop.example/thanks",
        "user": User(email="jane@example.com", client_ip="203.0.113.7", user_agent=UA),
        "custom": Custom(value=Decimal("10.50"), currency="usd"),
    }
    fields.update(extra)
    return Event(**fields)  # type: ignore[arg-type]


def test_snaps_published_vectors() -> None:
    data = snapchat_user_data(
        User(
            email=" Person@Example.com ",
            phone="+44 844 412 4653",
            first_name="John",
            last_name="Raphaël",
        )
    )
    assert data["em"] == [VECTORS["Person@Example.com"]]
    assert data["ph"] == [VECTORS["+44 844 412 4653"]]
    assert data["fn"] == [VECTORS["John"]]
    assert data["ln"] == [VECTORS["Raphaël"]]
    # A number written with 00 and a trunk 0 is the same number.
    assert snapchat_user_data(User(phone="0044 (0)844 412 4653"))["ph"] == data["ph"]


def test_the_conversion_event_field_by_field() -> None:
    event = _event(
        event_source_url="https://shop.example/thanks?ScCid=click-1",
        user=User(
            email="jane@example.com", client_ip="203.0.113.7", user_agent=UA, ids={"scid": "sc-1"}
        ),
    )
    assert _dest().prepare(event) == {
        "event_name": "PURCHASE",
        "action_source": "WEB",
        "event_time": 1_700_000_000,
        "event_id": "ord-7",  # Snap dedups it against the pixel's client_dedup_id
        "user_data": {
            "em": [sha256_hex("jane@example.com")],
            "client_ip_address": "203.0.113.7",
            "client_user_agent": UA,
            "sc_click_id": "click-1",
            "sc_cookie1": "sc-1",
        },
        "event_source_url": "https://shop.example/thanks?ScCid=click-1",
        "custom_data": {"currency": "USD", "value": "10.5"},
    }


def test_click_id_from_the_server_api_and_never_when_limited() -> None:
    user = User(
        email="jane@example.com", ids={"sccid": "from-backend"}, client_ip="1.2.3.4", user_agent=UA
    )
    payload = _dest().prepare(_event(user=user))
    assert isinstance(payload, dict)
    assert payload["user_data"]["sc_click_id"] == "from-backend"
    limited = _dest().prepare(
        _event(user=user, event_source_url="https://s.example/?ScCid=x", limited=True)
    )
    assert isinstance(limited, dict)
    assert "sc_click_id" not in limited["user_data"]
    assert limited["data_processing_options"] == ["LMU"]


@pytest.mark.parametrize(
    ("canonical", "snap"),
    [
        ("page_view", "PAGE_VIEW"),
        ("add_to_cart", "ADD_CART"),
        ("initiate_checkout", "START_CHECKOUT"),
        ("complete_registration", "SIGN_UP"),
        ("lead", "CUSTOM_EVENT_1"),
        ("my_own_event", "CUSTOM_EVENT_1"),
    ],
)
def test_event_names(canonical: str, snap: str) -> None:
    payload = _dest().prepare(_event(event_name=canonical, custom=Custom()))
    assert isinstance(payload, dict)
    assert payload["event_name"] == snap


def test_events_snap_would_refuse_are_rejected() -> None:
    dest = _dest()
    assert dest.prepare(_event(custom=Custom())) == Rejected(
        "custom_data: PURCHASE needs value and currency"
    )
    assert dest.prepare(_event(user=User(client_ip="203.0.113.7"))) == Rejected(
        "user_data: Snapchat needs em, ph, or client_ip_address with client_user_agent"
    )
    assert dest.prepare(_event(event_source_url=None)) == Rejected(
        "event_source_url: required for web events"
    )
    assert dest.max_age_s == 37 * 86400


def test_requests_and_the_batch_limit() -> None:
    dest = _dest(endpoint="http://127.0.0.1:9/")
    payload = dest.prepare(_event())
    items = [Item(i, payload) for i in range(1001)]
    requests = dest.build_requests(items)
    assert [len(r.items) for r in requests] == [1000, 1]
    assert requests[0].url == f"http://127.0.0.1:9/v3/{PIXEL}/events?access_token={TOKEN}"
    assert requests[0].body is not None
    assert orjson.loads(requests[0].body) == {"data": [payload] * 1000}
    assert dest.test_requests(items[:1])[0].url.startswith(
        f"http://127.0.0.1:9/v3/{PIXEL}/events/validate?"
    )
    assert "/events/validate?" in _dest(test=True).build_requests(items[:1])[0].url
    assert TOKEN not in _dest(test=True).describe()


def _answer(status: int | None, body: object = None) -> Answer:
    return Answer(status, orjson.dumps(body) if body is not None else b"", {}, None)


@pytest.mark.parametrize(
    ("answer", "batch", "verdict", "auth"),
    [
        (_answer(200, {"status": "VALID"}), 5, Verdict.SENT, False),
        (_answer(400, {"status": "INVALID", "reason": "Unhashed PII"}), 5, Verdict.SPLIT, False),
        (_answer(400, {"status": "INVALID", "reason": "Unhashed PII"}), 1, Verdict.DEAD, False),
        (_answer(401, {"status": "UNAUTHORIZED", "reason": "bad token"}), 5, Verdict.RETRY, True),
        (_answer(403, {"status": "FORBIDDEN"}), 5, Verdict.RETRY, True),
        (_answer(429, {"status": "RATE_LIMITED"}), 5, Verdict.RETRY, False),
        (_answer(503, None), 5, Verdict.RETRY, False),
        (_answer(None), 5, Verdict.RETRY, False),
    ],
)
def test_classification(answer: Answer, batch: int, verdict: Verdict, auth: bool) -> None:
    result = classify_snapchat(answer, batch)
    assert (result.verdict, result.auth) == (verdict, auth)


# --- end to end, against a fake Snap ---------------------------------------------------------


def _snap(recorded: Recorded) -> web.Response:
    """Snap's answers as VerifySetUp shapes them: an event whose ID starts `bad` is INVALID."""
    if recorded.query.get("access_token") != TOKEN:
        return web.json_response({"status": "UNAUTHORIZED", "reason": "Invalid token"}, status=401)
    if any(e["event_id"].startswith("bad") for e in recorded.json()["data"]):
        return web.json_response({"status": "INVALID", "reason": "Unhashed PII"}, status=400)
    return web.json_response({"status": "VALID", "reason": ""})


def _config(make_config: MakeConfig, endpoint: str, token: str = TOKEN) -> Config:
    return make_config(
        f"""
trusted_proxies: [127.0.0.1/32]
destinations:
  snapchat:
    type: snapchat_capi
    pixel_id: {PIXEL}
    access_token: {token}
    endpoint: {endpoint}
    batch: {{max_wait_ms: 0}}
    retry: {{base_ms: 10, max_ms: 20, auth_probe_ms: 60000}}
sources:
  meta_pixel: {{send_to: [snapchat]}}
cookies: {{domain: shop.example}}
"""
    )


async def test_a_meta_pixel_hit_reaches_snap_with_its_event_id_and_the_scid_cookie(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _snap
    gw = await start_gateway(_config(make_config, fake_platform.url))
    response = await gw.client.get(
        f"/tr/?id=1234567890&ev=PageView&eid=pv-1&ts={int(time.time() * 1000)}"
        "&dl=https%3A%2F%2Fshop.example%2F%3FScCid%3Dclick-9",
        headers={"User-Agent": UA, "X-Forwarded-For": "198.51.100.1", "Cookie": "_scid=sc-7"},
    )
    assert response.status == 200
    assert "_scid" not in "".join(response.headers.getall("Set-Cookie", []))  # never set
    await eventually(lambda: len(fake_platform.requests) == 1)
    request = fake_platform.requests[0]
    assert request.path == f"/v3/{PIXEL}/events"
    (event,) = request.json()["data"]
    assert event["event_name"] == "PAGE_VIEW"
    assert event["event_id"] == "pv-1"
    assert event["user_data"] == {
        "client_ip_address": "198.51.100.1",
        "client_user_agent": UA,
        "sc_click_id": "click-9",
        "sc_cookie1": "sc-7",
    }

    async def sent() -> bool:
        return await gw.rows("SELECT status FROM deliveries") == [("sent",)]

    await eventually(sent)


async def test_one_bad_event_in_a_batch_is_isolated(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _snap
    gw = await start_gateway(_config(make_config, fake_platform.url))
    ids = ["good-0", "bad-1", "good-2"]
    await gw.app[PIPELINE].ingest(
        [_event(event_id=i, event_time=int(time.time())) for i in ids], ["snapchat"]
    )

    async def settled() -> bool:
        rows = await gw.rows("SELECT status FROM deliveries")
        return len(rows) == 3 and all(s in ("sent", "dead") for (s,) in rows)

    await eventually(settled)
    rows = await gw.rows("SELECT event_id, status, message FROM deliveries ORDER BY id")
    assert [(e, s) for e, s, _ in rows] == [
        ("good-0", "sent"),
        ("bad-1", "dead"),
        ("good-2", "sent"),
    ]
    assert rows[1][2] == "INVALID Unhashed PII"
    sent_ids = [[e["event_id"] for e in r.json()["data"]] for r in fake_platform.requests]
    assert sent_ids[0] == ids  # the fault fired on the whole batch first
    assert ["bad-1"] in sent_ids


async def test_a_refused_token_makes_it_unhealthy_with_events_queued(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _snap
    gw = await start_gateway(_config(make_config, fake_platform.url, token="EXPIRED-0123456789"))
    await gw.app[PIPELINE].ingest([_event(event_time=int(time.time()))], ["snapchat"])
    await eventually(lambda: len(fake_platform.requests) == 1)

    async def paused() -> bool:
        ready = await (await gw.client.get("/readyz")).json()
        return ready["destinations"]["snapchat"]["healthy"] is False

    await eventually(paused)
    assert await gw.rows("SELECT status FROM deliveries") == [("queued",)]


async def test_validate_uses_the_validate_endpoint(
    make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _snap
    out = io.StringIO()
    assert await run_validate(_config(make_config, fake_platform.url), out) == 0, out.getvalue()
    (request,) = fake_platform.requests
    assert request.path == f"/v3/{PIXEL}/events/validate"
    assert [e["event_name"] for e in request.json()["data"]] == ["VIEW_CONTENT", "PURCHASE"]
    assert "2 sample events to its test mode (/events/validate): HTTP 200" in out.getvalue()
    assert TOKEN not in out.getvalue()


@pytest.mark.parametrize("raw", [b"<html>login</html>", b"", b'{"status": "VAL'])
def test_a_2xx_without_snaps_answer_is_retried_not_sent(raw: bytes) -> None:
    # A captive proxy's page or a cut-off body: nothing says the events arrived.
    result = classify_snapchat(Answer(200, raw, {}, None), 3)
    assert result.verdict is Verdict.RETRY
    assert "without Snap's answer" in result.message
