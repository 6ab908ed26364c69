"""Personal data in free-form fields, told by the field's name or an address in its value."""

from __future__ import annotations

import pytest

from gateway.personal_data.detect import personal_field


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
