"""GA4 gtag hits (`gtag.js` → `/g/collect`, protocol `v=2`): GET query, POST with one event a line.

Parameter meanings: docs/platforms.md §2.1. No official spec exists; the layout is
reverse-engineered.
What only a GA4 destination can use (session, engagement, user properties, whole items) rides in
`Event.ga4`; build info, screen size, campaign and promotion fields are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict
from pydantic import Field

from gateway import names
from gateway.event import (
    JSON,
    Content,
    Custom,
    Event,
    Ga4Extras,
    RawHit,
    User,
    ids_of,
    new_event_id,
)
from gateway.personal_data.hashing import b64url_digest_to_hex
from gateway.settings import SourceSettings
from gateway.sources.base import Hit, Outcome, Parsed, Source
from gateway.sources.coerce import decimal_or_none, int_or_none, text_or_none, url_param

MAX_EVENTS: Final = 50
"""Lines read from one POST body, twice what a Measurement Protocol request takes (25); gtag
sends a handful. Each line is an event built and stored: 1,000 of them held the loop for
seconds (bench/hostile.py)."""
MAX_PARAMS: Final = 300
"""Parameters read from one line: 200 items (`pr1`…), 25 custom ones and the standard set fit."""
MAX_ITEMS: Final = 200
"""`pr1`…`pr200`: GA4 keeps at most 200 items an event."""

# GA4's recommended events, for gtag's `en` and the Measurement Protocol's `name`.
names.register(
    "ga4",
    "GA4",
    {
        "page_view": "page_view",
        "view_content": "view_item",
        "search": "search",
        "add_to_cart": "add_to_cart",
        "add_to_wishlist": "add_to_wishlist",
        "initiate_checkout": "begin_checkout",
        "add_payment_info": "add_payment_info",
        "purchase": "purchase",
        "lead": "generate_lead",
        "complete_registration": "sign_up",
        "contact": "contact",
        "subscribe": "subscribe",
        "start_trial": "start_trial",
    },
    tag=True,
)

_REQUIRED: Final = ("tid", "cid", "en")
CONSENT_KEYS: Final = (
    "gcs",
    "gcd",
    "npa",
    "dma",
    "dma_cps",
    "gcu",
    "gcut",
    "gdpr",
    "gdpr_consent",
)
"""Consent parameters kept verbatim for the consent rules (docs/consent.md)."""

# `ep.<name>` params that fill typed canonical fields instead of `custom.extra`.
_TYPED_PARAMS: Final = frozenset({"transaction_id", "value", "search_term"})

# Item field key (2 chars) → GA4 item parameter name (d8a-tech/d8a `columns_items.go`).
_ITEM_FIELDS: Final = {
    "id": "item_id",
    "nm": "item_name",
    "af": "affiliation",
    "cp": "coupon",
    "ds": "discount",
    "lp": "index",
    "br": "item_brand",
    "ca": "item_category",
    "c2": "item_category2",
    "c3": "item_category3",
    "c4": "item_category4",
    "c5": "item_category5",
    "li": "item_list_id",
    "ln": "item_list_name",
    "va": "item_variant",
    "lo": "location_id",
    "pr": "price",
    "qt": "quantity",
    "cn": "creative_name",
    "cs": "creative_slot",
    "pi": "promotion_id",
    "pn": "promotion_name",
}
_NUMERIC_ITEM_FIELDS: Final = frozenset({"discount", "index", "price", "quantity"})

# `em` user-provided data key → canonical user field. `fn0`/`ln0` are address 0; gtag hashes
# em/pn/fn/ln (base64url digests) and sends postal code and country in clear.
_USER_DATA: Final = {
    "em": "email",
    "pn": "phone",
    "fn0": "first_name",
    "ln0": "last_name",
    "pc0": "zip",
    "co0": "country",
}

# The parameters that hold a person: `em` carries the user-provided data (`tv.1~em.…~pn.…`).
PERSONAL_PARAMS: Final = frozenset({"em"})


class Ga4Settings(SourceSettings):
    """`sources.ga4`."""

    event_id_param: str = Field(default="event_id", min_length=1, max_length=40)
    """The event parameter (`ep.<name>`) that carries the event ID (project convention)."""


def _number(text: str) -> JSON:
    """An `epn.`/`upn.`/item number as a JSON number; text that is no number stays text."""
    value = decimal_or_none(text)
    if value is None:
        return text
    # Within 15 digits an integer is exact as a JSON number, even read as a double.
    return int(value) if value == value.to_integral_value() else float(value)


def _text(value: str | None, limit: int = 2048) -> str | None:
    return text_or_none(value, limit)


def _lines(body: bytes) -> list[str]:
    """The non-blank lines of a body; one event each. Empty list for an empty body."""
    text = body.decode("utf-8", errors="replace")
    return [line for line in text.split("\n") if line.strip()]


def _merged(shared: MultiDict[str], line: str, dropped: list[int]) -> MultiDict[str]:
    """The query's params with every key the line has replaced by the line's value(s); the
    line's parameters past MAX_PARAMS are counted into `dropped[0]`, not read."""
    fields = line.strip().split("&", MAX_PARAMS)
    if len(fields) > MAX_PARAMS:
        dropped[0] += fields.pop().count("&") + 1
    own = parse_qsl("&".join(fields), keep_blank_values=True)
    params = shared.copy()
    for key in {key for key, _ in own}:
        params.popall(key, None)
    params.extend(own)
    return params


def _item_custom_params(fields: list[tuple[str, str]]) -> dict[str, str]:
    """Custom item params from `k<i><name>` / `v<i><value>` pairs.

    `v<i>` is ambiguous when the value starts with a digit (`v112`: index 1 → `12`, or index
    11 → `2`), so the index is resolved against the `k` indices: a `v` with one possible index
    takes it first; the others take the longest index still without a value.
    """
    keys: dict[str, str] = {}
    for kind, text in fields:
        digits = _leading_digits(text)
        # GA4 param names start with a letter, so a `k` index is all its leading digits.
        if kind == "k" and digits and text[len(digits) :]:
            keys.setdefault(digits, text[len(digits) :])
    found: dict[str, str] = {}
    pending: list[tuple[str, list[str]]] = []
    for kind, text in fields:
        digits = _leading_digits(text)
        candidates = [digits[:n] for n in range(1, len(digits) + 1) if digits[:n] in keys]
        if kind != "v" or not candidates:
            continue
        if len(candidates) == 1:
            found.setdefault(keys[candidates[0]], text[len(candidates[0]) :])
        else:
            pending.append((text, candidates))
    for text, candidates in pending:
        unclaimed = [c for c in candidates if keys[c] not in found]
        if unclaimed:
            found[keys[unclaimed[-1]]] = text[len(unclaimed[-1]) :]
    return found


def _leading_digits(text: str) -> str:
    end = 0
    while end < len(text) and text[end].isascii() and text[end].isdigit():
        end += 1
    return text[:end]


def _item(raw: str) -> dict[str, JSON]:
    """One `pr<N>` string (`id…~nm…~pr…~qt…`) as a GA4 item dict; unknown keys are dropped."""
    item: dict[str, JSON] = {}
    custom_fields: list[tuple[str, str]] = []
    for part in raw.split("~"):
        key, value = part[:2], part[2:]
        if key[:1] in ("k", "v") and key[1:2].isascii() and key[1:2].isdigit():
            custom_fields.append((key[:1], part[1:]))
        elif (name := _ITEM_FIELDS.get(key)) and value and name not in item:
            item[name] = _number(value) if name in _NUMERIC_ITEM_FIELDS else value
    for name, value in _item_custom_params(custom_fields).items():
        item.setdefault(name, value)
    return item


def _items(params: MultiDict[str]) -> list[dict[str, JSON]]:
    """`pr1`…`pr200` in index order (gtag numbers them from 1)."""
    indexed: list[tuple[int, str]] = []
    for key, value in params.items():
        if key.startswith("pr") and key[2:].isascii() and key[2:].isdigit():
            index = int(key[2:])
            if 1 <= index <= MAX_ITEMS:
                indexed.append((index, value))
    indexed.sort(key=lambda pair: pair[0])
    return [item for _, raw in indexed if (item := _item(raw))]


def _content(item: dict[str, JSON]) -> Content | None:
    item_id = text_or_none(item.get("item_id"), 256)
    if item_id is None:
        return None  # GA4 allows an item with only a name; canonical contents need an ID
    return Content(
        id=item_id,
        quantity=int_or_none(item.get("quantity")),
        item_price=decimal_or_none(item.get("price")),
        name=text_or_none(item.get("item_name"), 256),
        category=text_or_none(item.get("item_category"), 256),
        brand=text_or_none(item.get("item_brand"), 256),
    )


def _user_data(raw: str | None) -> dict[str, str]:
    """Canonical user fields from `em=tv.1~em.<b64url>~pn.<b64url>~fn0.…~co0.NO`.

    Hashes come as base64url digests; they are re-encoded as hex so the contract's 64-hex
    pass-through sees them (else they would be hashed twice, docs/platforms.md §2.3). An empty
    `em.` (a tag that set user_data too late) counts as absent.
    """
    found: dict[str, str] = {}
    if not raw:
        return found
    for part in raw.split("~"):
        key, _, value = part.partition(".")
        field = _USER_DATA.get(key)
        # Several values may come comma-separated; base64url has no comma, so split is safe.
        first = value.split(",")[0].strip()
        if field is None or not first or field in found:
            continue
        if field in ("email", "phone", "first_name", "last_name"):
            first = b64url_digest_to_hex(first.rstrip("=")) or first
        found[field] = first[:256]
    return found


def _param(params: MultiDict[str], name: str) -> str | None:
    """An event param by name, string or numeric: gtag sends a number given to gtag() as
    `epn.` (so a numeric `transaction_id` or event ID arrives as `epn.transaction_id`)."""
    found: str | None = params.get(f"ep.{name}") or params.get(f"epn.{name}")
    return found


def _extra(params: MultiDict[str], skip: Iterable[str]) -> dict[str, JSON]:
    """Other event params for `custom.extra`; `epn.` ones as numbers."""
    skipped = frozenset(skip)
    extra: dict[str, JSON] = {}
    for key, value in params.items():
        prefix, dot, name = key.partition(".")
        if not dot or not name or name in skipped or name in extra:
            continue
        if prefix == "ep":
            extra[name] = value
        elif prefix == "epn":
            extra[name] = _number(value)
    return extra


def _user_properties(params: MultiDict[str]) -> dict[str, JSON]:
    """`up.`/`upn.` params. One that is personal data (`up.email`) has no hashing rule: the
    pipeline's personal-data gate drops it, as it does an item parameter."""
    props: dict[str, JSON] = {}
    for key, value in params.items():
        prefix, dot, name = key.partition(".")
        if dot and name and name not in props:
            if prefix == "up":
                props[name] = value
            elif prefix == "upn":
                props[name] = _number(value)
    return props


class Ga4(Source):
    """`GET|POST /g/collect`."""

    name = "ga4"
    vendor = "ga4"
    settings_model = Ga4Settings
    default_path = "/g/collect"
    personal_params = PERSONAL_PARAMS

    def __init__(self, settings: SourceSettings) -> None:
        super().__init__(settings)
        param = (
            settings.event_id_param
            if isinstance(settings, Ga4Settings)
            else Ga4Settings.model_fields["event_id_param"].default
        )
        self.event_id_param: str = param

    def routes(self) -> Sequence[tuple[str, str]]:
        return [("GET", self.base_path), ("POST", self.base_path)]

    def parse(self, hit: Hit) -> Parsed:
        shared: MultiDict[str] = MultiDict(hit.query)
        lines = _lines(hit.body)
        unread = [0]
        batches = (
            [_merged(shared, line, unread) for line in lines[:MAX_EVENTS]] if lines else [shared]
        )
        raw = RawHit(
            vendor="ga4",
            method=hit.method,
            path=hit.path,
            query_string=hit.query_string,
            body=hit.body,
            content_type=hit.content_type,
            accept_language=hit.accept_language,
        )
        events: list[Event] = []
        skipped = 0
        for index, params in enumerate(batches):
            if not all(_text(params.get(key)) for key in _REQUIRED):
                skipped += 1
                continue
            events.append(self._event(hit, params, raw, index, len(batches)))
        notes = {"transport": "post-lines" if lines else "query", "events": str(len(events))}
        first = events[0].ga4 if events else None
        if first is not None:
            notes["tid"] = first.measurement_id[:64]
            if first.page_load_id:
                notes["_p"] = first.page_load_id[:64]
        if skipped:
            notes["skipped"] = str(skipped)
        if len(lines) > MAX_EVENTS:
            notes["dropped"] = str(len(lines) - MAX_EVENTS)
        if unread[0]:  # said once, on the hit's own log line
            notes["dropped_params"] = str(unread[0])
        if not events:
            return Parsed(
                outcome=Outcome.MALFORMED, reason="no event with tid, cid and en", notes=notes
            )
        return Parsed(events=events, notes=notes)

    def _event(
        self, hit: Hit, params: MultiDict[str], raw: RawHit, index: int, count: int
    ) -> Event:
        en = str(params["en"]).strip()[:256]
        event_name = names.to_canonical("ga4", en)
        order_id = _text(_param(params, "transaction_id"), 256)
        event_id = _text(_param(params, self.event_id_param), 256)
        dedupable = event_id is not None
        if event_id is None and event_name == "purchase" and order_id:
            # GA4 itself deduplicates purchases by transaction_id, so it is as good an event
            # ID as any the page could give (docs/platforms.md §0, recommendation).
            event_id, dedupable = order_id, True
        page_url = _text(params.get("dl"), 4096)
        items = _items(params)
        user = User(
            **_user_data(params.get("em")),
            external_id=_text(params.get("uid"), 256),
            client_ip=hit.client_ip,
            user_agent=hit.user_agent,
            ids=ids_of(
                gclid=_text(url_param(page_url, "gclid"), 512),
                ga_client_id=_text(params.get("cid"), 256),
            ),
        )
        custom = Custom(
            value=decimal_or_none(params.get("epn.value") or params.get("ep.value")),
            currency=_text(params.get("cu"), 8),
            order_id=order_id,
            contents=tuple(c for item in items if (c := _content(item)) is not None),
            search_string=_text(_param(params, "search_term")),
            page_title=_text(params.get("dt")),
            extra=_extra(params, _TYPED_PARAMS | {self.event_id_param}),
        )
        consent = {key: str(params[key]) for key in CONSENT_KEYS if params.get(key)}
        if hit.gpc:
            consent["gpc"] = "1"
        return Event(
            event_id=event_id or new_event_id(),
            event_name=event_name,
            event_time=int(hit.received_at),  # gtag hits carry no event timestamp
            source=self.name,
            action_source="website",
            event_source_url=page_url,
            referrer=_text(params.get("dr"), 4096),
            user=user,
            custom=custom,
            consent_signals=consent,
            received_at=hit.received_at,
            dedupable=dedupable,
            ga4=self._extras(params, en, items, index, count),
            raw=raw,
        )

    @staticmethod
    def _extras(
        params: MultiDict[str], en: str, items: list[dict[str, JSON]], index: int, count: int
    ) -> Ga4Extras:
        return Ga4Extras(
            measurement_id=str(params["tid"]).strip(),
            event_name=en,
            line=index,
            lines=count,
            session_id=_text(params.get("sid"), 64),
            session_count=int_or_none(params.get("sct")),
            session_engaged=int_or_none(params.get("seg")),
            engagement_time_msec=int_or_none(params.get("_et")),
            page_load_id=_text(params.get("_p"), 64),
            hit_sequence=int_or_none(params.get("_s")),
            user_properties=_user_properties(params),
            items=tuple(items),
        )

    def answer(self, hit: Hit | None) -> web.Response:
        return web.Response(status=204)
