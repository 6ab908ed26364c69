"""Reddit Conversions API v3: payload and hashing by Reddit's rules, requests, answers, and the
whole path against a fake Reddit built from the v3 reference's request and answer shapes."""

from __future__ import annotations

import io
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal

import orjson
import pytest
from aiohttp import web
from pydantic import SecretStr

from gateway import names
from gateway.config import Config
from gateway.destinations.base import Answer, Item, Verdict
from gateway.destinations.reddit_capi import (
    RedditCapi,
    RedditCapiSettings,
    classify_reddit,
    reddit_user,
)
from gateway.event import Content, Custom, Event, User
from gateway.personal_data.hashing import sha256_hex
from gateway.typedefs import PIPELINE
from gateway.validate import run_validate
from tests.conftest import FakePlatform, Gateway, Recorded, eventually

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]
UA = "Mozilla/5.0 (X11)"
TOKEN = "RDT-TOKEN"  # the fake Reddit's only valid token
PIXEL = "a2_abc123xyz"


def _dest(**extra: object) -> RedditCapi:
    settings = RedditCapiSettings(
        type="reddit_capi",
        pixel_id=PIXEL,
        access_token=SecretStr(TOKEN),
        **extra,  # type: ignore[arg-type]
    )
    return RedditCapi("reddit", settings)


def _event(**extra: object) -> Event:
    fields: dict[str, object] = {
        "event_id": "ord-7",
        "event_name": "purchase",
        "event_time": 1_700_000_000,
        "source": "server",
        "event_source_url": "https://shop.example/thanks",
        "user": User(email="jane@example.com", client_ip="203.0.113.7", user_agent=UA),
    }
    fields.update(extra)
    return Event(**fields)  # type: ignore[arg-type]


def test_user_is_hashed_by_reddits_rules() -> None:
    user = reddit_user(
        User(
            email="  Al.ice$+Apple@Example.Com ",
            phone="(415) 555-0100",
            country="US",
            external_id="Cust-42",
            first_name="Mary",  # Reddit takes no names: left out
            client_ip="203.0.113.7",
            user_agent=UA,
            ids={"rdt_uuid": "1700000000000.5f1c"},
        )
    )
    assert user == {
        # Reddit's published vector: `Al.ice$+Apple@Example.Com` canonicalizes to this hash.
        "email": "ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976",
        "phone_number": sha256_hex("+14155550100"),
        "external_id": sha256_hex("cust-42"),
        "ip_address": "203.0.113.7",
        "user_agent": UA,
        "uuid": "1700000000000.5f1c",
    }


def test_a_made_hash_passes_through() -> None:
    assert reddit_user(User(email="A" * 64))["email"] == "a" * 64


def test_the_conversion_event_field_by_field() -> None:
    event = _event(
        event_source_url="https://shop.example/thanks?rdt_cid=cid-1",
        custom=Custom(
            value=Decimal("79.50"),
            currency="eur",
            order_id="ord-7",
            contents=(
                Content("sku-1", 2, Decimal("39.75"), name="Socks", category="Apparel"),
                Content("sku-2", 1, Decimal("0"), name="Gift"),  # no category: left out
            ),
        ),
    )
    assert _dest().prepare(event) == {
        "event_at": 1_700_000_000_000,
        "action_source": "WEBSITE",
        "type": {"tracking_type": "PURCHASE"},
        "user": {
            "email": sha256_hex("jane@example.com"),
            "ip_address": "203.0.113.7",
            "user_agent": UA,
        },
        "metadata": {
            "conversion_id": "ord-7",  # the dedup key, the pixel's conversionId
            "currency": "EUR",
            "value": 79.5,
            "item_count": 3,
            "products": [{"id": "sku-1", "name": "Socks", "category": "Apparel"}],
        },
        "click_id": "cid-1",
    }


def test_limited_events_carry_ldu_and_no_click_id() -> None:
    event = _event(event_source_url="https://s.example/?rdt_cid=cid-1", limited=True)
    payload = _dest().prepare(event)
    assert isinstance(payload, dict)
    assert "click_id" not in payload
    assert payload["user"]["data_processing_options"] == {"modes": ["LDU"]}
    plain = _dest().prepare(_event(event_source_url="https://s.example/?rdt_cid=cid-1"))
    assert isinstance(plain, dict)
    assert plain["click_id"] == "cid-1"
    assert "data_processing_options" not in plain["user"]


@pytest.mark.parametrize(
    ("canonical", "reddit"),
    [
        ("page_view", {"tracking_type": "PAGE_VISIT"}),
        ("view_content", {"tracking_type": "VIEW_CONTENT"}),
        ("add_to_cart", {"tracking_type": "ADD_TO_CART"}),
        ("add_to_wishlist", {"tracking_type": "ADD_TO_WISHLIST"}),
        ("purchase", {"tracking_type": "PURCHASE"}),
        ("complete_registration", {"tracking_type": "SIGN_UP"}),
        ("lead", {"tracking_type": "LEAD"}),
        ("search", {"tracking_type": "SEARCH"}),
        ("subscribe", {"tracking_type": "CUSTOM", "custom_event_name": "subscribe"}),
    ],
)
def test_event_names(canonical: str, reddit: dict[str, str]) -> None:
    payload = _dest().prepare(_event(event_name=canonical))
    assert isinstance(payload, dict)
    assert payload["type"] == reddit


def test_names_are_read_both_ways_and_check_knows_them() -> None:
    assert names.to_canonical("reddit", "PURCHASE") == "purchase"
    assert names.from_canonical("reddit", "complete_registration") == "SIGN_UP"
    assert names.never_matches("SIGN_UP") == (
        "Reddit's name for the canonical event 'complete_registration';"
        " write 'complete_registration'"
    )


def test_requests_carry_a_bearer_token_and_split_at_1000() -> None:
    dest = _dest(endpoint="http://127.0.0.1:9/proxy/")
    payload = dest.prepare(_event())
    items = [Item(i, payload) for i in range(1001)]
    requests = dest.build_requests(items)
    assert [len(r.items) for r in requests] == [1000, 1]
    first = requests[0]
    assert first.url == f"http://127.0.0.1:9/proxy/api/v3/pixels/{PIXEL}/conversion_events"
    assert first.headers["Authorization"] == f"Bearer {TOKEN}"
    assert first.body is not None
    assert orjson.loads(first.body) == {"data": {"events": [payload] * 1000}}
    assert TOKEN.encode() not in first.body
    configured = _dest(batch={"max_events": 300}).build_requests(items)
    assert [len(r.items) for r in configured] == [300, 300, 300, 101]
    assert TOKEN not in _dest().describe()


def test_test_mode_puts_test_id_in_the_body() -> None:
    items = [Item(1, {"event_at": 1})]
    (request,) = _dest(test_event_code="t2_abc").build_requests(items)
    assert request.body is not None
    assert orjson.loads(request.body) == {
        "data": {"events": [{"event_at": 1}], "test_id": "t2_abc"}
    }
    assert _dest(test_event_code="t2_abc").describe().endswith(", test_event_code t2_abc")


def _answer(status: int | None, body: object = None, **headers: str) -> Answer:
    raw = orjson.dumps(body) if body is not None else b""
    return Answer(status, raw, headers, None if status else "timeout")


def _error(code: int, message: str) -> dict[str, object]:
    return {"error": {"code": code, "message": message}}


@pytest.mark.parametrize(
    ("answer", "batch", "verdict"),
    [
        (_answer(200, {"message": "Successfully processed 3 conversion events."}), 3, Verdict.SENT),
        (_answer(400, _error(400, "invalid event_at")), 5, Verdict.SPLIT),
        (_answer(400, _error(400, "invalid event_at")), 1, Verdict.DEAD),
        (_answer(422, _error(422, "unprocessable")), 2, Verdict.SPLIT),
        (_answer(429, _error(429, "too many requests")), 9, Verdict.RETRY),
        (_answer(503, None), 9, Verdict.RETRY),
        (_answer(None), 9, Verdict.RETRY),
    ],
)
def test_classification(answer: Answer, batch: int, verdict: Verdict) -> None:
    result = classify_reddit(answer, batch)
    assert result.verdict is verdict
    assert not result.auth


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_is_an_auth_failure(status: int) -> None:
    result = classify_reddit(_answer(status, _error(status, "unauthorized")), 5)
    assert (result.verdict, result.auth) == (Verdict.RETRY, True)
    assert result.message == f"{status}: unauthorized"


def test_retry_after_is_kept() -> None:
    result = classify_reddit(_answer(429, _error(429, "slow"), **{"Retry-After": "7"}), 1)
    assert result.retry_after_s == 7


# --- end to end, against a fake Reddit -------------------------------------------------------


def _reddit(recorded: Recorded) -> web.Response:
    """Reddit's answers as the v3 reference shapes them; an event whose conversion ID starts
    `bad` makes the whole request a 400."""
    if recorded.headers.get("Authorization") != f"Bearer {TOKEN}":
        return web.json_response(_error(401, "unauthorized"), status=401)
    events = recorded.json()["data"]["events"]
    if any(e["metadata"]["conversion_id"].startswith("bad") for e in events):
        return web.json_response(_error(400, "invalid conversion event"), status=400)
    return web.json_response(
        {"message": f"Successfully processed {len(events)} conversion events."}
    )


def _config(make_config: MakeConfig, endpoint: str, token: str = TOKEN, extra: str = "") -> Config:
    return make_config(
        f"""
trusted_proxies: [127.0.0.1/32]
destinations:
  reddit:
    type: reddit_capi
    pixel_id: {PIXEL}
    access_token: {token}
    endpoint: {endpoint}
    batch: {{max_wait_ms: 0}}
    retry: {{base_ms: 10, max_ms: 20, auth_probe_ms: 60000}}{extra}
sources:
  meta_pixel: {{send_to: [reddit]}}
  ga4: {{send_to: [reddit]}}
  server: {{send_to: [reddit], api_keys: [KEY-0123456789abcdef]}}
cookies: {{domain: shop.example}}
"""
    )


async def test_a_ga4_hit_reaches_reddit_with_its_event_id_and_the_rdt_uuid_cookie(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _reddit
    gw = await start_gateway(_config(make_config, fake_platform.url))
    response = await gw.client.get(
        "/g/collect?v=2&tid=G-ABC123&cid=123.456&_p=1&en=purchase&ep.event_id=ord-9"
        "&cu=EUR&epn.value=12.5&dl=https%3A%2F%2Fshop.example%2Fthanks%3Frdt_cid%3Dcid-9",
        headers={
            "User-Agent": UA,
            "X-Forwarded-For": "198.51.100.1",
            "Cookie": "_rdt_uuid=1700000000000.abc",
        },
    )
    assert response.status in (200, 204)
    assert "_rdt_uuid" not in response.headers.getall("Set-Cookie", [""])[0]  # passed, never set
    await eventually(lambda: len(fake_platform.requests) == 1)
    request = fake_platform.requests[0]
    assert request.path == f"/api/v3/pixels/{PIXEL}/conversion_events"
    (event,) = request.json()["data"]["events"]
    assert event["type"] == {"tracking_type": "PURCHASE"}
    assert event["metadata"] == {"conversion_id": "ord-9", "currency": "EUR", "value": 12.5}
    assert event["click_id"] == "cid-9"
    assert event["user"] == {
        "ip_address": "198.51.100.1",
        "user_agent": UA,
        "uuid": "1700000000000.abc",
    }

    async def sent() -> bool:
        return await gw.rows("SELECT status, http_status FROM deliveries") == [("sent", 200)]

    await eventually(sent)


async def test_the_server_api_reaches_reddit_with_hashed_email(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _reddit
    gw = await start_gateway(_config(make_config, fake_platform.url))
    response = await gw.client.post(
        "/v1/events",
        json={
            "events": [
                {
                    "event_id": "srv-1",
                    "event_name": "lead",
                    "event_time": int(time.time()),
                    "action_source": "website",
                    "event_source_url": "https://shop.example/signup",
                    "user": {"email": "Jane@Example.com", "client_ip": "203.0.113.9"},
                }
            ]
        },
        headers={"Authorization": "Bearer KEY-0123456789abcdef"},
    )
    assert response.status in (200, 202), await response.text()
    assert (await response.json())["rejected"] == []
    await eventually(lambda: len(fake_platform.requests) == 1)
    (event,) = fake_platform.requests[0].json()["data"]["events"]
    assert event["type"] == {"tracking_type": "LEAD"}
    assert event["metadata"] == {"conversion_id": "srv-1"}
    assert event["user"]["email"] == sha256_hex("jane@example.com")
    assert "Jane" not in fake_platform.requests[0].body.decode()


async def test_one_bad_event_in_a_batch_is_isolated(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _reddit
    gw = await start_gateway(_config(make_config, fake_platform.url))
    ids = ["good-0", "good-1", "bad-2", "good-3"]
    events = [_event(event_id=i, event_time=int(time.time())) for i in ids]
    await gw.app[PIPELINE].ingest(events, ["reddit"])

    async def settled() -> bool:
        rows = await gw.rows("SELECT status FROM deliveries")
        return len(rows) == 4 and all(s in ("sent", "dead") for (s,) in rows)

    await eventually(settled)
    rows = await gw.rows("SELECT event_id, status, message FROM deliveries ORDER BY id")
    assert {e: s for e, s, _ in rows} == {
        "good-0": "sent",
        "good-1": "sent",
        "bad-2": "dead",
        "good-3": "sent",
    }
    assert [m for e, _, m in rows if e == "bad-2"] == ["400: invalid conversion event"]
    sent_ids = [
        [e["metadata"]["conversion_id"] for e in r.json()["data"]["events"]]
        for r in fake_platform.requests
    ]
    assert sent_ids[0] == ids  # the fault fired: the whole batch went first and was refused
    assert ["bad-2"] in sent_ids


async def test_a_refused_token_makes_it_unhealthy_with_events_queued(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _reddit
    gw = await start_gateway(_config(make_config, fake_platform.url, token="EXPIRED"))
    await gw.app[PIPELINE].ingest([_event(event_time=int(time.time()))], ["reddit"])
    await eventually(lambda: len(fake_platform.requests) == 1)
    assert fake_platform.requests[0].headers["Authorization"] == "Bearer EXPIRED"

    async def paused() -> bool:
        ready = await (await gw.client.get("/readyz")).json()
        return ready["destinations"]["reddit"]["healthy"] is False

    await eventually(paused)
    assert await gw.rows("SELECT status FROM deliveries") == [("queued",)]  # nothing dead


async def test_validate_sends_samples_with_the_test_id_and_skips_without_one(
    make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _reddit
    out = io.StringIO()
    config = _config(make_config, fake_platform.url, extra="\n    test_event_code: t2_test")
    code = await run_validate(config, out)
    assert code == 0, out.getvalue()
    (request,) = fake_platform.requests
    body = request.json()["data"]
    assert body["test_id"] == "t2_test"
    assert [e["type"]["tracking_type"] for e in body["events"]] == ["VIEW_CONTENT", "PURCHASE"]
    assert "reddit: 2 sample events with test_event_code t2_test: HTTP 200" in out.getvalue()
    assert TOKEN not in out.getvalue()
    # Without a test ID the samples would count as real conversions: nothing is sent.
    out = io.StringIO()
    assert await run_validate(_config(make_config, fake_platform.url), out) == 1
    assert len(fake_platform.requests) == 1
    assert "skipped: no test_event_code configured" in out.getvalue()


@pytest.mark.parametrize("raw", [b"<html>login</html>", b"", b'{"message": "Success'])
def test_a_2xx_without_reddits_answer_is_retried_not_sent(raw: bytes) -> None:
    # A captive proxy's page or a cut-off body: nothing says the events arrived.
    result = classify_reddit(Answer(200, raw, {}, None), 3)
    assert result.verdict is Verdict.RETRY
    assert "without Reddit's answer" in result.message
