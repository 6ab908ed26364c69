"""`forward`: the original hit to its vendor's host only, plain-text personal data hashed."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, parse_qsl, quote, urlsplit

import orjson
import pytest
from pydantic import ValidationError

from gateway.destinations.base import Answer, Item, Rejected, Verdict
from gateway.destinations.forward import Forward, ForwardSettings, Vendor, vendor_path
from gateway.destinations.meta_capi import meta_user_data
from gateway.event import PURPOSES, Consent, ConsentState, Event, Ga4Extras, RawHit, User
from gateway.personal_data.hashing import sha256_hex


def _destination(vendor: Vendor, endpoint: str | None = None) -> Forward:
    settings = ForwardSettings(type="forward", vendor=vendor, endpoint=endpoint)
    return Forward(f"{vendor}_forward", settings)


GRANTED = Consent(**dict.fromkeys(PURPOSES, ConsentState.GRANTED))


def _event(raw: RawHit | None, **overrides: object) -> Event:
    """The event a source made of the hit: its page URLs are the hit's own `dl` and `dr`/`rl`."""
    params = parse_qs(raw.query_string) if raw else {}
    fields: dict[str, object] = {
        "event_id": "e1",
        "event_name": "page_view",
        "event_time": 1_795_000_000,
        "source": "meta_pixel",
        "event_source_url": params.get("dl", [None])[0],
        "referrer": (params.get("dr") or params.get("rl") or [None])[0],
        "user": User(client_ip="203.0.113.9", user_agent="Mozilla/5.0 (X11)"),
        "consent": GRANTED,
        "raw": raw,
    }
    fields.update(overrides)
    return Event(**fields)  # type: ignore[arg-type]


def _hit(vendor: str, query: str = "", body: bytes = b"", **overrides: object) -> RawHit:
    fields: dict[str, object] = {
        "vendor": vendor,
        "method": "POST" if body else "GET",
        "path": {"meta": "/tr/", "ga4": "/g/collect", "tiktok": "/api/v2/pixel"}[vendor],
        "query_string": query,
        "body": body,
        "content_type": None,
    }
    fields.update(overrides)
    return RawHit(**fields)  # type: ignore[arg-type]


def _prepared(dest: Forward, event: Event) -> dict[str, object]:
    prepared = dest.prepare(event)
    assert isinstance(prepared, dict)
    return prepared


def test_only_hits_from_the_configured_vendor_are_taken() -> None:
    dest = _destination("meta")
    assert dest.accepts(_event(_hit("meta", "id=1&ev=PageView")))
    assert not dest.accepts(_event(_hit("ga4", "v=2")))
    assert not dest.accepts(_event(None))  # a server event has no hit to forward
    assert isinstance(dest.prepare(_event(None)), Rejected)


def test_a_meta_get_hit_goes_out_unchanged_to_facebook() -> None:
    dest = _destination("meta")
    query = (
        f"id=1234567890&ev=PageView&eid=pv-1&dl=https%3A%2F%2Fs.example%2F&ud%5Bem%5D={'b' * 64}"
    )
    payload = _prepared(dest, _event(_hit("meta", query)))
    assert payload == {
        "method": "GET",
        "path": "/tr/",
        "query": query,  # byte for byte: nothing in it needed hashing
        "body": "",
        "content_type": None,
        "client_ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0 (X11)",
        "accept_language": None,
    }
    (request,) = dest.build_requests([Item(7, payload)])
    assert request.method == "GET"
    assert request.url == f"https://www.facebook.com/tr/?{query}"
    assert request.body is None
    assert request.headers == {"User-Agent": "Mozilla/5.0 (X11)", "X-Forwarded-For": "203.0.113.9"}


def test_plain_text_personal_data_is_hashed_before_it_is_stored() -> None:
    dest = _destination("meta")
    query = "id=1&ev=Lead&ud[em]=Jane@Example.com&ud[ph]=&ud[zp]=" + "c" * 64
    payload = _prepared(dest, _event(_hit("meta", query)))
    stored = orjson.dumps(payload).decode()
    assert "jane" not in stored.lower()
    pairs = dict(parse_qsl(str(payload["query"]), keep_blank_values=True))
    assert pairs == {
        "id": "1",
        "ev": "Lead",
        "ud[em]": meta_user_data(User(email="Jane@Example.com"))["em"],
        "ud[ph]": "",
        "ud[zp]": "c" * 64,
    }


def test_a_form_post_is_scrubbed_and_a_multipart_one_with_plain_data_refused() -> None:
    dest = _destination("meta")
    form = b"id=1&ev=Lead&udff%5Bfn%5D=Jane"
    hit = _hit("meta", body=form, content_type="application/x-www-form-urlencoded")
    payload = _prepared(dest, _event(hit))
    body = base64.b64decode(str(payload["body"])).decode()
    assert dict(parse_qsl(body)) == {"id": "1", "ev": "Lead", "udff[fn]": sha256_hex("jane")}
    (request,) = dest.build_requests([Item(1, payload)])
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"

    multipart = (
        b'--q\r\nContent-Disposition: form-data; name="ud[em]"\r\n\r\njane@example.com\r\n--q--\r\n'
    )
    hit = _hit("meta", body=multipart, content_type="multipart/form-data; boundary=q")
    refused = dest.prepare(_event(hit))
    assert isinstance(refused, Rejected)
    assert "plain-text personal data" in refused.reason


def test_ga4_gets_the_client_ip_as_uip_and_a_forged_one_is_dropped() -> None:
    dest = _destination("ga4")
    query = "v=2&tid=G-ABC123&cid=1.2&en=page_view&_uip=6.6.6.6"
    payload = _prepared(dest, _event(_hit("ga4", query), user=User(client_ip="2001:db8::1")))
    (request,) = dest.build_requests([Item(1, payload)])
    parts = urlsplit(request.url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "www.google-analytics.com",
        "/g/collect",
    )
    assert parse_qs(parts.query) == {
        "v": ["2"],
        "tid": ["G-ABC123"],
        "cid": ["1.2"],
        "en": ["page_view"],
        "_uip": ["2001:db8::1"],
    }
    assert "X-Forwarded-For" not in request.headers


def test_ga4_plain_user_data_is_hashed_as_gtag_would() -> None:
    dest = _destination("ga4")
    made = base64.urlsafe_b64encode(bytes.fromhex("ab" * 32)).rstrip(b"=").decode()
    em = f"tv.1~em.Jane.Doe@Gmail.com~pn.{made}~co0.NO"
    payload = _prepared(dest, _event(_hit("ga4", f"v=2&en=x&em={em}")))
    (value,) = parse_qs(str(payload["query"]))["em"]
    expected = base64.urlsafe_b64encode(bytes.fromhex(sha256_hex("janedoe@gmail.com")))
    assert value == f"tv.1~em.{expected.rstrip(b'=').decode()}~pn.{made}~co0.NO"


def test_each_ga4_event_forwards_its_own_line() -> None:
    dest = _destination("ga4")
    body = b"en=page_view&_et=3674\n\nen=click&_et=799&dt=Test%20Page\n"
    hit = _hit("ga4", "v=2&tid=G-ABC123&cid=1.2", body, content_type="text/plain")
    first = _prepared(dest, _event(hit, ga4=Ga4Extras("G-ABC123", "page_view", line=0, lines=2)))
    second = _prepared(dest, _event(hit, ga4=Ga4Extras("G-ABC123", "click", line=1, lines=2)))
    assert base64.b64decode(str(first["body"])) == b"en=page_view&_et=3674"
    assert base64.b64decode(str(second["body"])) == b"en=click&_et=799&dt=Test%20Page"
    whole = _prepared(dest, _event(hit))
    assert base64.b64decode(str(whole["body"])).count(b"\n") == 1  # blank lines only go


def test_tiktok_json_body_keeps_its_shape_with_the_raw_external_id_hashed() -> None:
    dest = _destination("tiktok")
    message = {
        "event": "CompleteRegistration",
        "event_id": "ID1",
        "context": {
            "pixel": {"code": "CABC123"},
            "user": {"email": "a" * 64, "external_id": 123456},
        },
        "properties": {"currency": "USD", "value": 0},
    }
    hit = _hit("tiktok", body=orjson.dumps(message), content_type="application/json")
    payload = _prepared(dest, _event(hit))
    sent = orjson.loads(base64.b64decode(str(payload["body"])))
    assert sent["context"]["user"] == {"email": "a" * 64, "external_id": sha256_hex("123456")}
    assert {k: v for k, v in sent.items() if k != "context"} == {
        k: v for k, v in message.items() if k != "context"
    }
    (request,) = dest.build_requests([Item(1, payload)])
    assert request.url == "https://analytics.tiktok.com/api/v2/pixel"


def test_tiktok_analytics_message_in_the_query_is_scrubbed_too() -> None:
    dest = _destination("tiktok")
    message = {"event": "Pageview", "context": {"user": {"email": "Jane@Example.com"}}}
    encoded = base64.b64encode(orjson.dumps(message)).decode()
    hit = _hit("tiktok", f"analytics_message={encoded}", path="/api/v2/pixel/act")
    payload = _prepared(dest, _event(hit))
    (value,) = parse_qs(str(payload["query"]))["analytics_message"]
    decoded = orjson.loads(base64.b64decode(value + "=" * (-len(value) % 4)))
    assert decoded["context"]["user"]["email"] == sha256_hex("jane@example.com")
    assert payload["path"] == "/api/v2/pixel/act"


@pytest.mark.parametrize(
    ("vendor", "path", "expected"),
    [
        ("meta", "/tr", "/tr"),
        ("meta", "/custom/collect/", "/tr/"),  # a configured source path never reaches Meta
        ("ga4", "/x/y", "/g/collect"),
        ("tiktok", "/api/v2/pixel/track/", "/api/v2/pixel/track/"),
        ("tiktok", "/t/act", "/api/v2/pixel/act"),
        ("tiktok", "/@evil.example/x", "/api/v2/pixel"),
    ],
)
def test_the_path_is_one_of_the_vendors_own(vendor: str, path: str, expected: str) -> None:
    assert vendor_path(vendor, path) == expected


def test_the_host_is_always_the_configured_one() -> None:
    dest = _destination("meta", endpoint="http://127.0.0.1:9")
    hit = _hit("meta", "id=1", path="@evil.example/tr")
    (request,) = dest.build_requests([Item(1, _prepared(dest, _event(hit)))])
    assert urlsplit(request.url).netloc == "127.0.0.1:9"
    assert request.url == "http://127.0.0.1:9/tr?id=1"
    assert isinstance(dest.prepare(_event(_hit("meta", method="PUT"))), Rejected)


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        (Answer(200, b"GIF89a\x01\x00", {}), Verdict.SENT),
        (Answer(204, b"", {}), Verdict.SENT),
        (Answer(503, b"", {}), Verdict.RETRY),
        (Answer(None, b"", {}, error="timeout"), Verdict.RETRY),
        (Answer(404, b"", {}), Verdict.DEAD),
    ],
)
def test_classification_by_status(answer: Answer, verdict: Verdict) -> None:
    dest = _destination("meta")
    (request,) = dest.build_requests([Item(1, _prepared(dest, _event(_hit("meta", "id=1"))))])
    result = dest.classify(request, answer)
    assert result.verdict is verdict
    if verdict is Verdict.SENT:
        assert result.message == f"HTTP {answer.status}"


def test_settings_and_describe() -> None:
    assert _destination("ga4").describe() == "forward ga4 hits to https://www.google-analytics.com"
    assert _destination("tiktok", "http://127.0.0.1:9/").describe() == (
        "forward tiktok hits to http://127.0.0.1:9"
    )
    assert Forward.max_batch == 1
    assert Forward.vendor is None  # dry_run's `auto` format must never pick forward
    with pytest.raises(ValidationError):
        ForwardSettings(type="forward", vendor="bing")
    with pytest.raises(ValidationError):
        ForwardSettings(type="forward", vendor="meta", endpoint="ftp://x")


def test_a_ga4_user_id_is_hashed_before_it_is_stored() -> None:
    dest = _destination("ga4")
    hit = _hit("ga4", "v=2&tid=G-ABC123&cid=1.2&uid=jane.doe%40example.com&en=page_view")
    payload = _prepared(dest, _event(hit))
    assert "jane" not in str(payload)
    assert parse_qs(str(payload["query"]))["uid"] == [sha256_hex("jane.doe@example.com")]


@pytest.mark.parametrize(
    "user",
    [
        {"phone": "+14155550100"},
        {"email": ["jane@example.com", "a" * 64]},
        {"phone_number": 14155550100},
    ],
)
def test_every_tiktok_shape_of_a_match_key_is_hashed(user: dict[str, object]) -> None:
    dest = _destination("tiktok")
    message = {"event": "Pageview", "context": {"user": user}}
    hit = _hit("tiktok", body=orjson.dumps(message), content_type="application/json")
    payload = _prepared(dest, _event(hit))
    stored = base64.b64decode(str(payload["body"]))
    for needle in (b"jane", b"4155550100"):
        assert needle not in stored
    assert b"a" * 64 in stored or "email" not in user  # a made hash is kept as it is


@pytest.mark.parametrize(
    "encode",
    [
        lambda m: m.decode(),  # plain JSON, which the source also reads
        lambda m: base64.b64encode(m).decode().replace("+", " "),  # a + that became a space
    ],
)
def test_every_transport_of_analytics_message_is_scrubbed(encode: object) -> None:
    dest = _destination("tiktok")
    message = orjson.dumps(
        {"event": "Pageview", "context": {"user": {"email": "Jane@Example.com"}}, "p": "~~~>>>"}
    )
    query = "analytics_message=" + quote(encode(message))  # type: ignore[operator]
    payload = _prepared(dest, _event(_hit("tiktok", query, path="/api/v2/pixel/act")))
    assert "jane" not in str(payload).lower()


def test_a_forward_needs_consent_the_hit_itself_cannot_carry() -> None:
    assert _destination("meta").requires == ("ad_storage", "ad_user_data")
    # GA4: gtag sends its cookieless pings under denied consent; a forward passes them on.
    assert _destination("ga4").requires == ()
    settings = ForwardSettings(type="forward", vendor="meta", requires=[])
    assert Forward("f", settings).requires == ()


def test_free_form_fields_holding_personal_data_are_not_forwarded() -> None:
    meta = _prepared(
        _destination("meta"),
        _event(_hit("meta", "id=1&ev=Lead&cd[email]=jane@example.com&cd[coupon]=SUMMER")),
    )
    assert dict(parse_qsl(str(meta["query"]))) == {"id": "1", "ev": "Lead", "cd[coupon]": "SUMMER"}
    query = "v=2&en=x&ep.customer_phone=4155550100&up.note=mail%20jane%40example.com&ep.tier=gold"
    ga4 = _prepared(_destination("ga4"), _event(_hit("ga4", query)))
    assert dict(parse_qsl(str(ga4["query"]))) == {"v": "2", "en": "x", "ep.tier": "gold"}
    message = {"event": "Lead", "properties": {"email": "jane@example.com", "value": 1}}
    hit = _hit("tiktok", body=orjson.dumps(message), content_type="application/json")
    tiktok = _prepared(_destination("tiktok"), _event(hit))
    assert orjson.loads(base64.b64decode(str(tiktok["body"])))["properties"] == {"value": 1}


def test_the_scrub_reads_free_form_fields_as_the_sources_do() -> None:
    # Nested brackets and JSON escapes, as the Meta source decodes them.
    query = (
        "id=1&ev=Lead&cd[customer][email]=jane%40example.com"
        "&cd[note]=%7B%22to%22%3A%22jane%5Cu0040example.com%22%7D&cd[tier]=gold"
    )
    meta = _prepared(_destination("meta"), _event(_hit("meta", query)))
    assert dict(parse_qsl(str(meta["query"]))) == {"id": "1", "ev": "Lead", "cd[tier]": "gold"}
    # A repeated key: the parser keeps the last copy, so the stored body is the parsed one.
    body = b'{"event":"Lead","properties":{"email":"jane@example.com"},"properties":{"value":1}}'
    hit = _hit("tiktok", body=body, content_type="application/json")
    tiktok = _prepared(_destination("tiktok"), _event(hit))
    stored = base64.b64decode(str(tiktok["body"]))
    assert b"jane" not in stored
    assert orjson.loads(stored)["properties"] == {"value": 1}


DENIED_AD_USER_DATA = Consent(
    **{**dict.fromkeys(PURPOSES, ConsentState.GRANTED), "ad_user_data": ConsentState.DENIED}
)


def test_without_ad_user_data_no_hashed_identifier_is_forwarded() -> None:
    made = "c" * 64
    meta_query = f"id=1&ev=Lead&ud[em]={made}&udff[fn]=Jane&ud[external_id]=cust-42&cd[x]=1"
    ga4_query = f"v=2&en=x&em=tv.1~em.{made}&uid=cust-42&ep.tier=gold"
    message = {
        "event": "Lead",
        "context": {"user": {"email": made, "phone_number": "+14155550100", "external_id": "c"}},
    }
    tiktok_hit = _hit("tiktok", body=orjson.dumps(message), content_type="application/json")
    for consent, kept in ((DENIED_AD_USER_DATA, False), (GRANTED, True)):
        meta = _prepared(_destination("meta"), _event(_hit("meta", meta_query), consent=consent))
        ga4 = _prepared(_destination("ga4"), _event(_hit("ga4", ga4_query), consent=consent))
        tiktok = _prepared(_destination("tiktok"), _event(tiktok_hit, consent=consent))
        meta_keys = set(dict(parse_qsl(str(meta["query"]))))
        ga4_keys = set(dict(parse_qsl(str(ga4["query"]))))
        user = orjson.loads(base64.b64decode(str(tiktok["body"])))["context"]["user"]
        assert ({"ud[em]", "udff[fn]", "ud[external_id]"} <= meta_keys) is kept
        assert ({"em", "uid"} <= ga4_keys) is kept
        assert (set(user) == {"email", "phone_number", "external_id"}) is kept
        assert {"cd[x]", "ep.tier"} <= meta_keys | ga4_keys  # the rest of the hit goes either way


def test_untouched_parameters_keep_their_bytes_when_others_change() -> None:
    query = "v=2&en=x&ep.q=a%26b%2B1&ep.email=jane%40example.com&ep.p=%25&ep.s=a+b"
    ga4 = _prepared(_destination("ga4"), _event(_hit("ga4", query)))
    assert ga4["query"] == "v=2&en=x&ep.q=a%26b%2B1&ep.p=%25&ep.s=a+b"


def test_page_urls_are_the_events_after_the_gate_and_the_rules() -> None:
    page = "https%3A%2F%2Fs.example%2Fp%3Fsku%3D7%26token%3Dt1"
    hit = _hit("ga4", f"v=2&en=x&dl={page}&dr={page}")
    kept = _prepared(_destination("ga4"), _event(hit))
    assert kept["query"] == f"v=2&en=x&dl={page}&dr={page}"  # left as it was: byte for byte
    redacted = _prepared(
        _destination("ga4"),
        _event(hit, event_source_url="https://s.example/p?sku=7", referrer=None),
    )
    assert redacted["query"] == "v=2&en=x&dl=https%3A%2F%2Fs.example%2Fp%3Fsku%3D7"


def test_a_tiktok_message_keeps_no_address_anywhere_in_its_context() -> None:
    message = {
        "event": "Pageview",
        "context": {
            "ad": {"callback": "jane@example.com", "creative": "c-1"},
            "page": {"url": "https://s.example/"},
            "library": {"name": "pixel.js", "tags": ["+1 415 555 0100", "v2"]},
        },
    }
    hit = _hit("tiktok", body=orjson.dumps(message), content_type="application/json")
    payload = _prepared(_destination("tiktok"), _event(hit))
    sent = orjson.loads(base64.b64decode(str(payload["body"])))["context"]
    assert sent["ad"] == {"creative": "c-1"}
    assert sent["library"] == {"name": "pixel.js", "tags": ["v2"]}


def test_a_tiktok_forward_keeps_the_order_lines_without_the_address_in_one() -> None:
    message = {
        "event": "CompletePayment",
        "properties": {
            "value": 10,
            "contents": [
                {"content_id": "s1", "content_name": "for jane@example.com", "quantity": 1},
                {"content_id": "s2", "content_name": "Mug"},
            ],
            "customer": {"email_address": "x", "tier": "gold"},
        },
    }
    hit = _hit("tiktok", body=orjson.dumps(message), content_type="application/json")
    payload = _prepared(_destination("tiktok"), _event(hit))
    sent = orjson.loads(base64.b64decode(str(payload["body"])))["properties"]
    assert sent == {
        "value": 10,
        "contents": [
            {"content_id": "s1", "quantity": 1},
            {"content_id": "s2", "content_name": "Mug"},
        ],
        "customer": {"tier": "gold"},
    }


def test_a_ga4_line_or_query_of_only_removed_pairs_goes_out_empty_not_as_it_came() -> None:
    # When the gate removes every pair, what is left is empty, never the original text again.
    dest = _destination("ga4")
    hit = _hit("ga4", "v=2&tid=G-ABC123&cid=1.2&en=sign_up", b"ep.email=jane.doe%40example.com")
    payload = _prepared(dest, _event(hit, ga4=Ga4Extras("G-ABC123", "sign_up", line=0, lines=1)))
    assert base64.b64decode(str(payload["body"])) == b""
    only_removed = _prepared(dest, _event(_hit("ga4", "ep.email=jane.doe%40example.com")))
    assert only_removed["query"] == ""
    assert "jane" not in orjson.dumps([payload, only_removed]).decode()


def test_a_multipart_body_too_big_to_read_whole_is_never_forwarded() -> None:
    # Past the field bound the check cannot see a part, so it cannot vouch for the body.
    def parts(n: int) -> bytes:
        return b"".join(
            b'--q\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % i for i in range(n)
        )

    email = b'--q\r\nContent-Disposition: form-data; name="ud[em]"\r\n\r\njane.doe@example.com\r\n'
    ctype = "multipart/form-data; boundary=q"
    big = _hit("meta", body=parts(132) + email + b"--q--\r\n", content_type=ctype)
    refused = _destination("meta").prepare(_event(big))
    assert isinstance(refused, Rejected)
    # Control: a clean body within the bound goes out as it came.
    clean = _hit("meta", body=parts(3) + b"--q--\r\n", content_type=ctype)
    assert isinstance(_destination("meta").prepare(_event(clean)), dict)
