"""Form bodies (urlencoded and multipart `sendBeacon`) are read up to a bound of fields."""

from __future__ import annotations

import pytest
from multidict import MultiDict, MultiDictProxy

from gateway.settings import SourceSettings
from gateway.sources import forms
from gateway.sources.base import Hit
from gateway.sources.forms import form_fields, form_pairs
from gateway.sources.meta_pixel import MetaPixel

BOUNDARY = "----WebKitFormBoundaryx7yQ2gR4mP9sL0kA"
CTYPE = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(pairs: list[tuple[str, str]]) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in pairs
    ]
    return ("".join(parts) + f"--{BOUNDARY}--\r\n").encode()


HOSTILE = [("id", "1234567890"), ("ev", "PageView")] + [(f"p{i}", "v") for i in range(17_000)]


def test_a_multipart_beacon_is_read() -> None:
    body = multipart([("id", "1234567890"), ("ev", "Lead"), ("cd[value]", "9.5")])
    assert form_pairs(body, CTYPE) == [("id", "1234567890"), ("ev", "Lead"), ("cd[value]", "9.5")]


def test_multipart_parts_past_the_bound_are_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    # 17,000 parts cost ~170 us each in the email parser, on the loop: 5 s for one request.
    pairs, dropped = form_fields(multipart(HOSTILE), CTYPE)
    assert pairs[:2] == [("id", "1234567890"), ("ev", "PageView")]
    assert len(pairs) == forms.MAX_FIELDS
    assert dropped == len(HOSTILE) - forms.MAX_FIELDS
    # Control: with the bound lifted, the same body is parsed whole (the old behaviour).
    monkeypatch.setattr(forms, "MAX_FIELDS", 10**9)
    assert form_fields(multipart(HOSTILE[:1000]), CTYPE) == (HOSTILE[:1000], 0)


def test_urlencoded_fields_past_the_bound_are_not_parsed() -> None:
    body = "&".join(f"{k}={v}" for k, v in HOSTILE).encode()
    pairs, dropped = form_fields(body, "application/x-www-form-urlencoded")
    assert pairs[:2] == [("id", "1234567890"), ("ev", "PageView")]
    assert (len(pairs), dropped) == (forms.MAX_FIELDS, len(HOSTILE) - forms.MAX_FIELDS)
    assert form_pairs(b"a=1&b=2", None) == [("a", "1"), ("b", "2")]


def test_the_meta_pixel_notes_what_it_left_unread() -> None:
    source = MetaPixel(SourceSettings(send_to=()))
    hit = Hit(
        method="POST",
        path="/tr/",
        query=MultiDictProxy(MultiDict()),
        query_string="",
        body=multipart([*HOSTILE[:2], ("eid", "m-1"), *HOSTILE[2:]]),
        content_type=CTYPE,
        cookies={},
        client_ip="203.0.113.9",
        user_agent="UA",
        received_at=1_795_000_000.0,
    )
    parsed = source.parse(hit)
    (event,) = parsed.events
    assert event.event_id == "m-1"
    assert parsed.notes["dropped_params"] == str(len(HOSTILE) + 1 - forms.MAX_FIELDS)
