"""Meta pixel hits, from the shapes of real captured traffic (docs/platforms.md §1.1)."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import parse_qsl, urlsplit

from multidict import MultiDict, MultiDictProxy

from gateway.event import Content, MetaExtras
from gateway.settings import SourceSettings
from gateway.sources.base import Hit, Outcome
from gateway.sources.meta_pixel import MetaPixel

VIEW_CONTENT = (
    "/tr/?id=1234567890&ev=ViewContent&dl=https%3A%2F%2Fshop.example%2Ffestival"
    "&rl=https%3A%2F%2Fshop.example%2F&if=false&ts=1749133939677"
    "&cd[content_ids]=%5B%22264%22%5D&cd[content_type]=product"
    "&cd[contents]=%5B%7B%22id%22%3A%22264%22%2C%22quantity%22%3A1%2C%22item_price%22%3A79%7D%5D"
    "&cd[value]=79&cd[currency]=MYR&v=2.9.205&ec=2&o=5150"
    "&fbp=fb.1.1748957013743.1524724929324944&rqm=GET"
)
EM_HASH = "369c34cc1d6f9e8b4b7e0d6c6bb1f0c3e6d1a7b8c9d0e1f2a3b4c5d6e7ff78f3"
LEAD_FORM = (
    "id=1234567890&ev=Lead&dl=https%3A%2F%2Fshop.example%2Fectest.html&ts=1782748875905"
    f"&cud%5Bem%5D=****%40****.**&ud%5Bem%5D={EM_HASH}&aud%5Bem%5D={EM_HASH}"
    "&v=2.9.345&a=stape-gtm-1.2.0-pb&fbp=fb.1.1778869247376.52390506499288804.AQYCAQMA"
    "&tz=120&rqm=formPOST&eid=lead-7"
)

source = MetaPixel(SourceSettings(send_to=()))


def hit(
    target: str,
    method: str = "GET",
    body: bytes = b"",
    content_type: str | None = None,
    cookies: dict[str, str] | None = None,
) -> Hit:
    parts = urlsplit(target)
    query = MultiDictProxy(MultiDict(parse_qsl(parts.query, keep_blank_values=True)))
    return Hit(
        method=method,
        path=parts.path,
        query=query,
        query_string=parts.query,
        body=body,
        content_type=content_type,
        cookies=cookies or {},
        client_ip="203.0.113.7",
        user_agent="Mozilla/5.0 (test)",
        received_at=1_795_000_000.5,
    )


def test_get_hit_maps_every_field() -> None:
    parsed = source.parse(hit(VIEW_CONTENT))
    assert parsed.outcome is Outcome.OK
    (event,) = parsed.events
    assert event.event_name == "view_content"
    assert event.event_time == 1749133939
    assert event.event_source_url == "https://shop.example/festival"
    assert event.referrer == "https://shop.example/"
    assert event.action_source == "website"
    assert event.custom.value == Decimal("79")
    assert event.custom.currency == "MYR"
    assert event.custom.content_type == "product"
    assert event.custom.content_ids == ("264",)
    assert event.custom.contents == (Content(id="264", quantity=1, item_price=Decimal("79")),)
    assert event.user.ids.get("fbp") == "fb.1.1748957013743.1524724929324944"
    assert event.user.client_ip == "203.0.113.7"
    assert event.user.user_agent == "Mozilla/5.0 (test)"
    assert event.meta.pixel_id == "1234567890"


def test_no_eid_gets_a_generated_id_and_is_not_deduplicable() -> None:
    first = source.parse(hit(VIEW_CONTENT)).events[0]
    second = source.parse(hit(VIEW_CONTENT)).events[0]
    assert first.event_id.startswith("tg-")
    assert first.event_id != second.event_id
    assert first.dedupable is False


def test_eid_is_kept_as_the_event_id() -> None:
    event = source.parse(hit(VIEW_CONTENT + "&eid=order-1001")).events[0]
    assert event.event_id == "order-1001"
    assert event.dedupable is True


def test_urlencoded_post_with_encoded_brackets() -> None:
    parsed = source.parse(
        hit("/tr/", "POST", LEAD_FORM.encode(), "application/x-www-form-urlencoded")
    )
    (event,) = parsed.events
    assert event.event_name == "lead"
    assert event.event_id == "lead-7"
    assert event.event_time == 1782748875
    # The pixel hashed it already: passed through, masks (cud) and copies (aud) ignored.
    assert event.user.email == EM_HASH
    # A five-segment fbp (Parameter Builder appendix) survives byte for byte.
    assert event.user.ids.get("fbp") == "fb.1.1778869247376.52390506499288804.AQYCAQMA"
    assert parsed.notes["a"] == "stape-gtm-1.2.0-pb"


def test_multipart_beacon() -> None:
    fields = {
        "id": "1234567890",
        "ev": "Purchase",
        "eid": "ord-1001",
        "dl": "https://shop.example/thanks",
        "cd[value]": "129.90",
        "cd[currency]": "EUR",
        "ud[ph]": "a" * 64,
        "rqm": "SB",
    }
    boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields.items()
        )
        + f"--{boundary}--\r\n".encode()
    )
    (event,) = source.parse(
        hit("/tr/", "POST", body, f"multipart/form-data; boundary={boundary}")
    ).events
    assert event.event_name == "purchase"
    assert event.event_id == "ord-1001"
    assert event.custom.value == Decimal("129.90")
    assert event.custom.currency == "EUR"
    assert event.user.phone == "a" * 64


def test_cookies_fill_in_fbp_and_fbc() -> None:
    target = "/tr?id=1&ev=PageView&dl=https%3A%2F%2Fshop.example%2F"
    event = source.parse(hit(target, cookies={"_fbp": "fb.1.1.2", "_fbc": "fb.1.1.IwAR"})).events[0]
    assert (event.user.ids.get("fbp"), event.user.ids.get("fbc")) == ("fb.1.1.2", "fb.1.1.IwAR")


def test_fbc_is_derived_from_a_click_id_in_the_page_url() -> None:
    target = "/tr?id=1&ev=PageView&dl=https%3A%2F%2Fshop.example%2F%3Ffbclid%3DIwAR2F4-dbP0l_x"
    event = source.parse(hit(target)).events[0]
    assert event.user.ids.get("fbc") == "fb.1.1795000000500.IwAR2F4-dbP0l_x"


def test_hits_without_id_or_ev_are_not_events() -> None:
    for target in ("/tr?ev=PageView", "/tr?id=1234567890", "/tr"):
        parsed = source.parse(hit(target))
        assert parsed.events == ()
        assert parsed.outcome is Outcome.IGNORED


def test_limited_data_use_flags_ride_along() -> None:
    event = source.parse(hit("/tr?id=1&ev=PageView&dpo=LDU&dpoco=1&dpost=1000")).events[0]
    assert event.meta == MetaExtras(pixel_id="1", dpo="LDU", dpoco="1", dpost="1000")
