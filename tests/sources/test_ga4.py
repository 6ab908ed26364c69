"""GA4 gtag hits, from the shapes of real captured traffic (docs/platforms.md §2.1)."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import parse_qsl, urlsplit

import pytest
from multidict import MultiDict, MultiDictProxy

from gateway.event import Content, Ga4Extras
from gateway.sources import ga4
from gateway.sources.base import Hit, Outcome
from gateway.sources.ga4 import Ga4, Ga4Settings

RECEIVED = 1_795_000_000.5
PAGE_VIEW = (
    "/g/collect?v=2&tid=G-ABC123&gtm=45je4620&_p=102644968&cid=1489945657.1691089601"
    "&ul=en-us&sr=1920x1080&_s=1&sid=1691096027&sct=3&seg=0"
    "&dl=https%3A%2F%2Fshop.example%2Fblog%2F&dt=Blog&en=page_view&_ss=1&_ee=1"
)
SHARED = "/g/collect?v=2&tid=G-ABC123&cid=1369988567.1756151735&_p=1758117262938&en=page_view"
EM_B64 = "YqFORPdlQZ0Q_qmTZzYacnwSNl4lIPMiGNUF7Zqg9i8"
EM_HEX = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
CHECKOUT = (
    f"{SHARED}&gcs=G111&gcd=13t3t3Z2t5l1&dma=1&dma_cps=syphamo&npa=0"
    f"&em=tv.1~em.{EM_B64}~co0.NO&dl=https%3A%2F%2Fshop.example%2Fcheckout"
)
CHECKOUT_LINE = (
    "en=begin_checkout&cu=NOK&epn.value=3180&_c=1"
    "&pr1=idSKU-1~nmFleece~brBrand~caOriginal~pr1590~qt2~vaBlue"
)

source = Ga4(Ga4Settings())


def hit(
    target: str,
    method: str = "GET",
    body: bytes = b"",
    content_type: str | None = None,
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
        content_type=content_type,
        cookies={},
        client_ip="203.0.113.7",
        user_agent="Mozilla/5.0 (test)",
        received_at=RECEIVED,
        gpc=gpc,
    )


def post(target: str, *lines: str) -> Hit:
    return hit(target, "POST", "\n".join(lines).encode(), "text/plain;charset=UTF-8")


def test_get_page_view_maps_every_field() -> None:
    parsed = source.parse(hit(PAGE_VIEW))
    assert parsed.outcome is Outcome.OK
    (event,) = parsed.events
    assert event.event_name == "page_view"
    assert event.source == "ga4"
    assert event.event_time == 1_795_000_000  # gtag sends no timestamp: receive time
    assert event.event_source_url == "https://shop.example/blog/"
    assert event.custom.page_title == "Blog"
    assert event.user.ids.get("ga_client_id") == "1489945657.1691089601"
    assert event.user.client_ip == "203.0.113.7"
    assert event.user.user_agent == "Mozilla/5.0 (test)"
    assert event.user.email is None
    assert event.custom.extra == {}
    assert event.ga4 == Ga4Extras(
        measurement_id="G-ABC123",
        event_name="page_view",
        line=0,
        lines=1,
        session_id="1691096027",
        session_count=3,
        session_engaged=0,
        page_load_id="102644968",
        hit_sequence=1,
    )
    assert parsed.notes["tid"] == "G-ABC123"
    assert parsed.notes["transport"] == "query"
    assert event.consent_signals == {}


def test_no_event_id_gets_a_generated_one_and_is_not_deduplicable() -> None:
    first = source.parse(hit(PAGE_VIEW)).events[0]
    second = source.parse(hit(PAGE_VIEW)).events[0]
    assert first.event_id.startswith("tg-")
    assert first.event_id != second.event_id
    assert first.dedupable is False


def test_every_event_keeps_the_whole_request_for_a_forward() -> None:
    (event,) = source.parse(hit(PAGE_VIEW)).events
    assert event.raw is not None
    assert event.raw.vendor == "ga4"
    assert (event.raw.method, event.raw.path) == ("GET", "/g/collect")
    assert event.raw.query_string == urlsplit(PAGE_VIEW).query


def test_post_lines_are_events_and_override_the_query() -> None:
    request = post(
        SHARED + "&dt=Home",
        "en=page_view&_et=3674",
        "en=click&_et=799&dt=Test%20Page",
        "",  # blank lines are skipped
        "en=scroll&epn.percent_scrolled=90&cid=999.888",
    )
    parsed = source.parse(request)
    assert parsed.outcome is Outcome.OK
    assert [e.event_name for e in parsed.events] == ["page_view", "click", "scroll"]
    view, click, scroll = parsed.events
    assert view.ga4.engagement_time_msec == 3674
    assert click.ga4.engagement_time_msec == 799
    assert scroll.ga4.engagement_time_msec is None
    # The line's dt replaces the query's; the others keep it.
    assert [e.custom.page_title for e in parsed.events] == ["Home", "Test Page", "Home"]
    assert [e.user.ids.get("ga_client_id") for e in parsed.events] == [
        "1369988567.1756151735",
        "1369988567.1756151735",
        "999.888",
    ]
    assert scroll.custom.extra == {"percent_scrolled": 90}
    assert {e.ga4.measurement_id for e in parsed.events} == {"G-ABC123"}
    assert [e.ga4.line for e in parsed.events] == [0, 1, 2]
    assert {e.raw for e in parsed.events} == {parsed.events[0].raw}
    assert parsed.events[0].raw is not None
    assert parsed.events[0].raw.body == request.body
    assert len({e.event_id for e in parsed.events}) == 3
    assert parsed.notes["events"] == "3"
    assert parsed.notes["transport"] == "post-lines"


def test_a_whitespace_body_means_the_query_is_the_event() -> None:
    parsed = source.parse(hit(SHARED, "POST", b" \r\n\n  "))
    assert [e.event_name for e in parsed.events] == ["page_view"]


def test_begin_checkout_with_items_user_data_and_consent() -> None:
    (event,) = source.parse(post(CHECKOUT, CHECKOUT_LINE)).events
    assert event.event_name == "initiate_checkout"
    assert event.custom.currency == "NOK"
    assert event.custom.value == Decimal("3180")
    assert event.custom.contents == (
        Content(
            id="SKU-1",
            quantity=2,
            item_price=Decimal("1590"),
            name="Fleece",
            category="Original",
            brand="Brand",
        ),
    )
    assert list(event.ga4.items) == [
        {
            "item_id": "SKU-1",
            "item_name": "Fleece",
            "item_brand": "Brand",
            "item_category": "Original",
            "price": 1590,
            "quantity": 2,
            "item_variant": "Blue",
        }
    ]
    # base64url digest re-encoded as hex, so it passes through instead of being hashed twice.
    assert event.user.email == EM_HEX
    assert event.user.country == "NO"
    assert event.consent_signals == {
        "gcs": "G111",
        "gcd": "13t3t3Z2t5l1",
        "npa": "0",
        "dma": "1",
        "dma_cps": "syphamo",
    }
    assert "_c" not in event.custom.extra


def test_user_provided_data_fields() -> None:
    phone_b64 = "hg4fOOXj7dOfjhhANAx89f4kwyIsjKVbyCGlZAu-XFQ"
    em = f"tv.1~em.{EM_B64}~pn.{phone_b64}~fn0.{EM_B64}~ln0.Doe~pc0.0150~co0.NO"
    (event,) = source.parse(hit(f"{SHARED}&em={em}&uid=cust-42")).events
    assert event.user.email == EM_HEX
    assert event.user.phone == "860e1f38e5e3edd39f8e1840340c7cf5fe24c3222c8ca55bc821a5640bbe5c54"
    assert event.user.first_name == EM_HEX
    assert event.user.last_name == "Doe"  # not a digest: raw, hashed later by the destination
    assert event.user.zip == "0150"
    assert event.user.country == "NO"
    assert event.user.external_id == "cust-42"


def test_an_empty_em_is_absent() -> None:
    (event,) = source.parse(hit(f"{SHARED}&em=tv.1~em.~co0.")).events
    assert (event.user.email, event.user.country) == (None, None)


def test_purchase_with_an_event_id() -> None:
    line = "en=purchase&ep.event_id=X&ep.transaction_id=T-1001&epn.value=129.90&cu=EUR"
    (event,) = source.parse(post(SHARED, line)).events
    assert event.event_name == "purchase"
    assert event.event_id == "X"
    assert event.dedupable is True
    assert event.custom.order_id == "T-1001"
    assert event.custom.value == Decimal("129.90")
    assert event.custom.currency == "EUR"
    assert event.custom.extra == {}


def test_purchase_without_an_event_id_uses_the_transaction_id() -> None:
    # gtag sends a numeric transaction_id as `epn.`.
    (event,) = source.parse(post(SHARED, "en=purchase&epn.transaction_id=1001")).events
    assert (event.event_id, event.custom.order_id, event.dedupable) == ("1001", "1001", True)


def test_other_events_do_not_borrow_the_transaction_id() -> None:
    (event,) = source.parse(post(SHARED, "en=refund&ep.transaction_id=T-1")).events
    assert event.event_id.startswith("tg-")
    assert event.dedupable is False


def test_the_event_id_param_is_configurable() -> None:
    custom = Ga4(Ga4Settings(event_id_param="eid"))
    (event,) = custom.parse(post(SHARED, "en=sign_up&ep.eid=reg-1&ep.event_id=other")).events
    assert event.event_name == "complete_registration"
    assert event.event_id == "reg-1"
    assert event.custom.extra == {"event_id": "other"}


def test_params_search_user_properties_and_gclid() -> None:
    target = (
        f"{SHARED}&dl=https%3A%2F%2Fshop.example%2F%3Fgclid%3DCj0KCQ-abc%26x%3D1"
        "&dr=https%3A%2F%2Fwww.google.com%2F&up.plan=pro&upn.age_days=12.5"
    )
    line = "en=search&ep.search_term=wool%20socks&ep.list=main&epn.results=7&epn.ratio=0.25"
    (event,) = source.parse(post(target, line)).events
    assert event.event_name == "search"
    assert event.custom.search_string == "wool socks"
    assert event.custom.extra == {"list": "main", "results": 7, "ratio": 0.25}
    assert event.user.ids.get("gclid") == "Cj0KCQ-abc"
    assert event.referrer == "https://www.google.com/"
    assert event.ga4.user_properties == {"plan": "pro", "age_days": 12.5}


def test_items_in_order_with_custom_item_params() -> None:
    line = (
        "en=add_to_cart&pr2=idB~nmSecond~k0color~v0Red"
        "&pr1=idA~pr9.5~qt1~k0size~v012~k1fit~v1slim~lp3"
        "&pr3=nmOnly%20a%20name"
    )
    (event,) = source.parse(post(SHARED, line)).events
    assert [c.id for c in event.custom.contents] == ["A", "B"]  # an item needs an ID here
    items = event.ga4.items
    assert items[0] == {
        "item_id": "A",
        "price": 9.5,
        "quantity": 1,
        "index": 3,
        "size": "12",
        "fit": "slim",
    }
    assert items[1] == {"item_id": "B", "item_name": "Second", "color": "Red"}
    assert items[2] == {"item_name": "Only a name"}


def test_an_ambiguous_custom_item_value_resolves_against_the_k_indices() -> None:
    # `v112` could be index 1 → "12" or index 11 → "2"; k11 exists and has no other value.
    line = "en=add_to_cart&pr1=idA~k1size~k11pack~v1M~v112"
    (event,) = source.parse(post(SHARED, line)).events
    item = event.ga4.items[0]
    assert (item["size"], item["pack"]) == ("M", "2")


def test_lines_without_tid_cid_or_en_are_skipped_and_counted() -> None:
    parsed = source.parse(post("/g/collect?v=2&tid=G-ABC123&cid=1.2", "en=page_view", "_et=5"))
    assert [e.event_name for e in parsed.events] == ["page_view"]
    assert parsed.outcome is Outcome.OK
    assert parsed.notes["skipped"] == "1"


def test_a_hit_with_no_valid_event_is_malformed() -> None:
    for request in (
        hit("/g/collect?v=2&tid=G-ABC123&en=page_view"),  # no cid
        hit("/g/collect"),
        post("/g/collect?v=2&cid=1.2", "en=page_view", "en=click"),  # no tid
        post(SHARED, "en="),
    ):
        parsed = source.parse(request)
        assert parsed.events == ()
        assert parsed.outcome is Outcome.MALFORMED


def test_routes_and_answer() -> None:
    assert list(source.routes()) == [("GET", "/g/collect"), ("POST", "/g/collect")]
    moved = Ga4(Ga4Settings(path="/collect-here"))
    assert list(moved.routes()) == [("GET", "/collect-here"), ("POST", "/collect-here")]
    for answered in (source.answer(hit(PAGE_VIEW)), source.answer(None)):
        assert answered.status == 204
        assert answered.body is None


def test_absurd_amounts_are_dropped_not_carried() -> None:
    # Finite decimals, but a destination turning them into ints would stall for minutes.
    line = "en=purchase&epn.value=1e1000000&pr1=idA~pr9e999999~qt1&epn.big=1e1000000"
    (event,) = source.parse(post(SHARED, line)).events
    assert event.custom.value is None
    assert event.custom.contents == (Content(id="A", quantity=1),)
    assert event.custom.extra == {"big": "1e1000000"}  # not a JSON number: kept as text


def test_lines_and_params_past_the_bounds_are_counted_not_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 1,000 lines of 100 parameters kept the loop busy for 2-3 s: each line is an event that
    # is checked, built into every payload and stored (bench/hostile.py).
    line = "en=page_view&" + "&".join(f"ep.p{i}=v" for i in range(100))
    parsed = source.parse(post(SHARED, *(f"{line}&_et={n}" for n in range(1000))))
    assert len(parsed.events) == ga4.MAX_EVENTS
    assert parsed.notes["dropped"] == str(1000 - ga4.MAX_EVENTS)
    wide = "en=page_view&ep.event_id=w-1&" + "&".join(f"ep.q{i}=v" for i in range(5000))
    parsed = source.parse(post(SHARED, wide))
    (event,) = parsed.events
    assert event.event_id == "w-1"  # read: it came before the bound
    assert parsed.notes["dropped_params"] == str(5002 - ga4.MAX_PARAMS)
    # Control: with the bounds lifted every line is an event (the old behaviour).
    monkeypatch.setattr(ga4, "MAX_EVENTS", 10**9)
    assert len(source.parse(post(SHARED, *(f"{line}&_et={n}" for n in range(300)))).events) == 300
