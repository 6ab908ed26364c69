"""TikTok pixel hits, from the shapes of real captured traffic (docs/platforms.md §3.1)."""

from __future__ import annotations

import base64
from decimal import Decimal
from urllib.parse import parse_qsl, quote, urlsplit

import orjson
import pytest
from multidict import MultiDict, MultiDictProxy

from gateway.event import Content, TikTokExtras
from gateway.settings import SourceSettings
from gateway.sources import tiktok_pixel
from gateway.sources.base import GIF, Hit, Outcome
from gateway.sources.tiktok_pixel import TikTokPixel, decode_message, event_time

# 2026-06-29T17:50:00Z: the captured hits were sent a few minutes around this.
RECEIVED = 1_782_755_400.25
EMAIL = "8d9b70fd" + "0" * 52 + "a3aa"
PHONE = "860e1f38" + "1" * 52 + "0c71"
PAGEVIEW = (
    b'{"event":"Pageview","event_id":"","message_id":"messageId-1782755227730-8018620532307-'
    b'CABC123","timestamp":"2026-06-29T17:47:07.730Z","context":{"pixel":{"code":"CABC123",'
    b'"runtime":"1"},"page":{"url":"https://shop.example/ectest.html","referrer":'
    b'"https://tagassistant.google.com/"},"user":{},"device":{"platform":"pc"},"library":'
    b'{"name":"pixel.js","version":"legacy-2.2.1"}},"properties":{}}'
)
REGISTRATION = (
    b'{"event":"CompleteRegistration","event_id":"ID1","timestamp":"2026-06-29T17:49:01.369Z",'
    b'"context":{"pixel":{"code":"CABC123"},"page":{"url":"https://shop.example/ectest.html"},'
    b'"user":{"email":"' + EMAIL.encode() + b'","phone_number":"' + PHONE.encode() + b'",'
    b'"external_id":"123456"}},"properties":{"currency":"USD","value":0}}'
)
ADD_TO_CART = (
    b'{"event":"AddToCart","event_id":"ID1","timestamp":"2026-06-29T17:52:13.505Z","context":'
    b'{"pixel":{"code":"CABC123"},"page":{"url":"https://shop.example/shop/","referrer":'
    b'"https://shop.example/"}},"properties":{"currency":"EUR","value":"99.95","contents":'
    b'[{"content_id":119,"content_name":"Bundle","price":99.95,"quantity":1,'
    b'"content_type":"product"}]}}'
)

source = TikTokPixel(SourceSettings())


def hit(
    target: str,
    method: str = "POST",
    body: bytes = b"",
    cookies: dict[str, str] | None = None,
    referer: str | None = None,
    gpc: bool = False,
) -> Hit:
    parts = urlsplit(target)
    query = MultiDictProxy(MultiDict(parse_qsl(parts.query, keep_blank_values=True)))
    return Hit(
        method=method,
        path=parts.path,
        query=query,
        query_string=parts.query,
        body=body,
        content_type="application/json" if body else None,
        cookies=cookies or {},
        client_ip="203.0.113.7",
        user_agent="Mozilla/5.0 (test)",
        received_at=RECEIVED,
        referer=referer,
        gpc=gpc,
    )


def event_of(
    body: bytes,
    path: str = "/api/v2/pixel",
    cookies: dict[str, str] | None = None,
    gpc: bool = False,
) -> Hit:
    return hit(path, "POST", body, cookies=cookies, gpc=gpc)


def with_event(name: str, **extra: object) -> bytes:
    return orjson.dumps({"event": name, "event_id": "e-1", **extra})


def test_pageview_with_an_empty_event_id() -> None:
    parsed = source.parse(event_of(PAGEVIEW))
    assert parsed.outcome is Outcome.OK
    (event,) = parsed.events
    assert event.event_name == "page_view"
    assert event.source == "tiktok_pixel"
    assert event.event_id.startswith("tg-")
    assert event.dedupable is False
    assert event.event_time == 1_782_755_227
    assert event.event_source_url == "https://shop.example/ectest.html"
    assert event.referrer == "https://tagassistant.google.com/"
    assert event.user.client_ip == "203.0.113.7"
    assert event.user.user_agent == "Mozilla/5.0 (test)"
    assert event.tiktok == TikTokExtras(event="Pageview", pixel_code="CABC123")
    assert event.custom.extra == {}
    assert event.consent_signals == {}
    assert event.raw is not None
    assert (event.raw.vendor, event.raw.body) == ("tiktok", PAGEVIEW)
    assert parsed.notes == {"transport": "post", "pixel_code": "CABC123"}


def test_complete_registration_carries_user_fields() -> None:
    (event,) = source.parse(event_of(REGISTRATION, "/api/v2/pixel/track/")).events
    assert event.event_name == "complete_registration"
    assert (event.event_id, event.dedupable) == ("ID1", True)
    assert event.event_time == 1_782_755_341
    # Hashed by the pixel: passed through. external_id arrives raw and is copied as is.
    assert (event.user.email, event.user.phone) == (EMAIL, PHONE)
    assert event.user.external_id == "123456"
    assert event.custom.currency == "USD"
    assert event.custom.value == Decimal("0")


def test_add_to_cart_normalizes_numbers_given_as_strings_and_the_reverse() -> None:
    (event,) = source.parse(event_of(ADD_TO_CART, "/api/v2/pixel/act")).events
    assert event.event_name == "add_to_cart"
    assert event.event_time == 1_782_755_533
    assert event.custom.value == Decimal("99.95")
    assert event.custom.currency == "EUR"
    assert event.custom.contents == (
        Content(id="119", quantity=1, item_price=Decimal("99.95"), name="Bundle"),
    )
    assert event.referrer == "https://shop.example/"


def test_get_analytics_message_url_safe_without_padding() -> None:
    # `~~~???` makes both `-` and `_` in url-safe base64 (`+` and `/` in the standard form).
    body = orjson.dumps({**orjson.loads(ADD_TO_CART), "properties": {"query": "~~~???"}})
    message = base64.urlsafe_b64encode(body).decode().rstrip("=")
    assert "-" in message
    assert "_" in message
    parsed = source.parse(hit(f"/api/v2/pixel/act?analytics_message={message}", "GET"))
    (event,) = parsed.events
    assert event.event_name == "add_to_cart"
    assert event.custom.search_string == "~~~???"
    assert parsed.notes["transport"] == "get-message"


def test_get_analytics_message_standard_base64_with_plus_turned_space() -> None:
    body = orjson.dumps({"event": "Lead", "properties": {"query": "~~~???"}})
    message = base64.b64encode(body).decode()
    assert "+" in message
    assert decode_message(message) == orjson.loads(body)
    # An unescaped `+` in a query string reads as a space.
    parsed = source.parse(hit(f"/api/v2/pixel/act?analytics_message={message}", "GET"))
    assert parsed.events[0].event_name == "lead"
    assert parsed.events[0].custom.search_string == "~~~???"
    # Escaped properly, it arrives intact too.
    (event,) = source.parse(
        hit(f"/api/v2/pixel/act?analytics_message={quote(message)}", "GET")
    ).events
    assert event.event_name == "lead"


def test_analytics_message_given_as_plain_json() -> None:
    assert decode_message(' {"event":"Search"} ') == {"event": "Search"}


def test_get_noscript_image() -> None:
    target = "/api/v2/pixel?id=CABC123&ev=PageView&noscript=1"
    parsed = source.parse(hit(target, "GET", referer="https://shop.example/?ttclid=E.C.P.v1"))
    (event,) = parsed.events
    assert event.event_name == "page_view"  # `PageView` here, `Pageview` from ttq.page()
    assert event.tiktok == TikTokExtras(event="PageView", pixel_code="CABC123")
    assert event.event_time == int(RECEIVED)
    assert event.event_source_url == "https://shop.example/?ttclid=E.C.P.v1"
    assert event.user.ids.get("ttclid") == "E.C.P.v1"
    assert event.dedupable is False
    assert parsed.notes == {"transport": "noscript", "pixel_code": "CABC123"}


def test_noscript_optional_params() -> None:
    target = "/api/v2/pixel?id=CABC123&ev=Purchase&noscript=1&value=10.5&currency=EUR&event_id=o-9"
    (event,) = source.parse(hit(target, "GET")).events
    assert (event.event_name, event.event_id, event.dedupable) == ("purchase", "o-9", True)
    assert (event.custom.value, event.custom.currency) == (Decimal("10.5"), "EUR")


def test_legacy_names_map_but_are_kept_as_received() -> None:
    (event,) = source.parse(event_of(with_event("CompletePayment"))).events
    assert event.event_name == "purchase"
    assert event.tiktok.event == "CompletePayment"
    (event,) = source.parse(event_of(with_event("SubmitForm"))).events
    assert event.event_name == "lead"
    (event,) = source.parse(event_of(with_event("PlaceAnOrder"))).events
    assert event.event_name == "PlaceAnOrder"  # soft-deprecated, never a purchase


def test_ttp_and_ttclid_from_the_payload_url_and_cookies() -> None:
    body = with_event(
        "ViewContent",
        context={
            "user": {"anonymous_id": "ttp-from-json"},
            "page": {"url": "https://shop.example/p?ttclid=E.C.P.url"},
        },
    )
    cookies = {"_ttp": "ttp-cookie", "ttclid": "E.C.P.cookie"}
    (event,) = source.parse(event_of(body, cookies=cookies)).events
    assert (event.user.ids.get("ttp"), event.user.ids.get("ttclid")) == (
        "ttp-from-json",
        "E.C.P.url",
    )
    (event,) = source.parse(event_of(with_event("ViewContent"), cookies=cookies)).events
    assert (event.user.ids.get("ttp"), event.user.ids.get("ttclid")) == (
        "ttp-cookie",
        "E.C.P.cookie",
    )


def test_flat_properties_and_extras() -> None:
    body = with_event(
        "ViewContent",
        properties={
            "content_id": 42,
            "content_type": "product",
            "content_name": "Socks",
            "order_id": 7,
            "description": "blue",
            "gtm_version": "1.0",
            "event_trigger_source": "GTM",
        },
    )
    (event,) = source.parse(event_of(body)).events
    assert event.custom.content_ids == ("42",)
    assert (event.custom.content_type, event.custom.content_name) == ("product", "Socks")
    assert event.custom.order_id == "7"
    assert event.custom.extra == {"description": "blue"}


def test_an_implausible_timestamp_falls_back_to_the_receive_time() -> None:
    assert event_time("2020-01-01T00:00:00Z", RECEIVED) == int(RECEIVED)
    assert event_time("2099-01-01T00:00:00Z", RECEIVED) == int(RECEIVED)
    assert event_time("not a time", RECEIVED) == int(RECEIVED)
    assert event_time(None, RECEIVED) == int(RECEIVED)
    assert event_time(1_782_755_000_000, RECEIVED) == 1_782_755_000  # epoch ms
    assert event_time("2026-06-29T17:47:07", RECEIVED) == 1_782_755_227  # naive = UTC


def test_non_events_are_ignored() -> None:
    for request in (
        hit("/api/v2/pixel/perf", "POST", b'{"event":"EnrichAM"}'),
        hit("/api/v2/pixel/perf", "POST", b'{"perf":{"fcp":120}}'),
        event_of(b'{"event":"EnrichAM","context":{}}'),
        event_of(b'{"context":{"pixel":{"code":"CABC123"}}}'),
        event_of(b'{"event":""}'),
        event_of(b"[1, 2]"),
        hit("/api/v2/pixel?id=CABC123", "GET"),
        hit("/api/v2/pixel", "GET"),
    ):
        parsed = source.parse(request)
        assert parsed.events == ()
        assert parsed.outcome is Outcome.IGNORED


def test_garbage_is_malformed_not_an_exception() -> None:
    for request in (
        event_of(b"\xff\xfe not json"),
        event_of(b""),
        hit("/api/v2/pixel/act?analytics_message=%%%", "GET"),
        hit("/api/v2/pixel/act?analytics_message=abcde", "GET"),
    ):
        parsed = source.parse(request)
        assert parsed.events == ()
        assert parsed.outcome is Outcome.MALFORMED


def test_garbage_fields_inside_an_event_are_dropped() -> None:
    body = orjson.dumps(
        {
            "event": "Purchase",
            "event_id": ["x"],
            "timestamp": {"t": 1},
            "context": "nope",
            "properties": {"value": {"v": 1}, "contents": "none", "currency": ["EUR"]},
        }
    )
    (event,) = source.parse(event_of(body)).events
    assert event.event_name == "purchase"
    assert event.dedupable is False
    assert (event.custom.value, event.custom.currency, event.custom.contents) == (None, None, ())


def test_routes() -> None:
    assert sorted(source.routes()) == sorted(
        [
            ("POST", "/api/v2/pixel"),
            ("POST", "/api/v2/pixel/"),
            ("POST", "/api/v2/pixel/act"),
            ("POST", "/api/v2/pixel/act/"),
            ("POST", "/api/v2/pixel/track"),
            ("POST", "/api/v2/pixel/track/"),
            ("POST", "/api/v2/pixel/perf"),
            ("GET", "/api/v2/pixel"),
            ("GET", "/api/v2/pixel/act"),
        ]
    )


def test_answers() -> None:
    for answered in (source.answer(event_of(PAGEVIEW)), source.answer(None)):
        assert answered.status == 200
        assert answered.body == b'{"code":0,"message":"OK"}'
        assert answered.content_type == "application/json"
    image = source.answer(hit("/api/v2/pixel?id=CABC123&ev=PageView&noscript=1", "GET"))
    assert (image.status, image.body, image.content_type) == (200, GIF, "image/gif")


def test_absurd_amounts_are_dropped_not_carried() -> None:
    body = with_event(
        "Purchase",
        properties={"value": "1e1000000", "contents": [{"content_id": "a", "price": "9e999999"}]},
    )
    (event,) = source.parse(event_of(body)).events
    assert event.custom.value is None
    assert event.custom.contents == (Content(id="a"),)


def test_properties_past_the_bound_are_dropped_and_counted_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 40,000 properties blocked the loop for 0.2-0.5 s (each is checked for personal data and
    # written into every payload); the typed ones are read wherever they stand.
    properties: dict[str, object] = {f"p{i}": "v" for i in range(40_000)}
    properties["value"] = "12.5"
    body = with_event("ViewContent", properties=properties)
    parsed = source.parse(event_of(body))
    (event,) = parsed.events
    assert event.custom.value == Decimal("12.5")
    assert len(event.custom.extra) == tiktok_pixel.MAX_PROPERTIES
    assert list(event.custom.extra)[:2] == ["p0", "p1"]
    assert parsed.notes["dropped_params"] == str(40_000 - tiktok_pixel.MAX_PROPERTIES)
    # Control: with the bound lifted every property is carried (the old behaviour).
    monkeypatch.setattr(tiktok_pixel, "MAX_PROPERTIES", 10**9)
    (event,) = source.parse(event_of(body)).events
    assert len(event.custom.extra) == 40_000
