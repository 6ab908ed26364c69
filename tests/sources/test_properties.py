"""Property tests: no browser hit, however mangled, makes a pixel parser raise.

A page's bad tag must never turn into an exception path (docs/http.md §1), and what a parser keeps
in `custom.extra` and the vendor extras must serialize, since the pipeline writes it as JSON.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import MultiDict, MultiDictProxy

from gateway.settings import SourceSettings
from gateway.sources.base import Hit, Parsed, Source
from gateway.sources.coerce import MAX_DIGITS
from gateway.sources.ga4 import Ga4, Ga4Settings
from gateway.sources.meta_pixel import MetaPixel
from gateway.sources.tiktok_pixel import TikTokPixel

GA4 = Ga4(Ga4Settings())
TIKTOK = TikTokPixel(SourceSettings())
META = MetaPixel(SourceSettings())
BOUNDARY = "----hypothesisBoundary"

# Keys every parser reads, so generated hits reach past the first checks.
KNOWN_KEYS = [
    *("v", "tid", "cid", "en", "_p", "_s", "_et", "sid", "sct", "seg", "uid", "cu", "dl", "dr"),
    *("dt", "em", "gcs", "gcd", "npa", "gdpr_consent", "pr1", "pr2", "pr200", "pr201"),
    *("ep.event_id", "ep.transaction_id", "epn.transaction_id", "epn.value", "ep.value"),
    *("ep.search_term", "ep.x", "epn.y", "up.p", "upn.q", "ep.", "epn."),
    *("id", "ev", "noscript", "analytics_message", "event_id", "value", "currency"),
    *("eid", "ts", "fbp", "fbc", "rqm", "a", "dpo", "cd[value]", "cd[contents]"),
    *("cd[content_ids]", "cd[currency]", "cd[num_items]", "ud[em]", "udff[ph]", "cd[", "ud[]"),
]
TRICKY_VALUES = [
    *("", " ", "2", "G-ABC123", "1.2", "page_view", "purchase", "PageView", "Pageview"),
    *("CompletePayment", "EnrichAM", "NaN", "Infinity", "-inf", "1e999999", "1e-999999"),
    *("1e-1000000", "0." + "1" * 2000, "9" * 40, "-0", "0x10", "1_000", "tv.1~em."),
    *("tv.1~em.YqFORPdlQZ0Q_qmTZzYacnwSNl4lIPMiGNUF7Zqg9i8~pn.,~fn0.~co0.", "~~~"),
    *("idA~k1a~v112~k11b~v1", "idX~pr1e99~qt99999999999999999999~lpNaN", "kk~vv~k~v~k0~v0"),
    *("[", "[1,{}]", '[{"id":1,"quantity":"x","item_price":[]}]', "{", "%zz", "\x00\n\r"),
    *("https://shop.example/?gclid=a&ttclid=b&fbclid=c", "http://[::1"),
]
HUGE_VALUES = [
    "1e1000000",
    "-9E+999999999",
    "idX~pr1e1000000~qt1e1000000",
    '[{"id":"a","quantity":"1e1000000","item_price":"1e1000000"}]',
]
"""Finite decimals past the default context's Emax: `abs()` of one raises decimal.Overflow."""

CONTENT_KEYS = ("content_id", "content_name", "content_category", "brand", "price", "quantity")
TIMESTAMPS = [
    "2026-06-29T17:47:07.730Z",
    "2026-06-29T17:47:07",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "2026-13-45",
]
CONTENT_TYPES = [
    "application/json",
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",
    f"multipart/form-data; boundary={BOUNDARY}",
    "multipart/form-data",
    'multipart/form-data; boundary="',
    "multipart/mixed; boundary=x",
]


def _multipart(pairs: list[tuple[str, str]]) -> bytes:
    parts = "".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in pairs
    )
    return (parts + f"--{BOUNDARY}--\r\n").encode()


def _b64(value: Any, url_safe: bool, padded: bool) -> str:
    encode = base64.urlsafe_b64encode if url_safe else base64.b64encode
    text = encode(orjson.dumps(value)).decode()
    return text if padded else text.rstrip("=")


def hits(tricky: Sequence[str]) -> st.SearchStrategy[Hit]:
    """Any request a browser (or a fuzzer pretending to be one) could send."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),  # what orjson can write
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
        st.sampled_from(tricky),
    )
    json_values = st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.text(max_size=12) | st.sampled_from(KNOWN_KEYS), inner, max_size=5)
        ),
        max_leaves=16,
    )

    def shaped(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        """A dict with any of these keys, or (as real garbage is) any JSON value at all."""
        return st.fixed_dictionaries({}, optional=fields) | json_values

    contents = st.lists(shaped(**dict.fromkeys(CONTENT_KEYS, json_values)), max_size=4)
    tiktok_events = shaped(
        event=st.sampled_from(["Pageview", "PageView", "CompletePayment", "EnrichAM", ""])
        | json_values,
        event_id=json_values,
        timestamp=st.sampled_from(TIMESTAMPS)
        | st.datetimes().map(lambda d: d.isoformat())
        | json_values,
        pixel_code=json_values,
        context=shaped(
            pixel=shaped(code=json_values),
            page=shaped(url=json_values, referrer=json_values),
            user=shaped(
                email=json_values,
                phone_number=json_values,
                external_id=json_values,
                anonymous_id=json_values,
            ),
        ),
        properties=shaped(
            value=json_values,
            currency=json_values,
            contents=contents | json_values,
            content_id=json_values,
            query=json_values,
            order_id=json_values,
        ),
    )
    values = st.one_of(
        st.text(max_size=40),
        st.sampled_from(tricky),
        # analytics_message: base64 JSON, standard or url-safe, padded or not.
        st.builds(_b64, tiktok_events | json_values, st.booleans(), st.booleans()),
    )
    keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=12)
    pairs = st.lists(st.tuples(keys, values), max_size=12)
    lines = st.lists(pairs.map(urlencode) | st.text(max_size=60), max_size=5).map("\n".join)
    bodies = st.one_of(
        st.binary(max_size=300),
        lines.map(str.encode),
        tiktok_events.map(orjson.dumps),
        st.lists(tiktok_events, max_size=3).map(orjson.dumps),
        json_values.map(orjson.dumps),
        pairs.map(_multipart),
    )
    paths = sorted({p for s in (GA4, TIKTOK, META) for _, p in s.routes()} | {"/", "/x/perf"})

    @st.composite
    def hit(draw: st.DrawFn) -> Hit:
        query = draw(pairs)
        return Hit(
            method=draw(st.sampled_from(["GET", "POST", "HEAD", "PUT"])),
            path=draw(st.sampled_from(paths) | st.text(max_size=20)),
            query=MultiDictProxy(MultiDict(query)),
            query_string=urlencode(query),
            body=draw(bodies),
            content_type=draw(st.none() | st.sampled_from(CONTENT_TYPES) | st.text(max_size=40)),
            cookies=draw(
                st.dictionaries(
                    st.sampled_from(["_ttp", "ttclid", "_fbp", "_fbc"]) | st.text(max_size=8),
                    st.text(max_size=30),
                    max_size=4,
                )
            ),
            client_ip=draw(st.none() | st.just("203.0.113.7")),
            user_agent=draw(st.none() | st.text(max_size=30)),
            received_at=draw(st.floats(min_value=0, max_value=2**34)),
            referer=draw(st.none() | st.text(max_size=40) | st.sampled_from(tricky)),
            gpc=draw(st.booleans()),
        )

    return hit()


def check(source: Source, hit: Hit) -> None:
    """The properties every parse must have."""
    parsed = source.parse(hit)
    assert isinstance(parsed, Parsed)
    assert all(isinstance(note, str) for note in parsed.notes.values())
    for event in parsed.events:
        assert event.event_id
        assert event.event_name
        assert event.source == source.name
        # Stored as JSON by the pipeline: anything orjson cannot write would fail there.
        orjson.dumps(dict(event.custom.extra))
        if event.ga4 is not None:
            orjson.dumps([event.ga4.user_properties, event.ga4.items])
        assert all(isinstance(v, str) for v in event.consent_signals.values())


def check_bounded(source: Source, hit: Hit) -> None:
    """`check`, and no number a destination would choke on turning into an int or a float."""
    check(source, hit)
    for event in source.parse(hit).events:
        prices = [c.item_price for c in event.custom.contents]
        for number in (event.custom.value, *prices):
            assert number is None or number.adjusted() < MAX_DIGITS


@pytest.mark.parametrize("source", [GA4, TIKTOK], ids=["ga4", "tiktok_pixel"])
@settings(max_examples=200, deadline=None)
@given(hit=hits([*TRICKY_VALUES, *HUGE_VALUES]))
def test_parse_never_raises(source: Source, hit: Hit) -> None:
    check_bounded(source, hit)


@settings(max_examples=200, deadline=None)
@given(hit=hits(TRICKY_VALUES))
def test_meta_parse_never_raises_short_of_huge_exponents(hit: Hit) -> None:
    check(META, hit)


def test_meta_parse_survives_a_huge_exponent() -> None:
    query = MultiDict([("id", "1"), ("ev", "PageView"), ("ts", "1e1000000")])
    check(META, Hit("GET", "/tr", MultiDictProxy(query), "", b"", None, {}, None, None, 0.0))


@pytest.mark.parametrize("source", [GA4, TIKTOK, META], ids=["ga4", "tiktok_pixel", "meta_pixel"])
def test_an_empty_request_is_not_an_exception(source: Source) -> None:
    for method in ("GET", "POST"):
        query: MultiDictProxy[str] = MultiDictProxy(MultiDict())
        hit = Hit(method, source.base_path, query, "", b"", None, {}, None, None, 0.0)
        assert source.parse(hit).events == ()
