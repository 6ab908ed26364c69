"""Personal data in free-form fields, told by the field's name or an address in its value."""

from __future__ import annotations

import pytest

from gateway.event import Content, Custom, Event, Ga4Extras
from gateway.personal_data.detect import holds_phone, personal_field
from gateway.personal_data.scrub import scrub_event
from gateway.personal_data.urls import scrub_url


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("email", "jane@example.com"),
        ("customer_email", "JANE@EXAMPLE.COM"),
        ("user-phone", "+44 20 7946 0958"),
        ("Shipping Address", "x"),
        ("first_name", "Jane"),
        ("dob", "1990-01-01"),
        ("zip", "94107"),
        ("ip", "203.0.113.7"),
        ("note", "call me, jane.doe@example.com"),
        ("tags", ["a", {"b": "x@shop.io"}]),
        ("customer_name", "Jane Doe"),
        ("phone_no", "4155550100"),
        ("mobile_number", 4155550100),
        ("address_line1", "1 Main St"),
        ("billing_zip", "94107"),
        ("email2", "jane@example.org"),
        ("customer", {"phone": "+1 (415) 555-0100"}),
        ("jane@example.com", "a key that is an address"),
        ("deep", {"a": {"b": {"c": {"d": {"e": "jane@example.com"}}}}}),
        ("avatar", "https://img.example/u/jane@example.com.png"),
        ("phone", "+44 20 7946 0958 ext. 1234"),
        ("user_id", "u-123"),
        ("customerEmail", "jane@example.com"),
        ("firstName", "Jane"),
    ],
)
def test_personal(key: str, value: object) -> None:
    assert personal_field(key, value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("coupon", "SUMMER"),
        ("content_name", "Wool socks"),
        ("order_id", "ord-1001"),
        ("shipping_tier", "Ground"),
        ("email_opt_in", True),
        ("promo", "50% off @ the store"),
        ("handle", "@shop"),
        ("is_mobile", True),
        ("device_mobile", "yes"),
        ("has_email", True),
        ("image", "sku-1@2x.jpg"),
        ("phone_model", "iPhone 15"),
        ("email_campaign", "summer_sale"),
        ("hotel_id", "1234567"),
        ("telemetry_id", "1234567"),
        ("smartphone_ean", "4006381333931"),
        ("mobile_app_version", "12.3.4567"),
        ("streetwear_collection", "Summer"),
        ("birthday_coupon", "BDAY10"),
        ("gzip", "1"),
        ("retina", "sku@2x.heic"),
        ("contents", [{"id": "sku-1", "image": "https://cdn.example/sku-1@2x.png"}]),
    ],
)
def test_not_personal(key: str, value: object) -> None:
    assert not personal_field(key, value)


# --- URLs: a parameter whose value is a person goes, whatever it is called ---------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://shop.example/thanks?email=jane%40example.com&sku=7",
            "https://shop.example/thanks?sku=7",
        ),
        ("https://s.example/p?customer_email=jane@example.com", "https://s.example/p"),
        ("https://s.example/p?user%5Bemail%5D=jane%40example.com&a=1", "https://s.example/p?a=1"),
        ("https://s.example/p?user[email]=jane@example.com&a=1", "https://s.example/p?a=1"),
        ("https://s.example/p?e=jane%40example.com&a=1", "https://s.example/p?a=1"),
        ("https://s.example/p?tel=4155550100&a=1", "https://s.example/p?a=1"),
        ("https://s.example/p?x=%2B14155550100&a=1", "https://s.example/p?a=1"),
        ("https://s.example/p?x=%2B44%2020%207946%200958", "https://s.example/p"),
        ("https://s.example/#/cart?phone=4155550100&step=2", "https://s.example/#/cart?step=2"),
        ("https://s.example/p?a=1#x?phone=%2B14155550100", "https://s.example/p?a=1#x"),
        (
            "https://s.example/p?next=https%3A%2F%2Fs.example%2Fq%3Fm%3Djane%2540example.com",
            "https://s.example/p",
        ),
    ],
)
def test_personal_url_params_go_by_their_values(url: str, expected: str) -> None:
    assert scrub_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://s.example/p?q=a%26b&sku=7&utm_source=news",
        "https://s.example/p?order=1001&ts=1795000000000&page=2",
        "https://s.example/img/sku-1@2x.jpg?v=3",
        "https://s.example/p?promo=50%25+off+%40+store",
        "https://s.example/p?gclid=Cj0KCQ&fbclid=IwAR0x",
    ],
)
def test_other_urls_keep_every_byte(url: str) -> None:
    assert scrub_url(url) == url


def test_names_given_go_as_well() -> None:
    assert scrub_url("https://s.example/p?token=abc&a=1", frozenset({"token"})) == (
        "https://s.example/p?a=1"
    )


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("call +1 (415) 555-0100 after six", True),
        ("+44 20 7946 0958", True),
        ("+4915112345678", True),
        ("4155550100", False),  # no country code: an order number as much as a phone number
        ("size +2", False),
        ("50% off +10 points", False),
        ("sku 12345678", False),
    ],
)
def test_phone_numbers_in_free_text(text: str, found: bool) -> None:
    assert holds_phone(text) is found


def test_the_gate_drops_free_text_items_and_properties_by_name_only() -> None:
    event = Event(
        event_id="e",
        event_name="purchase",
        event_time=1,
        source="ga4",
        event_source_url="https://s.example/p?e=jane%40example.com&sku=1",
        custom=Custom(
            page_title="Hi +1 (415) 555-0100",
            contents=(Content(id="s1", name="for jane@example.com"), Content(id="s2")),
            extra={"note": "x", "who": "jane@example.com"},
        ),
        ga4=Ga4Extras(
            "G-1",
            "purchase",
            user_properties={"tier": "gold", "mobile": "+4915112345678"},
            items=({"item_id": "s1", "email": "a@b.example"},),
        ),
    )
    scrubbed = scrub_event(event)
    assert scrubbed.fields == (
        "event_source_url",
        "custom.who",
        "custom.page_title",
        "custom.contents[0].name",
        "user_properties.mobile",
        "items[0].email",
    )
    out = scrubbed.event
    assert out.event_source_url == "https://s.example/p?sku=1"
    assert out.custom.page_title is None
    assert out.custom.contents == (Content(id="s1"), Content(id="s2"))
    assert out.custom.extra == {"note": "x"}
    assert out.ga4 is not None
    assert out.ga4.user_properties == {"tier": "gold"}
    assert out.ga4.items == ({"item_id": "s1"},)
    assert scrub_event(out).fields == ()  # once through, nothing is left to drop
