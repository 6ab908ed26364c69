"""GA4 items (`pr1`…`pr200`) from a gtag hit, and the numbers gtag sends as text.

The item string's two-letter keys: docs/platforms.md §2.1 (reverse-engineered).
"""

from __future__ import annotations

from typing import Final

from multidict import MultiDict

from gateway.event import JSON, Content
from gateway.sources.coerce import decimal_or_none, int_or_none, text_or_none

MAX_ITEMS: Final = 200
"""`pr1`…`pr200`: GA4 keeps at most 200 items an event."""

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


def number(text: str) -> JSON:
    """An `epn.`/`upn.`/item number as a JSON number; text that is no number stays text."""
    value = decimal_or_none(text)
    if value is None:
        return text
    # Within 15 digits an integer is exact as a JSON number, even read as a double.
    return int(value) if value == value.to_integral_value() else float(value)


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
            item[name] = number(value) if name in _NUMERIC_ITEM_FIELDS else value
    for name, value in _item_custom_params(custom_fields).items():
        item.setdefault(name, value)
    return item


def items_of(params: MultiDict[str]) -> list[dict[str, JSON]]:
    """`pr1`…`pr200` in index order (gtag numbers them from 1)."""
    indexed: list[tuple[int, str]] = []
    for key, value in params.items():
        if key.startswith("pr") and key[2:].isascii() and key[2:].isdigit():
            index = int(key[2:])
            if 1 <= index <= MAX_ITEMS:
                indexed.append((index, value))
    indexed.sort(key=lambda pair: pair[0])
    return [item for _, raw in indexed if (item := _item(raw))]


def content_of(item: dict[str, JSON]) -> Content | None:
    """A GA4 item as a canonical line item; None without an `item_id`."""
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
