"""Meta Conversions API: hashing by Meta's rules, payload shape, answer classification."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from pydantic import SecretStr

from gateway.destinations.base import Answer, Item, Rejected, Verdict
from gateway.destinations.meta_capi import (
    MetaCapi,
    MetaCapiSettings,
    classify_meta,
    meta_user_data,
)
from gateway.event import Content, Custom, Event, User
from gateway.personal_data.hashing import sha256_hex

# Meta's published normalized values and their SHA-256 (docs/platforms.md §1.3).
VECTORS = {
    "john_smith@gmail.com": "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f",
    "16505551212": "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176",
    "mary": "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec",
    "valéry": "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c",
    "19970216": "01acdbf6ec7b4f478a225f1a246e5d6767eeab1a7ffa17f025265b5b94f40f0c",
    "us": "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621",
    "f": "252f10c83610ebca1a059c0bae8255eba2f95be4d1d7bcfa89d7248a82d9f111",
    "ca": "6959097001d10501ac7d54c0bdb8db61420f658f2922cc26e46d536119a31126",
    "94035": "1794327a4d443904421f5ca1f3d72d0a62ba2f0770d80755ec2220fc0efb052e",
    "newyork": "350c754ba4d38897693aa077ef43072a859d23f613443133fecbbd90a3512ca5",
    "m11ae": "1dc694c2070e697769fb959b50671d76cafd430d8ca191fbdd0affcaea344ac5",
}


@pytest.mark.parametrize(("normalized", "digest"), VECTORS.items())
def test_published_vectors(normalized: str, digest: str) -> None:
    assert sha256_hex(normalized) == digest


def test_raw_fields_normalize_to_metas_examples() -> None:
    data = meta_user_data(
        User(
            email="  John_Smith@gmail.com ",
            phone="(650)555-1212",
            first_name="Mary",
            last_name="Vale\u0301ry",  # NFD on purpose: must hash like NFC
            gender="Female",
            date_of_birth="2/16/1997",
            city="New York",
            state="California",
            zip="94035-1234",
            country="United States",
        )
    )
    assert data["em"] == VECTORS["john_smith@gmail.com"]
    assert data["ph"] == VECTORS["16505551212"]
    assert data["fn"] == VECTORS["mary"]
    assert data["ln"] == VECTORS["valéry"]
    assert data["ge"] == VECTORS["f"]
    assert data["db"] == VECTORS["19970216"]
    assert data["ct"] == VECTORS["newyork"]
    assert data["st"] == VECTORS["ca"]
    assert data["zp"] == VECTORS["94035"]
    assert data["country"] == VECTORS["us"]


def test_uk_postcode_and_trunk_zero() -> None:
    data = meta_user_data(User(zip="M1 1AE", country="GB", phone="+44 (0)7911 123456"))
    assert data["zp"] == VECTORS["m11ae"]
    assert data["ph"] == sha256_hex("447911123456")


def test_hashes_pass_through_and_identifiers_stay_clear() -> None:
    made = "A" * 64
    data = meta_user_data(
        User(
            email=made,
            client_ip="203.0.113.7",
            user_agent="UA",
            ids={
                "fbp": "fb.1.1596403881668.1116446470",
                "fbc": "fb.1.1554763741205.IwAR2F4-dbP0l7Mn1IawQQ",
            },
        )
    )
    assert data == {
        "em": "a" * 64,
        "client_ip_address": "203.0.113.7",
        "client_user_agent": "UA",
        "fbp": "fb.1.1596403881668.1116446470",
        "fbc": "fb.1.1554763741205.IwAR2F4-dbP0l7Mn1IawQQ",
    }


def _destination(**overrides: object) -> MetaCapi:
    settings = MetaCapiSettings(
        type="meta_capi",
        pixel_id="1234567890",
        access_token=SecretStr("TOKEN-123"),
        endpoint="http://127.0.0.1:9",
        **overrides,  # type: ignore[arg-type]
    )
    return MetaCapi("meta", settings)


def _event(**overrides: object) -> Event:
    fields: dict[str, object] = {
        "event_id": "ord-1001",
        "event_name": "purchase",
        "event_time": 1_795_000_000,
        "source": "server",
        "event_source_url": "https://shop.example/thanks",
        "user": User(email="jane@example.com", user_agent="UA", client_ip="203.0.113.7"),
        "custom": Custom(
            value=Decimal("129.90"),
            currency="eur",
            order_id="ord-1001",
            contents=(Content("sku-1", 2, Decimal("64.95")),),
        ),
    }
    fields.update(overrides)
    return Event(**fields)  # type: ignore[arg-type]


def test_prepare_builds_a_server_event() -> None:
    payload = _destination().prepare(_event())
    assert payload == {
        "event_name": "Purchase",
        "event_time": 1_795_000_000,
        "event_id": "ord-1001",
        "action_source": "website",
        "event_source_url": "https://shop.example/thanks",
        "user_data": {
            "em": sha256_hex("jane@example.com"),
            "client_ip_address": "203.0.113.7",
            "client_user_agent": "UA",
        },
        "custom_data": {
            "value": 129.9,
            "currency": "EUR",
            "order_id": "ord-1001",
            "contents": [{"id": "sku-1", "quantity": 2, "item_price": 64.95}],
            "content_ids": ["sku-1"],
        },
    }


@pytest.mark.parametrize(
    ("user", "custom", "reason"),
    [
        (User(user_agent="UA", city="Paris"), None, "insufficient"),
        (User(email="a@b.c"), None, "client_user_agent"),
        (User(email="a@b.c", user_agent="UA"), Custom(), "Purchase needs value"),
    ],
)
def test_events_meta_would_refuse_are_rejected_before_sending(
    user: User, custom: Custom | None, reason: str
) -> None:
    event = _event(user=user, custom=custom or Custom())
    prepared = _destination().prepare(event)
    assert isinstance(prepared, Rejected)
    assert reason in prepared.reason


def test_requests_carry_the_token_in_the_body_and_respect_the_batch_limit() -> None:
    dest = _destination(test_event_code="TEST123")
    items = [Item(i, {"event_name": "PageView"}) for i in range(2500)]
    requests = dest.build_requests(items)
    assert [len(r.items) for r in requests] == [1000, 1000, 500]
    first = requests[0]
    assert first.url == "http://127.0.0.1:9/v25.0/1234567890/events"
    assert "TOKEN" not in first.url
    body = orjson.loads(first.body or b"")
    assert body["access_token"] == "TOKEN-123"
    assert body["test_event_code"] == "TEST123"
    assert body["partner_agent"].startswith("tag-gateway")


def _error(code: int, subcode: int | None = None, status: int = 400, **extra: object) -> Answer:
    error: dict[str, object] = {"message": "m", "type": "OAuthException", "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    error.update(extra)
    return Answer(status, orjson.dumps({"error": error}), {})


@pytest.mark.parametrize(
    ("answer", "batch", "verdict"),
    [
        (Answer(200, b'{"events_received": 2, "messages": []}', {}), 2, Verdict.SENT),
        (_error(17, status=400), 5, Verdict.RETRY),  # user request limit, whatever the status
        (_error(4, status=403), 5, Verdict.RETRY),
        (_error(80003), 5, Verdict.RETRY),
        (_error(2, status=503), 5, Verdict.RETRY),
        (_error(190, 460, status=401), 5, Verdict.RETRY),  # token: waits (auth), see below
        (_error(100, 33), 5, Verdict.DEAD),  # wrong pixel id: no event is at fault
        (_error(100, 2804003), 5, Verdict.SPLIT),  # one event too old spoils the batch
        (_error(100, 2804050), 1, Verdict.DEAD),
        (Answer(502, b"<html>bad gateway</html>", {}), 5, Verdict.RETRY),
        (Answer(None, b"", {}, error="timeout"), 5, Verdict.RETRY),
        # A 200 that is not Meta's answer (a proxy's page, a cut-off body) proves nothing.
        (Answer(200, b"<html>Sign in</html>", {}), 5, Verdict.RETRY),
        (Answer(200, b"", {}), 5, Verdict.RETRY),
        (Answer(200, b'{"events_received": 2', {}), 5, Verdict.RETRY),
        (Answer(200, b'{"fbtrace_id": "A"}', {}), 5, Verdict.RETRY),
    ],
)
def test_classification_by_metas_own_codes(answer: Answer, batch: int, verdict: Verdict) -> None:
    assert classify_meta(answer, batch).verdict is verdict


@pytest.mark.parametrize("subcode", [None, 460, 463])
def test_a_refused_token_is_an_auth_failure_not_a_dead_event(subcode: int | None) -> None:
    result = classify_meta(_error(190, subcode, status=401), 5)
    assert (result.verdict, result.auth) == (Verdict.RETRY, True)
    assert classify_meta(_error(100, 33), 5).auth is False  # a wrong pixel: final, no pause
    assert classify_meta(_error(4, status=403), 5).auth is False  # throttled: OAuthException too


def test_retry_after_is_kept() -> None:
    answer = Answer(429, b"slow down", {"Retry-After": "30"})
    result = classify_meta(answer, 3)
    assert (result.verdict, result.retry_after_s) == (Verdict.RETRY, 30.0)


def test_retry_after_is_bounded() -> None:
    from gateway.destinations.base import MAX_RETRY_AFTER_S, retry_after_seconds

    assert retry_after_seconds({"Retry-After": "1e999"}) is None  # infinity: never due again
    assert retry_after_seconds({"retry-after": "31536000"}) == MAX_RETRY_AFTER_S
    assert retry_after_seconds({"Retry-After": "-5"}) is None


def test_retry_after_as_an_http_date() -> None:
    from gateway.destinations.base import MAX_RETRY_AFTER_S, retry_after_seconds

    now = 1_795_000_000.0  # Wed, 18 Nov 2026 11:06:40 GMT
    assert retry_after_seconds({"Retry-After": "Wed, 18 Nov 2026 11:07:10 GMT"}, now) == 30.0
    assert retry_after_seconds({"Retry-After": "Wed, 18 Nov 2026 11:06:00 GMT"}, now) == 0.0
    assert retry_after_seconds({"Retry-After": "Sun, 18 Nov 2029 11:06:00 GMT"}, now) == (
        MAX_RETRY_AFTER_S
    )
    assert retry_after_seconds({"Retry-After": "Saturday soon"}, now) is None
