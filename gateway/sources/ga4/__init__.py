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
from gateway.sources.ga4.items import content_of, items_of, number

MAX_EVENTS: Final = 50
"""Lines read from one POST body, twice what a Measurement Protocol request takes (25); gtag
sends a handful. Each line is an event built and stored: 1,000 of them held the loop for
seconds (bench/hostile.py)."""
MAX_PARAMS: Final = 300
"""Parameters read from one line: 200 items (`pr1`…), 25 custom ones and the standard set fit."""

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
            extra[name] = number(value)
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
                props[name] = number(value)
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
        items = items_of(params)
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
            contents=tuple(c for item in items if (c := content_of(item)) is not None),
            search_string=_text(_param(params, "search_term")),
            page_title=_text(params.get("dt")),
            extra=_extra(params, _TYPED_PARAMS | {self.event_id_param}),
        )
        consent = {key: str(params[key]) for key in CONSENT_KEYS if params.get(key)}
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
