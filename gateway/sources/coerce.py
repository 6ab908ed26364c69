"""Lenient readers for values that arrive as text (or loosely typed JSON) in browser hits."""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import orjson
import pycountry

from gateway.event import Content

MAX_DIGITS: Final = 15
"""Integer digits a number may have (a quadrillion): larger is garbage, not a value or count.
Past it `1e1000000` would make `abs()` raise and take minutes to become an int."""


def decimal_or_none(raw: object) -> Decimal | None:
    """A finite decimal of at most MAX_DIGITS integer digits, from a number or numeric text."""
    if raw is None or isinstance(raw, bool):
        return None
    if isinstance(raw, float) and not math.isfinite(raw):
        return None
    try:
        value = Decimal(str(raw).strip())
    except (InvalidOperation, ValueError):
        return None
    if not value.is_finite() or value.adjusted() >= MAX_DIGITS:
        return None
    return value


@lru_cache(maxsize=256)
def known_currency(code: str | None) -> bool:
    """True for an ISO 4217 code (any case)."""
    return (
        bool(code)
        and len(code or "") == 3
        and pycountry.currencies.get(alpha_3=(code or "").upper()) is not None
    )


def int_or_none(raw: object) -> int | None:
    """An integer from a number or a numeric string (decimals truncated), else None."""
    value = decimal_or_none(raw)
    return None if value is None else int(value)


def text_or_none(raw: object, limit: int = 2048) -> str | None:
    """A non-empty string, trimmed and capped, from a scalar; None for empties and containers."""
    if raw is None or isinstance(raw, dict | list | bool):
        return None
    text = str(raw).strip()
    return text[:limit] if text else None


def json_or_text(raw: str) -> Any:
    """Decode JSON text for values that look like arrays or objects, else the text itself."""
    stripped = raw.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return orjson.loads(stripped)
        except orjson.JSONDecodeError:
            return raw
    return raw


def contents_from(raw: object, keys: Mapping[str, str]) -> tuple[Content, ...]:
    """Line items from a list of objects; `keys` maps Content fields to the vendor's keys."""
    if not isinstance(raw, list):
        return ()
    items: list[Content] = []
    for entry in raw[:200]:
        if not isinstance(entry, dict):
            continue
        item_id = text_or_none(entry.get(keys["id"]), 256)
        if item_id is None:
            continue
        items.append(
            Content(
                id=item_id,
                quantity=int_or_none(entry.get(keys.get("quantity", "quantity"))),
                item_price=decimal_or_none(entry.get(keys.get("item_price", "item_price"))),
                name=text_or_none(entry.get(keys.get("name", "name")), 256),
                category=text_or_none(entry.get(keys.get("category", "category")), 256),
                brand=text_or_none(entry.get(keys.get("brand", "brand")), 256),
            )
        )
    return tuple(items)


def url_param(url: str | None, name: str) -> str | None:
    """The first value of a query parameter of a URL, exactly as given (no re-encoding)."""
    if not url or name not in url:
        return None
    try:
        values = parse_qs(urlsplit(url).query, keep_blank_values=False).get(name)
    except ValueError:
        return None
    return values[0] if values else None
