"""TikTok Events API: hashing by TikTok's rules, payload shape, batching, answer classification."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from pydantic import SecretStr

from gateway.destinations.base import Answer, Item, Verdict
from gateway.destinations.tiktok_events import (
    TikTokEvents,
    TikTokEventsSettings,
    classify_tiktok,
    tiktok_user,
)
from gateway.event import Content, Custom, Event, TikTokExtras, User
from gateway.personal_data.hashing import sha256_hex


def _destination(**overrides: object) -> TikTokEvents:
    settings = TikTokEventsSettings(
        type="tiktok_events",
        pixel_code="CABC123",
        access_token=SecretStr("TT-TOKEN"),
        endpoint="http://127.0.0.1:9",
        **overrides,
    )
    return TikTokEvents("tiktok", settings)


def _server_event(**overrides: object) -> Event:
    fields: dict[str, object] = {
        "event_id": "ord-1001",
        "event_name": "purchase",
        "event_time": 1_795_000_000,
        "source": "server",
        "event_source_url": "https://shop.example/thanks",
        "referrer": "https://shop.example/checkout",
        "user": User(
            email=" Jane.Doe@Example.com ",
            phone="+1 (213) 373-4253",
            external_id=" Cust-42 ",
            client_ip="203.0.113.7",
            user_agent="Mozilla/5.0",
            ids={"ttp": "ttp-cookie", "ttclid": "click-1"},
        ),
        "custom": Custom(
            value=Decimal("129.90"),
            currency="eur",
            order_id="ord-1001",
            content_type="product",
            contents=(
                Content("sku-1", 2, Decimal("64.95"), name="Fleece", category="Tops", brand="B"),
            ),
        ),
    }
    fields.update(overrides)
    return Event(**fields)  # type: ignore[arg-type]


def _browser_event(**overrides: object) -> Event:
    """As the TikTok pixel source makes one: hashes made by the pixel, the name as received."""
    fields: dict[str, object] = {
        "event_id": "ID1",
        "event_name": "purchase",
        "event_time": 1_795_000_100,
        "source": "tiktok_pixel",
        "event_source_url": "https://shop.example/shop/",
        "user": User(
            email="8D9B" + "0" * 60,
            external_id="123456",  # the pixel sends this one raw
            client_ip="198.51.100.1",
            user_agent="Mozilla/5.0",
            ids={"ttp": "ttp-2"},
        ),
        "custom": Custom(value=Decimal("99.95"), currency="USD", search_string="fleece"),
        "tiktok": TikTokExtras(event="CompletePayment", pixel_code="CABC123"),
    }
    fields.update(overrides)
    return Event(**fields)  # type: ignore[arg-type]


def test_tiktok_normalization() -> None:
    user = tiktok_user(_server_event().user)
    assert user == {
        "email": sha256_hex("jane.doe@example.com"),  # no Gmail dot rule for TikTok
        "phone": sha256_hex("+12133734253"),  # E.164 with the +
        "external_id": sha256_hex("cust-42"),
        "ttp": "ttp-cookie",
        "ttclid": "click-1",
        "ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0",
    }


def test_server_event_payload_field_by_field() -> None:
    assert _destination().prepare(_server_event()) == {
        "event": "Purchase",
        "event_time": 1_795_000_000,
        "event_id": "ord-1001",
        "user": tiktok_user(_server_event().user),
        "properties": {
            "currency": "EUR",
            "value": 129.9,
            "content_type": "product",
            "contents": [
                {
                    "content_id": "sku-1",
                    "content_name": "Fleece",
                    "price": 64.95,
                    "quantity": 2,
                    "brand": "B",
                    "content_category": "Tops",
                }
            ],
            "order_id": "ord-1001",
        },
        "page": {"url": "https://shop.example/thanks", "referrer": "https://shop.example/checkout"},
    }


def test_browser_event_keeps_the_name_as_received() -> None:
    payload = _destination().prepare(_browser_event())
    assert payload == {
        # A legacy name stays legacy, identical to the copy the browser sent TikTok itself.
        "event": "CompletePayment",
        "event_time": 1_795_000_100,
        "event_id": "ID1",
        "user": {
            "email": "8d9b" + "0" * 60,
            "external_id": sha256_hex("123456"),
            "ttp": "ttp-2",
            "ip": "198.51.100.1",
            "user_agent": "Mozilla/5.0",
        },
        "properties": {"currency": "USD", "value": 99.95, "query": "fleece"},
        "page": {"url": "https://shop.example/shop/"},
    }


def test_content_ids_alone_become_contents_and_limited_data_use_is_passed() -> None:
    event = _browser_event(custom=Custom(content_ids=("a", "b")), limited=True, tiktok=None)
    payload = TikTokEvents.preview(event)
    assert payload["event"] == "Purchase"  # no name as received: mapped from canonical
    assert payload["properties"] == {"contents": [{"content_id": "a"}, {"content_id": "b"}]}
    assert payload["limited_data_use"] is True


def test_requests_carry_the_token_in_a_header_and_respect_the_batch_limit() -> None:
    dest = _destination(test_event_code="TEST67890")
    items = [Item(i, {"event": "Pageview", "event_id": str(i)}) for i in range(2500)]
    requests = dest.build_requests(items)
    assert [len(r.items) for r in requests] == [1000, 1000, 500]
    first = requests[0]
    assert first.method == "POST"
    assert first.url == "http://127.0.0.1:9/open_api/v1.3/event/track/"
    assert first.headers == {"Content-Type": "application/json", "Access-Token": "TT-TOKEN"}
    body = orjson.loads(first.body or b"")
    assert "TT-TOKEN" not in (first.body or b"").decode()
    assert body["event_source"] == "web"
    assert body["event_source_id"] == "CABC123"
    assert body["test_event_code"] == "TEST67890"
    assert [e["event_id"] for e in body["data"]][:3] == ["0", "1", "2"]
    assert "test_event_code" not in orjson.loads(
        _destination().build_requests(items)[0].body or b""
    )


def _code(code: int, status: int = 200, message: str = "m") -> Answer:
    body = {"code": code, "message": message, "request_id": "r-1", "data": {}}
    return Answer(status, orjson.dumps(body), {})


@pytest.mark.parametrize(
    ("answer", "batch", "verdict"),
    [
        (_code(0, message="OK"), 5, Verdict.SENT),
        (_code(40002), 5, Verdict.SPLIT),  # one bad event fails the batch: isolate it
        (_code(40002), 1, Verdict.DEAD),
        (_code(40001), 5, Verdict.SPLIT),
        (_code(40100), 5, Verdict.RETRY),  # rate limit, inside an HTTP 200
        (_code(50002), 5, Verdict.RETRY),
        (_code(40105), 5, Verdict.RETRY),  # the token: no split; waits (auth), see below
        (_code(40100, status=429), 5, Verdict.RETRY),
        (_code(40002, status=400), 5, Verdict.DEAD),
        (Answer(502, b"<html>bad gateway</html>", {}), 5, Verdict.RETRY),
        # A 200 that is not TikTok's answer (a proxy's page, a cut-off body) proves nothing.
        (Answer(200, b"not json", {}), 5, Verdict.RETRY),
        (Answer(200, b"", {}), 5, Verdict.RETRY),
        (Answer(200, b'{"message": "OK"}', {}), 5, Verdict.RETRY),
        (Answer(None, b"", {}, error="timeout after 10.0s"), 5, Verdict.RETRY),
    ],
)
def test_classification_by_tiktoks_own_codes(answer: Answer, batch: int, verdict: Verdict) -> None:
    assert classify_tiktok(answer, batch).verdict is verdict


@pytest.mark.parametrize("answer", [_code(40104), _code(40105), _code(40105, status=401)])
def test_a_refused_token_is_an_auth_failure(answer: Answer) -> None:
    result = classify_tiktok(answer, 5)
    assert (result.verdict, result.auth) == (Verdict.RETRY, True)
    assert classify_tiktok(_code(40002), 5).auth is False  # the control


def test_the_message_carries_tiktoks_message_and_code() -> None:
    result = classify_tiktok(_code(40002, message="Invalid value for event_time"), 1)
    assert result.message == "code 40002: Invalid value for event_time (request_id r-1)"


def test_retry_after_is_kept() -> None:
    answer = Answer(429, b'{"code": 40100, "message": "Too many requests"}', {"Retry-After": "7"})
    result = classify_tiktok(answer, 3)
    assert (result.verdict, result.retry_after_s) == (Verdict.RETRY, 7.0)


def test_describe_never_shows_the_token() -> None:
    dest = _destination(test_event_code="TEST1")
    assert "TT-TOKEN" not in dest.describe()
    assert (
        dest.describe()
        == "tiktok_events pixel CABC123 via http://127.0.0.1:9, test_event_code TEST1"
    )
    assert dest.settings.secrets() == (dest.settings.access_token,)
