"""Personal data in free-form fields, told by the field's name or an address in its value."""

from __future__ import annotations

import pytest

from gateway.pii import personal_field


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("email", "x"),
        ("customer_email", "x"),
        ("user-phone", "1"),
        ("Shipping Address", "x"),
        ("first_name", "Jane"),
        ("dob", "1990-01-01"),
        ("zip", "94107"),
        ("ip", "203.0.113.7"),
        ("note", "call me, jane.doe@example.com"),
        ("tags", ["a", {"b": "x@shop.io"}]),
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
    ],
)
def test_not_personal(key: str, value: object) -> None:
    assert not personal_field(key, value)
