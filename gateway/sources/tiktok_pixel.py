"""TikTok pixel hits (`events.js` → `/api/v2/pixel…`): POST JSON, GET base64 JSON, no-script image.

Undocumented; shapes come from captured traffic (docs/platforms.md §3.1). Unknown keys are noise and
SDK bookkeeping is dropped. The pixel hashes email and phone itself, so they pass through.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from aiohttp import web

from gateway import names
from gateway.event import (
    Content,
    Custom,
    Event,
    RawHit,
    TikTokExtras,
    User,
    ids_of,
    new_event_id,
)
from gateway.sources.base import GIF, Hit, Outcome, Parsed, Source, client_id_from_cookie
from gateway.sources.coerce import decimal_or_none, int_or_none, text_or_none, url_param

# TikTok's standard events, for the pixel's `event` and the Events API's `event`. TikTok renamed
# CompletePayment and SubmitForm on 1 May 2025; the old names still arrive from older pages.
# The no-script image sends `PageView` where ttq.page() sends `Pageview`.
names.register(
    "tiktok",
    "TikTok",
    {
        "page_view": "Pageview",
        "view_content": "ViewContent",
        "search": "Search",
        "add_to_cart": "AddToCart",
        "add_to_wishlist": "AddToWishlist",
        "initiate_checkout": "InitiateCheckout",
        "add_payment_info": "AddPaymentInfo",
        "purchase": "Purchase",
        "lead": "Lead",
        "complete_registration": "CompleteRegistration",
        "contact": "Contact",
        "subscribe": "Subscribe",
        "start_trial": "StartTrial",
    },
    tag=True,
    inbound={"CompletePayment": "purchase", "SubmitForm": "lead", "PageView": "page_view"},
)

ANSWER: Final = b'{"code":0,"message":"OK"}'
"""The answer to a pixel POST, as TikTok gives it (docs/http.md §1)."""

# Internal probes the pixel posts like events: advanced-matching enrichment, not conversions.
# The keys of `context.user` that hold a person, by canonical field (TikTok's names, read below;
# `external_id` is seen raw in real hits, docs/platforms.md §3.1).
USER_KEYS: Final = {
    "email": "email",
    "phone_number": "phone",
    "phone": "phone",
    "external_id": "external_id",
}
_NOT_EVENTS: Final = frozenset({"EnrichAM"})
# Browser clocks are often wrong; a timestamp outside this window falls back to receive time
# (Meta rejects a whole batch over one event older than 7 days, docs/platforms.md §0).
_MAX_AGE_S: Final = 7 * 24 * 3600
_MAX_AHEAD_S: Final = 300
MAX_PROPERTIES: Final = 100
"""Custom (untyped) properties carried from one event; the rest are counted on the hit's log
line. Each is checked for personal data and written into every payload: 40,000 of them
blocked the loop for a quarter of a second (bench/hostile.py)."""
MAX_CONTENTS: Final = 200
"""Line items read from one event (GA4's item limit; TikTok documents none)."""
_TYPED_PROPERTIES: Final = frozenset(
    {
        "value",
        "currency",
        "content_type",
        "query",
        "search_string",
        "order_id",
        "contents",
        "content_id",
        "content_name",
        "content_category",
    }
)
# SDK bookkeeping inside `properties` (docs/platforms.md §3.1): dropped, never custom data.
_SDK_PROPERTIES: Final = frozenset({"gtm_version", "event_trigger_source"})
# No-script image params read as properties (`?id=<code>&ev=<Event>&noscript=1&value=…`).
_NOSCRIPT_PROPERTIES: Final = (
    "value",
    "currency",
    "content_type",
    "content_id",
    "content_name",
    "content_category",
    "order_id",
    "query",
    "search_string",
)


def _obj(raw: object) -> Mapping[str, Any]:
    """A JSON object, or an empty one for anything else (a garbage hit must not raise)."""
    return raw if isinstance(raw, dict) else {}


def _first_text(raw: object, limit: int = 256) -> str | None:
    """A scalar as text; for a list (identify() takes arrays) its first usable element."""
    if isinstance(raw, list):
        return next((t for item in raw[:20] if (t := text_or_none(item, limit))), None)
    return text_or_none(raw, limit)


def decode_message(raw: str) -> object:
    """The JSON of `?analytics_message=`: base64, url-safe or not, padding optional.

    A `+` that reached us unescaped in the query became a space: put it back. Anything that
    is not base64 JSON (or is plain JSON) is tried as JSON, then given up as None.
    """
    text = raw.strip()
    if text.startswith("{"):
        return _loads(text.encode("utf-8", errors="replace"))
    text = text.replace(" ", "+").replace("-", "+").replace("_", "/").rstrip("=")
    try:
        decoded = base64.b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return _loads(decoded)


def _loads(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def event_time(raw: object, received_at: float) -> int:
    """Epoch seconds from an ISO-8601 `timestamp` (or epoch s/ms); receive time if implausible."""
    seconds: float | None = None
    if isinstance(raw, str) and raw.strip():
        try:
            parsed = datetime.fromisoformat(raw.strip())
        except ValueError:
            parsed = None
        if parsed is not None:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            try:
                seconds = parsed.timestamp()
            except (OverflowError, OSError, ValueError):
                seconds = None
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        # Epoch milliseconds are 13 digits today; seconds are 10.
        seconds = raw / 1000 if abs(raw) > 1e11 else float(raw)
    if seconds is None or not received_at - _MAX_AGE_S <= seconds <= received_at + _MAX_AHEAD_S:
        return int(received_at)
    return int(seconds)


def _contents(raw: object) -> tuple[Content, ...]:
    """`properties.contents[]`; `content_id` and `price` come as numbers or strings alike."""
    if not isinstance(raw, list):
        return ()
    items: list[Content] = []
    for element in raw[:MAX_CONTENTS]:
        entry = _obj(element)
        if (content_id := text_or_none(entry.get("content_id"), 256)) is None:
            continue
        items.append(
            Content(
                id=content_id,
                quantity=int_or_none(entry.get("quantity")),
                item_price=decimal_or_none(entry.get("price")),
                name=text_or_none(entry.get("content_name"), 256),
                category=text_or_none(entry.get("content_category"), 256),
                brand=text_or_none(entry.get("brand"), 256),
            )
        )
    return tuple(items)


def _custom(properties: Mapping[str, Any]) -> Custom:
    content_id = _first_text(properties.get("content_id"))
    return Custom(
        value=decimal_or_none(properties.get("value")),
        currency=text_or_none(properties.get("currency"), 8),
        order_id=text_or_none(properties.get("order_id"), 256),
        contents=_contents(properties.get("contents")),
        # The older flat form (`ttq.track('ViewContent', {content_id: …})`) has no contents[].
        content_ids=(content_id,) if content_id else (),
        content_type=text_or_none(properties.get("content_type"), 64),
        content_name=text_or_none(properties.get("content_name"), 256),
        content_category=text_or_none(properties.get("content_category"), 256),
        search_string=text_or_none(properties.get("query") or properties.get("search_string")),
        extra=dict(itertools.islice(_untyped(properties), MAX_PROPERTIES)),
    )


def _untyped(properties: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    return (
        (k, v)
        for k, v in properties.items()
        if k not in _TYPED_PROPERTIES and k not in _SDK_PROPERTIES
    )


class TikTokPixel(Source):
    """`POST /api/v2/pixel[/act|/track][/]`, `GET /api/v2/pixel[/act]`, `POST …/perf`."""

    name = "tiktok_pixel"
    vendor = "tiktok"
    default_path = "/api/v2/pixel"
    user_keys = USER_KEYS
    decode_message = staticmethod(decode_message)

    def routes(self) -> Sequence[tuple[str, str]]:
        base = self.base_path.rstrip("/")
        posts = [p for tail in ("", "/act", "/track") for p in (base + tail, base + tail + "/")]
        return [
            *(("POST", p) for p in posts),
            ("GET", base),
            ("GET", base + "/act"),
            ("POST", base + "/perf"),
        ]

    def parse(self, hit: Hit) -> Parsed:
        if hit.path.rstrip("/").endswith("/perf"):
            return Parsed(
                outcome=Outcome.IGNORED, reason="perf beacon", notes={"transport": "perf"}
            )
        if hit.method == "GET" and "analytics_message" not in hit.query:
            return self._noscript(hit)
        if hit.method == "GET":
            document = decode_message(str(hit.query["analytics_message"]))
            transport = "get-message"
        else:
            document = _loads(hit.body)
            transport = "post"
        notes = {"transport": transport}
        if document is None:
            return Parsed(outcome=Outcome.MALFORMED, reason="not JSON", notes=notes)
        # One event a request: a JSON array is no pixel hit (and a forward would resend the
        # whole of it once per element).
        event = self._event(hit, _obj(document))
        if event is None:
            return Parsed(outcome=Outcome.IGNORED, reason="no event", notes=notes)
        properties = _obj(_obj(document).get("properties"))
        # Said once, on the hit's own log line.
        untyped = sum(1 for _ in _untyped(properties)) if len(properties) > MAX_PROPERTIES else 0
        if untyped > MAX_PROPERTIES:
            notes["dropped_params"] = str(untyped - MAX_PROPERTIES)
        if event.tiktok and event.tiktok.pixel_code:
            notes["pixel_code"] = event.tiktok.pixel_code
        return Parsed(events=[event], notes=notes, carried=_carried(document))

    def _event(self, hit: Hit, doc: Mapping[str, Any]) -> Event | None:
        name = doc.get("event")
        if not isinstance(name, str) or not name.strip() or name.strip() in _NOT_EVENTS:
            return None
        name = name.strip()[:256]
        context = _obj(doc.get("context"))
        page = _obj(context.get("page"))
        user = _obj(context.get("user"))
        pixel_code = text_or_none(_obj(context.get("pixel")).get("code"), 64) or text_or_none(
            doc.get("pixel_code"), 64
        )
        page_url = text_or_none(page.get("url"), 4096)
        event_id = text_or_none(doc.get("event_id"), 256)  # "" when the page gave none
        return self._build(
            hit,
            name=name,
            event_id=event_id,
            event_time=event_time(doc.get("timestamp"), hit.received_at),
            page_url=page_url,
            referrer=text_or_none(page.get("referrer"), 4096),
            user=User(
                email=_first_text(user.get("email")),
                phone=_first_text(user.get("phone_number") or user.get("phone")),
                # Seen raw (`123456`): the destination normalizes and hashes it.
                external_id=_first_text(user.get("external_id")),
                client_ip=hit.client_ip,
                user_agent=hit.user_agent,
                ids=ids_of(
                    ttp=text_or_none(user.get("anonymous_id"), 256) or hit.cookies.get("_ttp"),
                    ttclid=_ttclid(page_url, hit),
                    ga_client_id=client_id_from_cookie(hit.cookies),
                ),
            ),
            custom=_custom(_obj(doc.get("properties"))),
            pixel_code=pixel_code,
        )

    def _noscript(self, hit: Hit) -> Parsed:
        """`GET /api/v2/pixel?id=<code>&ev=<Event>&noscript=1`: the pixel's no-JS image."""
        notes = {"transport": "noscript"}
        pixel_code = text_or_none(hit.query.get("id"), 64)
        name = text_or_none(hit.query.get("ev"), 256)
        if not pixel_code or not name or name in _NOT_EVENTS:
            return Parsed(outcome=Outcome.IGNORED, reason="no id or ev", notes=notes)
        notes["pixel_code"] = pixel_code
        # An image request has no page context but its Referer: the page that embedded it.
        page_url = text_or_none(hit.referer, 4096)
        properties = {k: hit.query[k] for k in _NOSCRIPT_PROPERTIES if k in hit.query}
        event = self._build(
            hit,
            name=name,
            event_id=text_or_none(hit.query.get("event_id"), 256),
            event_time=int(hit.received_at),
            page_url=page_url,
            referrer=None,
            user=User(
                client_ip=hit.client_ip,
                user_agent=hit.user_agent,
                ids=ids_of(
                    ttp=hit.cookies.get("_ttp"),
                    ttclid=_ttclid(page_url, hit),
                    ga_client_id=client_id_from_cookie(hit.cookies),
                ),
            ),
            custom=_custom(properties),
            pixel_code=pixel_code,
        )
        return Parsed(events=[event], notes=notes)

    def _build(
        self,
        hit: Hit,
        *,
        name: str,
        event_id: str | None,
        event_time: int,
        page_url: str | None,
        referrer: str | None,
        user: User,
        custom: Custom,
        pixel_code: str | None,
    ) -> Event:
        return Event(
            event_id=event_id or new_event_id(),
            event_name=names.to_canonical("tiktok", name),
            event_time=event_time,
            source=self.name,
            action_source="website",
            event_source_url=page_url,
            referrer=referrer,
            user=user,
            custom=custom,
            received_at=hit.received_at,
            dedupable=event_id is not None,
            # The name as received, so a TikTok destination sends exactly what a browser copy
            # would carry (docs/platforms.md §4.2 recommendation; legacy names stay legacy).
            tiktok=TikTokExtras(event=name, pixel_code=pixel_code),
            raw=RawHit(
                vendor="tiktok",
                method=hit.method,
                path=hit.path,
                query_string=hit.query_string,
                body=hit.body,
                content_type=hit.content_type,
                accept_language=hit.accept_language,
            ),
        )

    def answer(self, hit: Hit | None) -> web.Response:
        # Only a POST can be too large (hit None), so None gets the POST answer.
        if hit is not None and hit.method == "GET":
            return web.Response(status=200, body=GIF, content_type="image/gif")
        return web.Response(status=200, body=ANSWER, content_type="application/json")


def _carried(document: object) -> dict[str, str]:
    """The pixel's own `_ttp` (`context.user.anonymous_id`), which wins over the cookie."""
    user = _obj(_obj(_obj(document).get("context")).get("user"))
    ttp = text_or_none(user.get("anonymous_id"), 256)
    return {"ttp": ttp} if ttp else {}


def _ttclid(page_url: str | None, hit: Hit) -> str | None:
    """The click ID from the landing URL, else the cookie the site keeps it in (§3.3)."""
    return text_or_none(url_param(page_url, "ttclid"), 512) or hit.cookies.get("ttclid") or None
