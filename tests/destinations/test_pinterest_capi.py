"""Pinterest Conversions API: payload and hashing by Pinterest's rules, requests, answers, and
the whole path against a fake Pinterest built from the v5 reference's request and answer shapes."""

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
from gateway.destinations.base import Answer, Item, Rejected, Verdict
from gateway.destinations.pinterest_capi import (
    PinterestCapi,
    PinterestCapiSettings,
    classify_pinterest,
    pinterest_user_data,
)
from gateway.event import Content, Custom, Event, User
from gateway.personal_data.hashing import sha256_hex
from gateway.typedefs import PIPELINE
from gateway.validate import run_validate
from tests.conftest import FakePlatform, Gateway, Recorded, eventually

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]
UA = "Mozilla/5.0 (X11)"
TOKEN = "PIN-TOKEN"  # the fake Pinterest's only valid token
EPIK = "dj0yJnU9b2JDcFFHekV4SHJNcmVrbFBkUEdqakh0akdUT1VjVVUmcD0yJm49cnNBQ3F2Q2dOVDBXWWhkWklrUGxBUSZ0PUFBQUFBR1BaY3Bv"  # noqa: E501  (the reference's example)


def _dest(**extra: object) -> PinterestCapi:
    settings = PinterestCapiSettings(
        type="pinterest_capi",
        ad_account_id="549755885175",
        access_token=SecretStr("PIN-TOKEN"),
        **extra,  # type: ignore[arg-type]
    )
    return PinterestCapi("pinterest", settings)


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


def test_user_data_is_hashed_by_pinterests_rules_into_lists() -> None:
    data = pinterest_user_data(
        User(
            email="  Jane.Doe@Example.COM ",
            phone="+44 (0)7911 123456",
            first_name="Mary",
            last_name="Smith",
            gender="Female",
            date_of_birth="2/16/1997",
            city="New York",
            state="California",
            zip="94035-1234",
            country="United States",
            external_id="Cust-42",
            client_ip="203.0.113.7",
            user_agent=UA,
        ),
        "click-1",
    )
    assert data == {
        "em": [sha256_hex("jane.doe@example.com")],  # dots kept: that rule is Google's only
        "ph": [sha256_hex("447911123456")],  # digits with the country code, no leading zero
        "fn": [sha256_hex("mary")],
        "ln": [sha256_hex("smith")],
        "ge": [sha256_hex("f")],
        "db": [sha256_hex("19970216")],
        "ct": [sha256_hex("newyork")],  # lowercase, no spaces or punctuation
        "st": [sha256_hex("ca")],
        "zp": [sha256_hex("94035")],
        "country": [sha256_hex("us")],
        "external_id": [sha256_hex("cust-42")],
        "client_ip_address": "203.0.113.7",
        "client_user_agent": UA,
        "click_id": "click-1",
    }
    assert data["zp"] == [
        # Meta's published vector for the same normalized zip: one SHA-256 for both.
        "1794327a4d443904421f5ca1f3d72d0a62ba2f0770d80755ec2220fc0efb052e"
    ]


def test_a_made_hash_passes_through() -> None:
    made = "A" * 64
    assert pinterest_user_data(User(email=made))["em"] == ["a" * 64]


def test_the_conversion_event_field_by_field() -> None:
    event = _event(
        event_source_url=f"https://shop.example/thanks?epik={EPIK}",
        custom=Custom(
            value=Decimal("79.50"),
            currency="eur",
            order_id="ord-7",
            contents=(Content("sku-1", 2, Decimal("39.75"), name="Socks", brand="Wool"),),
            num_items=2,
            extra={"coupon": "SPRING"},  # Pinterest refuses keys it does not know
        ),
    )
    payload = _dest().prepare(event)
    assert payload == {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": 1_700_000_000,
        "event_id": "ord-7",  # the dedup key, shared with the tag's event_id
        "user_data": {
            "em": [sha256_hex("jane@example.com")],
            "client_ip_address": "203.0.113.7",
            "client_user_agent": UA,
            "click_id": EPIK,
        },
        "event_source_url": f"https://shop.example/thanks?epik={EPIK}",
        "custom_data": {
            "currency": "EUR",
            "value": "79.5",
            "content_ids": ["sku-1"],
            "contents": [
                {
                    "id": "sku-1",
                    "quantity": 2,
                    "item_name": "Socks",
                    "item_brand": "Wool",
                    "item_price": "39.75",
                }
            ],
            "num_items": 2,
            "order_id": "ord-7",
        },
    }


def test_click_id_from_the_cookie_when_the_url_has_none_and_never_when_limited() -> None:
    user = User(email="jane@example.com", ids={"epik": "from-cookie"})
    dest = _dest()
    cookie = dest.prepare(_event(user=user))
    assert isinstance(cookie, dict)
    assert cookie["user_data"]["click_id"] == "from-cookie"
    url_wins = dest.prepare(_event(user=user, event_source_url="https://s.example/?epik=new"))
    assert isinstance(url_wins, dict)
    assert url_wins["user_data"]["click_id"] == "new"
    limited = dest.prepare(
        _event(user=user, event_source_url="https://s.example/?epik=new", limited=True)
    )
    assert isinstance(limited, dict)
    assert "click_id" not in limited["user_data"]
    assert limited["custom_data"] == {"opt_out_type": "LDP"}


@pytest.mark.parametrize(
    ("canonical", "pinterest"),
    [
        ("page_view", "page_visit"),
        ("view_content", "page_visit"),
        ("add_to_cart", "add_to_cart"),
        ("purchase", "checkout"),
        ("complete_registration", "signup"),
        ("lead", "lead"),
        ("search", "search"),
        ("add_to_wishlist", "custom"),
        ("my_own_event", "custom"),
    ],
)
def test_event_names(canonical: str, pinterest: str) -> None:
    payload = _dest().prepare(_event(event_name=canonical))
    assert isinstance(payload, dict)
    assert payload["event_name"] == pinterest


def test_names_are_read_both_ways_and_check_knows_them() -> None:
    assert names.to_canonical("pinterest", "checkout") == "purchase"
    assert names.to_canonical("pinterest", "page_visit") == "page_view"
    assert names.from_canonical("pinterest", "purchase") == "checkout"
    assert names.never_matches("checkout") == (
        "Pinterest's name for the canonical event 'purchase'; write 'purchase'"
    )


def test_events_pinterest_would_refuse_are_rejected_before_sending() -> None:
    dest = _dest()
    app = dest.prepare(_event(action_source="app"))
    assert app == Rejected("action_source app: Pinterest needs app_android or app_ios")
    nobody = dest.prepare(_event(user=User(phone="+14155550100", client_ip="203.0.113.7")))
    assert nobody == Rejected(
        "user_data: Pinterest needs em, or client_ip_address with client_user_agent"
    )
    offline = dest.prepare(_event(action_source="physical_store"))
    assert isinstance(offline, dict)
    assert offline["action_source"] == "offline"


def test_requests_carry_a_bearer_token_and_split_at_1000() -> None:
    dest = _dest(endpoint="http://127.0.0.1:9/proxy/")
    payload = dest.prepare(_event())
    items = [Item(i, payload) for i in range(1001)]
    requests = dest.build_requests(items)
    assert [len(r.items) for r in requests] == [1000, 1]
    first = requests[0]
    assert first.url == "http://127.0.0.1:9/proxy/v5/ad_accounts/549755885175/events"
    assert first.headers["Authorization"] == "Bearer PIN-TOKEN"
    assert first.body is not None
    assert orjson.loads(first.body) == {"data": [payload] * 1000}
    assert b"PIN-TOKEN" not in first.body
    assert "PIN-TOKEN" not in first.url
    configured = _dest(batch={"max_events": 300}).build_requests(items)
    assert [len(r.items) for r in configured] == [300, 300, 300, 101]
    assert "PIN-TOKEN" not in _dest().describe()


def test_test_mode_marks_every_request() -> None:
    items = [Item(1, {"event_id": "e"})]
    assert _dest(test=True).build_requests(items)[0].url.endswith("/events?test=true")
    assert _dest().build_requests(items)[0].url.endswith("/events")
    assert _dest().test_requests(items)[0].url.endswith("/events?test=true")
    assert _dest(test=True).describe().endswith(", test mode")


def _answer(status: int | None, body: object = None, **headers: str) -> Answer:
    raw = orjson.dumps(body) if body is not None else b""
    return Answer(status, raw, headers, None if status else "timeout")


def _processed(n: int, failed: int = 0) -> dict[str, object]:
    events = [{"status": "processed", "error_message": None}] * (n - failed) + [
        {"status": "failed", "error_message": "Invalid event_time"}
    ] * failed
    return {"num_events_received": n, "num_events_processed": n - failed, "events": events}


@pytest.mark.parametrize(
    ("answer", "batch", "verdict"),
    [
        (_answer(200, _processed(3)), 3, Verdict.SENT),
        (_answer(200, _processed(3, failed=1)), 3, Verdict.SPLIT),
        (_answer(422, {"code": 1, "message": "Not all events", "details": {}}), 5, Verdict.SPLIT),
        (_answer(422, {"code": 1, "message": "Not all events", "details": {}}), 1, Verdict.DEAD),
        (_answer(400, {"code": 4196, "message": "The request was invalid."}), 2, Verdict.SPLIT),
        (_answer(400, {"code": 4196, "message": "The request was invalid."}), 1, Verdict.DEAD),
        (_answer(429, {"code": 8, "message": "rate limit"}), 9, Verdict.RETRY),
        (_answer(503, {"code": 4197, "message": "ramped down"}), 9, Verdict.RETRY),
        (_answer(None), 9, Verdict.RETRY),
    ],
)
def test_classification(answer: Answer, batch: int, verdict: Verdict) -> None:
    result = classify_pinterest(answer, batch)
    assert result.verdict is verdict
    assert not result.auth


@pytest.mark.parametrize(
    ("status", "code"), [(401, 2), (403, 29)]
)  # Authentication failed; not permitted on this ad account
def test_a_refused_token_is_an_auth_failure(status: int, code: int) -> None:
    result = classify_pinterest(_answer(status, {"code": code, "message": "no"}), 5)
    assert (result.verdict, result.auth) == (Verdict.RETRY, True)
    assert result.message == f"code {code}: no"


def test_retry_after_and_the_failed_events_message_are_kept() -> None:
    result = classify_pinterest(
        _answer(429, {"code": 8, "message": "slow"}, **{"Retry-After": "7"}), 1
    )
    assert result.retry_after_s == 7
    partial = classify_pinterest(_answer(200, _processed(2, failed=1)), 2)
    assert partial.message == "code None: (Invalid event_time)"


# --- end to end, against a fake Pinterest ----------------------------------------------------


def _pinterest(recorded: Recorded) -> web.Response:
    """Pinterest's answers as the v5 reference shapes them; an event whose ID starts `bad`
    is refused with 422, and the others in its request are not processed."""
    if recorded.headers.get("Authorization") != "Bearer PIN-TOKEN":
        return web.json_response({"code": 2, "message": "Authentication failed."}, status=401)
    data = recorded.json()["data"]
    failed = [e for e in data if e["event_id"].startswith("bad")]
    if failed:
        return web.json_response(
            {"code": 1, "message": "Not all events were successfully processed.", "details": {}},
            status=422,
        )
    return web.json_response(
        {
            "num_events_received": len(data),
            "num_events_processed": len(data),
            "events": [{"status": "processed"} for _ in data],
        }
    )


def _config(make_config: MakeConfig, endpoint: str, token: str = TOKEN) -> Config:
    return make_config(
        f"""
trusted_proxies: [127.0.0.1/32]
destinations:
  pinterest:
    type: pinterest_capi
    ad_account_id: "549755885175"
    access_token: {token}
    endpoint: {endpoint}
    batch: {{max_wait_ms: 0}}
    retry: {{base_ms: 10, max_ms: 20, auth_probe_ms: 60000}}
sources:
  meta_pixel: {{send_to: [pinterest]}}
  ga4: {{send_to: [pinterest]}}
  server: {{send_to: [pinterest], api_keys: [KEY-0123456789abcdef]}}
cookies: {{domain: shop.example}}
"""
    )


async def test_a_ga4_hit_reaches_pinterest_with_its_event_id_and_the_epik_cookie(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _pinterest
    gw = await start_gateway(_config(make_config, fake_platform.url))
    response = await gw.client.get(
        "/g/collect?v=2&tid=G-ABC123&cid=123.456&_p=1&en=purchase&ep.event_id=ord-9"
        "&cu=EUR&epn.value=12.5&dl=https%3A%2F%2Fshop.example%2Fthanks",
        headers={"User-Agent": UA, "X-Forwarded-For": "198.51.100.1", "Cookie": "_epik=ck-1"},
    )
    assert response.status in (200, 204)
    assert "_epik" not in response.headers.getall("Set-Cookie", [""])[0]  # passed, never set
    await eventually(lambda: len(fake_platform.requests) == 1)
    request = fake_platform.requests[0]
    assert request.path == "/v5/ad_accounts/549755885175/events"
    assert request.query == {}
    (event,) = request.json()["data"]
    assert event["event_name"] == "checkout"
    assert event["event_id"] == "ord-9"
    assert event["user_data"] == {
        "client_ip_address": "198.51.100.1",
        "client_user_agent": UA,
        "click_id": "ck-1",
    }
    assert event["custom_data"] == {"currency": "EUR", "value": "12.5"}

    async def sent() -> bool:
        return await gw.rows("SELECT status, http_status FROM deliveries") == [("sent", 200)]

    await eventually(sent)


async def test_one_bad_event_in_a_batch_is_isolated(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _pinterest
    gw = await start_gateway(_config(make_config, fake_platform.url))
    ids = ["good-0", "good-1", "bad-2", "good-3"]
    events = [_event(event_id=i, event_time=int(time.time())) for i in ids]
    await gw.app[PIPELINE].ingest(events, ["pinterest"])

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
    assert [m for e, _, m in rows if e == "bad-2"] == [
        "code 1: Not all events were successfully processed."
    ]
    sent_ids = [[e["event_id"] for e in r.json()["data"]] for r in fake_platform.requests]
    assert sent_ids[0] == ids  # the fault fired: the whole batch went first and was refused
    assert ["bad-2"] in sent_ids


async def test_a_refused_token_makes_it_unhealthy_with_events_queued(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _pinterest
    gw = await start_gateway(_config(make_config, fake_platform.url, token="EXPIRED"))
    await gw.app[PIPELINE].ingest([_event(event_time=int(time.time()))], ["pinterest"])
    await eventually(lambda: len(fake_platform.requests) == 1)
    assert fake_platform.requests[0].headers["Authorization"] == "Bearer EXPIRED"

    async def paused() -> bool:
        ready = await (await gw.client.get("/readyz")).json()
        return ready["destinations"]["pinterest"]["healthy"] is False

    await eventually(paused)
    assert await gw.rows("SELECT status FROM deliveries") == [("queued",)]  # nothing dead


async def test_validate_uses_the_test_mode_and_records_nothing(
    make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _pinterest
    out = io.StringIO()
    code = await run_validate(_config(make_config, fake_platform.url), out)
    assert code == 0, out.getvalue()
    (request,) = fake_platform.requests
    assert request.raw_query == "test=true"
    assert [e["event_name"] for e in request.json()["data"]] == ["page_visit", "checkout"]
    assert "pinterest: 2 sample events to its test mode (?test=true): HTTP 200" in out.getvalue()
    assert "PIN-TOKEN" not in out.getvalue()


@pytest.mark.parametrize("raw", [b"<html>login</html>", b"", b'{"num_events_received": 3'])
def test_a_2xx_without_pinterests_answer_is_retried_not_sent(raw: bytes) -> None:
    # A captive proxy's page or a cut-off body: nothing says the events arrived.
    result = classify_pinterest(Answer(200, raw, {}, None), 3)
    assert result.verdict is Verdict.RETRY
    assert "without Pinterest's answer" in result.message
