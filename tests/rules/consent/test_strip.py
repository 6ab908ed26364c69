"""`on_denied: limited` (docs/consent.md §7)."""

from __future__ import annotations

from dataclasses import fields

import pytest

from gateway.destinations import IDENTIFIERS
from gateway.event import Custom, Event, RawHit, User
from gateway.rules.consent.strip import STRIPPED_USER_FIELDS, limited, strip_click_ids, truncate_ip

# --- on_denied: limited (docs/consent.md §7) ------------------------------------------------------

FULL_USER = User(
    email="jane@example.com",
    phone="+14155550100",
    first_name="Jane",
    last_name="Doe",
    gender="f",
    date_of_birth="1990-04-01",
    city="San Francisco",
    state="CA",
    zip="94107",
    country="US",
    external_id="cust-42",
    client_ip="203.0.113.7",
    user_agent="Mozilla/5.0 (X11; Linux x86_64)",
    ids={
        "fbp": "fb.1.1795000000000.123456789",
        "fbc": "fb.1.1795000000000.IwAR",
        "ttp": "ttp-cookie",
        "ttclid": "ttclid-1",
        "gclid": "gclid-1",
        "ga_client_id": "123.456",
    },
)


def make_event(user: User = FULL_USER) -> Event:
    return Event(
        event_id="ord-1",
        event_name="purchase",
        event_time=1795000000,
        source="server",
        user=user,
        custom=Custom(order_id="1001", currency="EUR"),
        event_source_url="https://shop.example/thanks?order=1&gclid=abc&utm_source=x#top",
        referrer="https://shop.example/cart?fbclid=IwAR",
        raw=RawHit("meta", "GET", "/tr", "fbp=fb.1.2.3", b"", None),
    )


def test_limited_strips_identifiers_and_keeps_the_rest() -> None:
    event = make_event()
    out = limited(event)
    for name in STRIPPED_USER_FIELDS:
        assert getattr(out.user, name) is None, name
    for name in IDENTIFIERS:
        assert name not in out.user.ids, name
    assert out.user.user_agent == FULL_USER.user_agent
    assert out.user.client_ip == "203.0.113.0"
    assert out.event_source_url == "https://shop.example/thanks?order=1&utm_source=x#top"
    assert out.referrer == "https://shop.example/cart"
    assert out.raw is None
    assert (out.event_id, out.event_name, out.custom) == (
        event.event_id,
        event.event_name,
        event.custom,
    )
    assert event.user == FULL_USER  # the original is untouched


def test_limited_covers_every_identifier_field() -> None:
    # A new User field must be classified here on purpose: stripped, truncated or kept.
    kept_or_truncated = {"client_ip", "user_agent"}
    names = {f.name for f in fields(User)}
    assert names == set(STRIPPED_USER_FIELDS) | kept_or_truncated | {"ids"}
    # Every vendor identifier (`ids`) is stripped unless its declaration says `limited_keeps`.
    assert not [name for name, i in IDENTIFIERS.items() if i.limited_keeps]
    assert {"fbp", "fbc", "ttp", "ttclid", "gclid", "ga_client_id"} <= set(IDENTIFIERS)
    assert {"epik", "rdt_uuid", "sccid", "scid"} <= set(IDENTIFIERS)


@pytest.mark.parametrize(
    ("ip", "truncated"),
    [
        ("203.0.113.7", "203.0.113.0"),
        ("10.1.2.255", "10.1.2.0"),
        ("2001:db8:abcd:12:3456:789a:bcde:f012", "2001:db8:abcd::"),
        ("2001:0db8:00ab::1", "2001:db8:ab::"),
        ("::ffff:203.0.113.7", "203.0.113.0"),
        ("fe80::1:2:3:4%eth0", "fe80::"),
        ("not-an-ip", None),
        ("", None),
        (None, None),
    ],
)
def test_truncate_ip(ip: str | None, truncated: str | None) -> None:
    assert truncate_ip(ip) == truncated
    out = limited(make_event(User(client_ip=ip)))
    assert out.user.client_ip == truncated


@pytest.mark.parametrize(
    ("url", "stripped"),
    [
        (None, None),
        ("https://shop.example/", "https://shop.example/"),
        ("https://shop.example/?a=1&b=%20", "https://shop.example/?a=1&b=%20"),
        ("https://shop.example/?GCLID=1&a=1", "https://shop.example/?a=1"),
        ("https://shop.example/?_gl=1*abc&wbraid=x", "https://shop.example/"),
        ("https://shop.example/#/p?ttclid=1&q=2", "https://shop.example/#/p?q=2"),
        ("https://shop.example/?msclkid=1#frag", "https://shop.example/#frag"),
    ],
)
def test_strip_click_ids(url: str | None, stripped: str | None) -> None:
    assert strip_click_ids(url) == stripped
