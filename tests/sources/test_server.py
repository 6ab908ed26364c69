"""The server API's event validation (docs/http.md §2), as pure functions."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from pydantic import SecretStr

from gateway.destinations import IDENTIFIERS
from gateway.sources.server import BodyError, EventError, authorized, parse_body, parse_event

NOW = 1_795_000_000.0


def valid(**overrides: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event_id": "ord-1001",
        "event_name": "purchase",
        "event_time": int(NOW) - 60,
        "action_source": "website",
        "event_source_url": "https://shop.example/checkout/thanks",
        "user": {"email": "Jane.Doe@Example.com", "client_ip": "203.0.113.7"},
        "custom": {
            "value": "129.90",
            "currency": "EUR",
            "order_id": "ord-1001",
            "contents": [{"id": "sku-1", "quantity": 2, "item_price": "64.95"}],
            "content_type": "product",
            "search_string": None,
        },
        "consent": {"ad_storage": "granted", "ad_user_data": "denied"},
    }
    event.update(overrides)
    return event


def test_the_contract_example_parses() -> None:
    event = parse_event(valid(), NOW, IDENTIFIERS)
    assert (event.event_id, event.event_name, event.source) == ("ord-1001", "purchase", "server")
    assert event.custom.value == Decimal("129.90")
    assert event.custom.contents[0].item_price == Decimal("64.95")
    assert event.user.email == "Jane.Doe@Example.com"  # hashed later, per destination
    assert str(event.consent.ad_user_data) == "denied"
    assert event.consent.basis == {"ad_storage": "server", "ad_user_data": "server"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"event_id": None}, "event_id: required"),
        ({"event_id": ""}, "event_id: required"),
        ({"event_name": 5.5}, None),
        ({"event_time": int(NOW) + 3600}, "event_time: in the future"),
        ({"event_time": int(NOW) - 8 * 86400}, "event_time: more than 7 days in the past"),
        ({"event_time": "yesterday"}, "event_time: must be Unix seconds"),
        ({"action_source": "web"}, "action_source: must be one of"),
        ({"event_source_url": None}, "event_source_url: required when action_source is website"),
        (
            {"custom": {"value": "1", "currency": "EUR0"}},
            "custom.currency: unknown currency 'EUR0'",
        ),
        ({"custom": {"value": "12,50", "currency": "EUR"}}, "custom.value: not a decimal number"),
        ({"custom": {"value": "10"}}, "custom.currency: required when custom.value is given"),
        ({"custom": {"contents": [{"quantity": 1}]}}, "custom.contents[0].id: required"),
        ({"user": {"emial": "x"}}, "user.emial: unknown field"),
        ({"consent": {"ad_storage": "yes"}}, "consent.ad_storage: must be 'granted' or 'denied'"),
        ({"colour": "red"}, "colour: unknown field"),
    ],
)
def test_invalid_events_name_the_field(change: dict[str, object], message: str | None) -> None:
    if message is None:  # a number where a name is expected is taken as its text
        parse_event(valid(**change), NOW, IDENTIFIERS)
        return
    with pytest.raises(EventError) as caught:
        parse_event(valid(**change), NOW, IDENTIFIERS)
    assert str(caught.value).startswith(message)


def test_other_action_sources_need_no_url() -> None:
    event = parse_event(
        valid(action_source="physical_store", event_source_url=None), NOW, IDENTIFIERS
    )
    assert event.event_source_url is None


def test_a_batch_keeps_the_valid_and_indexes_the_rest() -> None:
    body = orjson.dumps(
        {"events": [valid(), valid(custom={"value": 1, "currency": "EURO"}), valid(event_id="b")]}
    )
    batch = parse_body(body, NOW, IDENTIFIERS)
    assert [i for i, _ in batch.events] == [0, 2]
    assert batch.rejected == [{"index": 1, "error": "custom.currency: unknown currency 'EURO'"}]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{nope", "body is not JSON"),
        (b"[]", "body must be a JSON object"),
        (b"{}", "events: required"),
        (b'{"events": {}}', "events: required"),
        (orjson.dumps({"events": [{}] * 1001}), "events: at most 1000"),
    ],
)
def test_bad_bodies(body: bytes, message: str) -> None:
    with pytest.raises(BodyError, match=message):
        parse_body(body, NOW, IDENTIFIERS)


def test_authorization() -> None:
    keys = (SecretStr("k-one"), SecretStr("k-two"))
    assert authorized("Bearer k-two", keys)
    assert not authorized("Bearer k-thr", keys)
    assert not authorized("k-one", keys)
    assert not authorized(None, keys)
    assert not authorized("Bearer ", keys)
    # Stripped to nothing, a non-breaking space must not match an (invalid) empty key.
    assert not authorized("Bearer \u00a0", (SecretStr(""),))
