"""GA4 event parameters and user properties from the canonical event, within GA4's limits.

docs/platforms.md §2.2 and §4.3: names a letter first and at most 40 characters (24 for a user
property), values cut to GA4's limits (said in the log), at most 25 parameters and 200 items.
"""

from __future__ import annotations

import re
from typing import Final

import structlog

from gateway.destinations.base import line_items
from gateway.event import JSON, Event, json_number

log = structlog.get_logger("gateway.destinations.ga4_mp")

MAX_PARAMS: Final = 25
MAX_ITEMS: Final = 200
DEFAULT_VALUE_LIMIT: Final = 100
# GA4's collection limits allow these three page parameters more than the usual 100 characters
# (https://support.google.com/analytics/answer/9267744; unverified that MP applies the same).
VALUE_LIMITS: Final = {"page_location": 1000, "page_referrer": 420, "page_title": 300}

PROPERTY_VALUE_LIMIT: Final = 36

_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
_PROPERTY: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,23}")
_RESERVED_PREFIXES: Final = ("firebase_", "ga_", "google_", "gtag.")


# --- parameters (docs/platforms.md §2.2, §4.3) ----------------------------------------------------


def valid_name(name: str) -> bool:
    """An event or parameter name GA4 takes: a letter first, at most 40, no reserved prefix."""
    return _NAME.fullmatch(name) is not None and not name.startswith(_RESERVED_PREFIXES)


def _fit(event_id: str, where: str, value: JSON) -> JSON:
    """A string value cut to GA4's limit for its parameter, saying so in the log."""
    limit = VALUE_LIMITS.get(where, DEFAULT_VALUE_LIMIT)
    if isinstance(value, str) and len(value) > limit:
        log.warning(
            "ga4.value_trimmed", event_id=event_id, param=where, length=len(value), limit=limit
        )
        return value[:limit]
    return value


def _scalar(value: object) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


_ITEM_KEYS: Final = {
    "id": "item_id",
    "name": "item_name",
    "item_price": "price",
    "quantity": "quantity",
    "brand": "item_brand",
    "category": "item_category",
}


def _items(event: Event) -> list[dict[str, JSON]]:
    """`items[]`: a GA4 hit's own items when it had them (every item field kept), else the
    canonical contents."""
    ga4_items = event.ga4.items if event.ga4 else ()
    if ga4_items:
        rows = [
            {k: v for k, v in item.items() if isinstance(k, str) and _scalar(v)}
            for item in ga4_items
            if isinstance(item, dict)
        ]
    else:
        rows = line_items(event.custom.contents, _ITEM_KEYS) or [
            {"item_id": i} for i in event.custom.content_ids
        ]
    if len(rows) > MAX_ITEMS:
        log.warning("ga4.items_dropped", event_id=event.event_id, items=len(rows), limit=MAX_ITEMS)
    return [
        {k: _fit(event.event_id, f"items.{k}", v) for k, v in row.items()}
        for row in rows[:MAX_ITEMS]
        if row
    ]


def user_properties(event: Event) -> dict[str, JSON]:
    """`user_properties` a GA4 hit carried (`up.<n>`), within GA4's limits (24-char names,
    36-char values, 25 of them); anything dropped or cut is logged."""
    raw = event.ga4.user_properties if event.ga4 else {}
    out: dict[str, JSON] = {}
    dropped: list[str] = []
    for name, value in raw.items():
        valid = isinstance(name, str) and _PROPERTY.fullmatch(name) and _scalar(value)
        if not valid or name.startswith(_RESERVED_PREFIXES) or len(out) >= MAX_PARAMS:
            dropped.append(str(name))
            continue
        if isinstance(value, str) and len(value) > PROPERTY_VALUE_LIMIT:
            log.warning(
                "ga4.value_trimmed",
                event_id=event.event_id,
                param=f"user_properties.{name}",
                length=len(value),
                limit=PROPERTY_VALUE_LIMIT,
            )
            value = value[:PROPERTY_VALUE_LIMIT]
        out[name] = {"value": value}
    if dropped:  # one line per event, not one per property
        log.warning(
            "ga4.user_properties_dropped",
            event_id=event.event_id,
            count=len(dropped),
            names=[n[:64] for n in dropped[:10]],
        )
    return out


def _engagement_ms(raw: object) -> int | None:
    if raw is None or isinstance(raw, bool):
        return None
    try:
        value = int(str(raw))
    except ValueError:
        return None
    return value if value >= 0 else None


def event_params(event: Event) -> dict[str, JSON]:
    """The event's `params` within GA4's limits: values cut, extras past 25 dropped (logged)."""
    custom = event.custom
    ga4 = event.ga4
    session_id = ga4.session_id if ga4 and not event.limited else None
    standard: dict[str, JSON] = {
        "page_location": event.event_source_url,
        "page_referrer": event.referrer,
        "page_title": custom.page_title,
        "currency": custom.currency.upper() if custom.currency else None,
        "value": json_number(custom.value),
        # An empty transaction_id makes GA4 deduplicate every such purchase together: omit it.
        "transaction_id": custom.order_id or None,
        "items": _items(event) or None,
        "search_term": custom.search_string,
        # Both needed for realtime reports and session attribution (docs/platforms.md §2.2).
        # A consent-limited event keeps no session: it would tie the stripped events together.
        "session_id": session_id,
        "engagement_time_msec": _engagement_ms(ga4.engagement_time_msec) if ga4 else None,
        "event_id": event.event_id,
    }
    params = {k: _fit(event.event_id, k, v) for k, v in standard.items() if v is not None}
    invalid: list[str] = []
    over: list[str] = []
    for key, value in custom.extra.items():
        if key in standard:
            continue
        if not valid_name(key) or not _scalar(value):
            invalid.append(key)
        elif len(params) >= MAX_PARAMS:
            over.append(key)
        else:
            params[key] = _fit(event.event_id, key, value)
    if invalid or over:
        # One line per event, never one per parameter: a hostile hit carries thousands.
        log.warning(
            "ga4.params_dropped",
            event_id=event.event_id,
            invalid=[k[:64] for k in invalid[:10]],
            invalid_count=len(invalid),
            over_limit=len(over),
            names=[k[:64] for k in over[:10]],
        )
    return params
