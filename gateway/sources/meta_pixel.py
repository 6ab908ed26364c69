"""Meta pixel hits (`fbevents.js` → `/tr`): GET query, urlencoded POST, multipart beacon.

Parameter meanings: docs/platforms.md §1.1. The pixel hashes `ud[...]` itself, so those values pass
through untouched; everything else in a hit that is not listed here is script bookkeeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from multidict import MultiDict

from gateway import names
from gateway.event import Custom, Event, MetaExtras, RawHit, User, ids_of, new_event_id
from gateway.sources.base import GIF, Hit, Outcome, Parsed, Source, client_id_from_cookie
from gateway.sources.coerce import (
    contents_from,
    decimal_or_none,
    int_or_none,
    json_or_text,
    text_or_none,
    url_param,
)
from gateway.sources.forms import form_fields

# Meta's standard events, for the pixel's `ev` and the Conversions API's `event_name`.
names.register(
    "meta",
    "Meta",
    {
        "page_view": "PageView",
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
)

# `ud[k]` key → canonical user field: Meta's names, the same in the Conversions API's
# `user_data` (docs/platforms.md §1.3); `meta_capi` and `forward` read them through `user_keys`.
USER_KEYS: Final = {
    "em": "email",
    "ph": "phone",
    "fn": "first_name",
    "ln": "last_name",
    "ge": "gender",
    "db": "date_of_birth",
    "ct": "city",
    "st": "state",
    "zp": "zip",
    "country": "country",
    "external_id": "external_id",
}
# The query/form parameters that hold a person (`ud[em]`, `udff[fn]`), hashed or not.
PERSONAL_PARAMS: Final = frozenset(
    f"{block}[{key}]" for block in ("ud", "udff") for key in USER_KEYS
)
_CONTENT_KEYS: Final = {"id": "id", "quantity": "quantity", "item_price": "item_price"}
_TYPED_CUSTOM: Final = frozenset(
    {
        "value",
        "currency",
        "order_id",
        "contents",
        "content_ids",
        "content_type",
        "content_name",
        "content_category",
        "num_items",
        "search_string",
    }
)
# Limited Data Use flags ride along to the Meta destination (docs/consent.md §5).
_LDU_KEYS: Final = ("dpo", "dpoco", "dpost")


@dataclass(frozen=True, slots=True)
class _Bracketed:
    custom: dict[str, str]
    user: dict[str, str]
    user_form: dict[str, str]


def _split(params: MultiDict[str]) -> _Bracketed:
    custom: dict[str, str] = {}
    user: dict[str, str] = {}
    user_form: dict[str, str] = {}
    for key, value in params.items():
        if not key.endswith("]") or "[" not in key:
            continue
        prefix, _, inner = key[:-1].partition("[")
        if prefix == "cd":
            custom.setdefault(inner, value)
        elif prefix == "ud":
            user.setdefault(inner, value)
        elif prefix == "udff":
            user_form.setdefault(inner, value)
    return _Bracketed(custom, user, user_form)


def _custom(raw: dict[str, str]) -> Custom:
    decoded = {key: json_or_text(value) for key, value in raw.items()}
    content_ids = decoded.get("content_ids")
    if isinstance(content_ids, str):
        content_ids = [content_ids]
    ids = (
        tuple(str(i) for i in content_ids if i is not None) if isinstance(content_ids, list) else ()
    )
    return Custom(
        value=decimal_or_none(decoded.get("value")),
        currency=text_or_none(decoded.get("currency"), 8),
        order_id=text_or_none(decoded.get("order_id")),
        contents=contents_from(decoded.get("contents"), _CONTENT_KEYS),
        content_ids=ids,
        content_type=text_or_none(decoded.get("content_type")),
        content_name=text_or_none(decoded.get("content_name")),
        content_category=text_or_none(decoded.get("content_category")),
        num_items=int_or_none(decoded.get("num_items")),
        search_string=text_or_none(decoded.get("search_string")),
        extra={k: v for k, v in decoded.items() if k not in _TYPED_CUSTOM},
    )


def _fbc_from_click(url: str | None, received_ms: int) -> str | None:
    """`fb.1.<ms>.<fbclid>` when the page URL carries a click ID (docs/platforms.md §1.3)."""
    fbclid = url_param(url, "fbclid")
    return f"fb.1.{received_ms}.{fbclid}" if fbclid else None


def _event_time(ts_ms: int | None, received_at: float) -> int:
    """`ts` in seconds; receive time when absent or ahead of our clock by over 5 minutes (a
    browser clock running fast: Meta refuses events from the future). An old `ts` is kept: the
    delivery worker never sends what is past the platform's age limit."""
    if not ts_ms or ts_ms <= 0 or ts_ms // 1000 > received_at + 300:
        return int(received_at)
    return ts_ms // 1000


class MetaPixel(Source):
    """`GET|POST /tr` and `/tr/`."""

    name = "meta_pixel"
    vendor = "meta"
    default_path = "/tr"
    user_keys = USER_KEYS
    personal_params = PERSONAL_PARAMS

    def routes(self) -> Sequence[tuple[str, str]]:
        base = self.base_path.rstrip("/")
        return [(m, p) for m in ("GET", "POST") for p in (base, base + "/")]

    def parse(self, hit: Hit) -> Parsed:
        params: MultiDict[str] = MultiDict(hit.query)
        dropped = 0
        if hit.method == "POST":
            # Body values win over the query string; both may carry parameters.
            pairs, dropped = form_fields(hit.body, hit.content_type)
            for key, value in pairs:
                params.popall(key, None)
                params.add(key, value)
        pixel_id: str | None = params.get("id")
        ev: str | None = params.get("ev")
        notes = {k: str(params[k])[:64] for k in ("id", "rqm", "a") if params.get(k)}
        if dropped:  # said once, on the hit's own log line
            notes["dropped_params"] = str(dropped)
        if not pixel_id or not ev:
            return Parsed(outcome=Outcome.IGNORED, reason="no id or ev", notes=notes)

        bracketed = _split(params)
        user_fields: dict[str, str] = {}
        for key, field in USER_KEYS.items():
            if found := bracketed.user.get(key) or bracketed.user_form.get(key):
                user_fields[field] = found
        received_ms = int(hit.received_at * 1000)
        # The no-script `<img>` has no `dl`, but its Referer is the page that embedded it.
        page_url = text_or_none(params.get("dl"), 4096) or text_or_none(hit.referer, 4096)
        ts = int_or_none(params.get("ts"))
        event_id = text_or_none(params.get("eid"), 256)
        fbc = params.get("fbc") or hit.cookies.get("_fbc") or _fbc_from_click(page_url, received_ms)
        user = User(
            **user_fields,
            client_ip=hit.client_ip,
            user_agent=hit.user_agent,
            ids=ids_of(
                fbp=params.get("fbp") or hit.cookies.get("_fbp"),
                fbc=fbc,
                ga_client_id=client_id_from_cookie(hit.cookies),
            ),
        )
        event = Event(
            event_id=event_id or new_event_id(),
            event_name=names.to_canonical("meta", ev),
            event_time=_event_time(ts, hit.received_at),
            source=self.name,
            action_source="website",
            event_source_url=page_url,
            referrer=text_or_none(params.get("rl"), 4096),
            user=user,
            custom=_custom(bracketed.custom),
            received_at=hit.received_at,
            dedupable=event_id is not None,
            meta=MetaExtras(
                pixel_id=pixel_id, **{k: str(params[k]) for k in _LDU_KEYS if k in params}
            ),
            raw=RawHit(
                vendor="meta",
                method=hit.method,
                path=hit.path,
                query_string=hit.query_string,
                body=hit.body,
                content_type=hit.content_type,
                accept_language=hit.accept_language,
            ),
        )
        carried = {k: str(params[k]) for k in ("fbp", "fbc") if params.get(k)}
        return Parsed(events=[event], notes=notes, carried=carried)

    def answer(self, hit: Hit | None) -> web.Response:
        if hit is not None and hit.method == "POST":
            return web.Response(status=200, body=b"")
        return web.Response(status=200, body=GIF, content_type="image/gif")
