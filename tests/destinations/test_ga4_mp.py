"""GA4 Measurement Protocol: Google's normalization, payload shape, limits, grouping, answers."""

from __future__ import annotations

import re
from dataclasses import replace
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError
from structlog.testing import capture_logs

from gateway.destinations.base import Answer, Item, Rejected, Verdict
from gateway.destinations.ga4_mp import (
    Ga4Mp,
    Ga4MpSettings,
    client_id_for,
    event_payload,
    google_user_data,
)
from gateway.event import Consent, ConsentState, Content, Custom, Event, Ga4Extras, User
from gateway.personal_data.hashing import sha256_hex
from gateway.personal_data.match_keys import email_dotless_gmail as google_email
from gateway.personal_data.match_keys import name_words as google_name
from gateway.personal_data.match_keys import phone_e164 as google_phone

GRANTED, DENIED = ConsentState.GRANTED, ConsentState.DENIED


def _destination(**overrides: object) -> Ga4Mp:
    settings = Ga4MpSettings(
        type="ga4_mp",
        measurement_id="G-ABC123",
        api_secret=SecretStr("SECRET/xyz"),
        endpoint="http://127.0.0.1:9",
        **overrides,
    )
    return Ga4Mp("ga4", settings)


def _server_event(**overrides: object) -> Event:
    """As the server API would hand it over: raw personal data, explicit consent."""
    fields: dict[str, object] = {
        "event_id": "ord-1001",
        "event_name": "purchase",
        "event_time": 1_795_000_000,
        "source": "server",
        "event_source_url": "https://shop.example/checkout/thanks",
        "referrer": "https://shop.example/checkout",
        "user": User(
            email="Jane.Doe@Gmail.com",
            phone="+1 (415) 555-0100",
            first_name="Jane",
            last_name="Doe",
            city="San Francisco",
            state="CA",
            zip="94107",
            country="US",
            external_id="cust-42",
            client_ip="203.0.113.7",
            user_agent="Mozilla/5.0",
            ids={"ga_client_id": "123.456"},
        ),
        "custom": Custom(
            value=Decimal("129.90"),
            currency="eur",
            order_id="ord-1001",
            contents=(
                Content("sku-1", 2, Decimal("64.95"), name="Fleece", category="Tops", brand="B"),
            ),
        ),
        "consent": Consent(GRANTED, GRANTED, GRANTED, DENIED),
    }
    fields.update(overrides)
    return Event(**fields)  # type: ignore[arg-type]


def _browser_event(**overrides: object) -> Event:
    """As the GA4 source makes one from a gtag hit: hashes already made, GA4 extras aside."""
    fields: dict[str, object] = {
        "event_id": "tg-abc",
        "event_name": "add_to_cart",
        "event_time": 1_795_000_100,
        "source": "ga4",
        "event_source_url": "https://shop.example/p/1",
        "user": User(
            email="A" * 64,  # already hashed (hex); must pass through, lowercased
            country="NO",
            client_ip="198.51.100.1",
            user_agent="Mozilla/5.0",
            ids={"ga_client_id": "1489945657.1691089601"},
        ),
        "custom": Custom(
            value=Decimal("3180"),
            currency="NOK",
            page_title="Fleece",
            extra={"coupon": "SUMMER", "bad-name": "x", "nested": {"a": 1}},
        ),
        "ga4": Ga4Extras(
            measurement_id="G-ABC123",
            event_name="purchase",
            session_id="1691096027",
            engagement_time_msec=3674,
            items=({"item_id": "SKU-1", "item_name": "Fleece", "item_variant": "Blue"},),
            user_properties={"tier": "gold"},
        ),
    }
    fields.update(overrides)
    return Event(**fields)  # type: ignore[arg-type]


# --- Google's normalization (docs/platforms.md §2.3) ----------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Jane.Doe@Gmail.com", "janedoe@gmail.com"),
        ("  j.a.n.e@googlemail.com ", "jane@googlemail.com"),
        ("Jane.Doe@Example.com", "jane.doe@example.com"),
        ("not-an-email", None),
    ],
)
def test_google_email(raw: str, normalized: str | None) -> None:
    assert google_email(raw) == normalized


def test_google_phone_keeps_the_plus() -> None:
    assert google_phone(None)("+1 (415) 555-0100") == "+14155550100"
    assert google_phone("GB")("07911 123456") == "+447911123456"


def test_user_data_by_googles_rules() -> None:
    data = google_user_data(_server_event().user)
    assert data == {
        "sha256_email_address": [sha256_hex("janedoe@gmail.com")],
        "sha256_phone_number": [sha256_hex("+14155550100")],
        "address": [
            {
                "sha256_first_name": sha256_hex("jane"),
                "sha256_last_name": sha256_hex("doe"),
                "city": "san francisco",
                "region": "ca",
                "postal_code": "94107",
                "country": "US",
            }
        ],
    }


def test_made_hashes_pass_through_and_hashed_clear_fields_are_dropped() -> None:
    made = "AB" * 32
    data = google_user_data(User(email=made, phone=made.lower(), city="c" * 64, country="US"))
    assert data == {
        "sha256_email_address": [made.lower()],
        "sha256_phone_number": [made.lower()],
        # A Meta pixel hashes the city; Google wants it in clear, so it cannot be used.
        "address": [{"country": "US"}],
    }


_HEX64 = st.text(alphabet="0123456789abcdefABCDEF", min_size=64, max_size=64)
_EMAILS = st.builds(
    lambda email, upper, pad: (" " * pad) + (email.upper() if upper else email) + (" " * pad),
    st.emails(),
    st.booleans(),
    st.integers(0, 2),
)
_PHONES = st.from_regex(r"\+?[1-9][0-9 ()\-]{6,14}", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(email=_EMAILS, name=st.text(max_size=30), phone=_PHONES)
def test_normalization_is_idempotent(email: str, name: str, phone: str) -> None:
    once = google_email(email)
    assert once is None or google_email(once) == once
    named = google_name(name)
    assert named is None or google_name(named) == named
    e164 = google_phone("US")(phone)
    assert e164 is None or (re.fullmatch(r"\+[0-9]+", e164) and google_phone(None)(e164) == e164)


@settings(max_examples=100, deadline=None)
@given(made=_HEX64)
def test_a_made_hash_is_never_hashed_again(made: str) -> None:
    data = google_user_data(User(email=made, phone=f" {made} ", first_name=made))
    assert data["sha256_email_address"] == [made.lower()]
    assert data["sha256_phone_number"] == [made.lower()]
    assert data["address"] == [{"sha256_first_name": made.lower()}]


# --- payloads -------------------------------------------------------------------------------------


def test_server_event_payload_field_by_field() -> None:
    payload = _destination().prepare(_server_event())
    assert payload == {
        "client_id": "123.456",
        "timestamp_micros": 1_795_000_000_000_000,
        # external_id is never stored in plain text: it goes as its hash.
        "user_id": sha256_hex("cust-42"),
        "ip_override": "203.0.113.7",
        "user_data": google_user_data(_server_event().user),
        "consent": {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"},
        "event": {
            "name": "purchase",
            "params": {
                "page_location": "https://shop.example/checkout/thanks",
                "page_referrer": "https://shop.example/checkout",
                "currency": "EUR",
                "value": 129.9,
                "transaction_id": "ord-1001",
                "items": [
                    {
                        "item_id": "sku-1",
                        "item_name": "Fleece",
                        "price": 64.95,
                        "quantity": 2,
                        "item_brand": "B",
                        "item_category": "Tops",
                    }
                ],
                "event_id": "ord-1001",
            },
        },
    }
    assert "jane" not in orjson.dumps(payload).decode().lower()


def test_browser_event_payload_field_by_field() -> None:
    with capture_logs() as logs:
        payload = _destination().prepare(_browser_event())
    assert payload == {
        "client_id": "1489945657.1691089601",
        "timestamp_micros": 1_795_000_100_000_000,
        "ip_override": "198.51.100.1",
        "user_data": {"sha256_email_address": ["a" * 64], "address": [{"country": "NO"}]},
        "user_properties": {"tier": {"value": "gold"}},
        "event": {
            "name": "add_to_cart",
            "params": {
                "page_location": "https://shop.example/p/1",
                "page_title": "Fleece",
                "currency": "NOK",
                "value": 3180,
                # The hit's own items, every field kept (item_variant included).
                "items": [{"item_id": "SKU-1", "item_name": "Fleece", "item_variant": "Blue"}],
                "session_id": "1691096027",
                "engagement_time_msec": 3674,
                "event_id": "tg-abc",
                "coupon": "SUMMER",
            },
        },
    }
    (dropped,) = [e for e in logs if e["event"] == "ga4.params_dropped"]
    assert set(dropped["invalid"]) == {"bad-name", "nested"}


def test_no_consent_signal_sends_no_consent_and_denied_ad_user_data_sends_no_user_data() -> None:
    plain = event_payload(_server_event(consent=Consent()))
    assert isinstance(plain, dict)
    assert "consent" not in plain
    assert "user_data" in plain
    denied = event_payload(_server_event(consent=Consent(ad_user_data=DENIED)))
    assert isinstance(denied, dict)
    assert denied["consent"] == {"ad_user_data": "DENIED"}
    assert "user_data" not in denied


def test_empty_order_id_never_becomes_an_empty_transaction_id() -> None:
    payload = event_payload(_server_event(custom=Custom(order_id="")))
    assert isinstance(payload, dict)
    assert "transaction_id" not in payload["event"]["params"]


def test_no_client_id_is_invented() -> None:
    """Without gtag's client ID, GA4 gets nothing rather than a new, unattributed user; the row
    says why (`dropped_rule`, not `dead`: nothing is wrong with the event)."""
    for user in (
        User(email="jane@example.com"),
        User(ids={"fbp": "fb.1.1596403881668.1116446470"}),
    ):
        assert client_id_for(_server_event(user=user)) is None
        prepared = _destination().prepare(_server_event(user=user))
        assert prepared == Rejected("no ga_client_id", skipped=True)


def test_a_user_id_keeps_one_client_id_per_person() -> None:
    user = User(external_id="cust-42", email="jane@example.com")
    first = client_id_for(_server_event(user=user, event_id="a"))
    second = client_id_for(_server_event(user=user, event_id="b"))
    assert first is not None
    assert re.fullmatch(r"[0-9]+\.[0-9]+", first)
    assert first == second  # one person, one client ID, across events and retries


def test_a_limited_event_gets_one_client_id_per_event() -> None:
    def limited(event_id: str) -> str | None:
        return client_id_for(replace(_server_event(user=User(), event_id=event_id), limited=True))

    assert limited("a") != limited("b")
    assert limited("a") == limited("a")
    assert limited("a") is not None


@pytest.mark.parametrize("name", ["add-to-cart", "1st_event", "x" * 41, "google_thing", "ga_x"])
def test_names_ga4_refuses_are_rejected(name: str) -> None:
    prepared = _destination().prepare(_server_event(event_name=name))
    assert isinstance(prepared, Rejected)
    assert "GA4 needs" in prepared.reason
    assert Ga4Mp.preview(_server_event(event_name=name)) is None


def test_canonical_names_map_to_ga4_names() -> None:
    prepared = event_payload(_server_event(event_name="lead"))
    assert isinstance(prepared, dict)
    assert prepared["event"]["name"] == "generate_lead"


def test_long_values_are_cut_to_the_limit_and_logged() -> None:
    url = "https://shop.example/" + "p" * 2000
    custom = Custom(
        page_title="t" * 400,
        contents=(Content("i" * 150),),
        extra={"note": "n" * 150},
    )
    with capture_logs() as logs:
        payload = event_payload(_server_event(event_source_url=url, custom=custom))
    assert isinstance(payload, dict)
    params = payload["event"]["params"]
    assert len(params["page_location"]) == 1000
    assert len(params["page_title"]) == 300
    assert len(params["note"]) == 100
    assert len(params["items"][0]["item_id"]) == 100
    trimmed = {(e["param"], e["limit"]) for e in logs if e["event"] == "ga4.value_trimmed"}
    assert trimmed == {
        ("page_location", 1000),
        ("page_title", 300),
        ("note", 100),
        ("items.item_id", 100),
    }
    assert all("ppp" not in str(e) for e in logs)  # lengths are logged, never values


def test_params_past_25_are_dropped_and_logged() -> None:
    extra = {f"p{i:02d}": i for i in range(40)}
    with capture_logs() as logs:
        payload = event_payload(_server_event(custom=Custom(extra=extra)))
    assert isinstance(payload, dict)
    params = payload["event"]["params"]
    assert len(params) == 25
    assert params["event_id"] == "ord-1001"  # the standard ones come first
    # One summary line per event, never one per parameter (a hostile hit has thousands).
    (dropped,) = [e for e in logs if e["event"] == "ga4.params_dropped"]
    assert dropped["over_limit"] == len(extra) + 3 - 25  # page_location, page_referrer, event_id
    assert len(dropped["names"]) <= 10


# --- requests ------------------------------------------------------------------------------------


def _items_for(events: list[Event]) -> list[Item]:
    items = []
    for i, event in enumerate(events):
        payload = event_payload(event)
        assert isinstance(payload, dict)
        items.append(Item(i, payload))
    return items


def test_one_client_60_events_make_three_requests() -> None:
    dest = _destination()
    events = [_browser_event(event_id=f"e{i}", event_time=1_795_000_000 + i) for i in range(60)]
    requests = dest.build_requests(_items_for(events))
    assert [len(r.items) for r in requests] == [25, 25, 10]
    first = requests[0]
    parts = urlsplit(first.url)
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "127.0.0.1:9", "/mp/collect")
    assert parse_qs(parts.query) == {"measurement_id": ["G-ABC123"], "api_secret": ["SECRET/xyz"]}
    assert first.headers == {"Content-Type": "application/json"}
    body = orjson.loads(first.body or b"")
    assert body["client_id"] == "1489945657.1691089601"
    assert body["timestamp_micros"] == 1_795_000_000_000_000  # the earliest of the request
    assert [e["params"]["event_id"] for e in body["events"]] == [f"e{i}" for i in range(25)]
    assert body["events"][3]["timestamp_micros"] == 1_795_000_003_000_000
    assert list(body) == [
        "client_id",
        "timestamp_micros",
        "ip_override",
        "user_properties",
        "user_data",
        "events",
    ]


def test_a_request_carries_one_client_and_one_user() -> None:
    dest = _destination()
    a = _browser_event(event_id="a1")
    b = _browser_event(event_id="b1", user=User(ids={"ga_client_id": "2.2"}))
    a2 = _browser_event(event_id="a2")
    denied = _browser_event(event_id="a3", consent=Consent(ad_user_data=DENIED))
    requests = dest.build_requests(_items_for([a, b, a2, denied]))
    carried = [[i.delivery_id for i in r.items] for r in requests]
    assert carried == [[0, 2], [1], [3]]
    for request in requests:
        body = orjson.loads(request.body or b"")
        assert len({e["params"]["event_id"][0] for e in body["events"]}) == 1


def test_a_body_over_130_kb_is_split() -> None:
    dest = _destination()
    extra = {f"p{i:02d}": "v" * 100 for i in range(20)}
    items = [{"item_id": f"{n}-" + "i" * 90, "item_name": "n" * 100} for n in range(60)]
    events = [
        _browser_event(
            event_id=f"e{i}",
            custom=Custom(extra=extra),
            ga4=Ga4Extras("G-ABC123", "purchase", items=tuple(items)),
        )
        for i in range(25)
    ]
    requests = dest.build_requests(_items_for(events))
    assert len(requests) > 1
    assert sum(len(r.items) for r in requests) == 25
    assert all(len(r.body or b"") < 130_000 for r in requests)


def test_debug_requests_go_to_the_validation_server() -> None:
    dest = _destination()
    (request,) = dest.debug_requests(_items_for([_server_event()]))
    assert urlsplit(request.url).path == "/debug/mp/collect"
    assert orjson.loads(request.body or b"")["validation_behavior"] == "ENFORCE_RECOMMENDATIONS"


def test_preview_is_the_body_of_one_request() -> None:
    preview = Ga4Mp.preview(_server_event())
    assert isinstance(preview, dict)
    assert preview["client_id"] == "123.456"
    assert [e["name"] for e in preview["events"]] == ["purchase"]


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        (Answer(204, b"", {}), Verdict.SENT),
        (Answer(200, b"", {}), Verdict.SENT),
        (Answer(429, b"", {"Retry-After": "30"}), Verdict.RETRY),
        (Answer(503, b"down", {}), Verdict.RETRY),
        (Answer(None, b"", {}, error="timeout after 10.0s"), Verdict.RETRY),
        (Answer(400, b"bad", {}), Verdict.DEAD),
    ],
)
def test_classification_by_status(answer: Answer, verdict: Verdict) -> None:
    dest = _destination()
    (request,) = dest.build_requests(_items_for([_server_event()]))
    assert dest.classify(request, answer).verdict is verdict


def test_retry_after_is_kept() -> None:
    dest = _destination()
    (request,) = dest.build_requests(_items_for([_server_event()]))
    assert dest.classify(request, Answer(429, b"", {"Retry-After": "30"})).retry_after_s == 30.0


def test_settings_and_describe() -> None:
    dest = _destination()
    assert "SECRET" not in dest.describe()
    assert dest.describe() == "ga4_mp G-ABC123 via http://127.0.0.1:9"
    assert dest.settings.secrets() == (dest.settings.api_secret,)
    assert Ga4MpSettings(type="ga4_mp", measurement_id="G-X1Y2", api_secret=SecretStr("s")).endpoint
    with pytest.raises(ValidationError):
        Ga4MpSettings(type="ga4_mp", measurement_id="UA-1234-1", api_secret=SecretStr("s"))
    assert (Ga4Mp.max_batch, Ga4Mp.max_age_s) == (25, 72 * 3600)


def test_a_limited_event_keeps_no_session_or_user_properties() -> None:
    import dataclasses

    from gateway.destinations.ga4_mp import event_payload
    from gateway.event import Event

    event = Event(
        event_id="e",
        event_name="page_view",
        event_time=1_795_000_000,
        source="ga4",
        user=User(ids={"ga_client_id": "1.2"}),
        ga4=Ga4Extras(
            "G-ABC123", "page_view", session_id="1795000000", user_properties={"tier": "gold"}
        ),
    )
    whole = event_payload(event)
    limited = event_payload(dataclasses.replace(event, limited=True))
    assert isinstance(whole, dict)
    assert isinstance(limited, dict)
    assert whole["event"]["params"]["session_id"] == "1795000000"  # the control
    assert "session_id" not in limited["event"]["params"]
    assert "user_properties" not in limited
