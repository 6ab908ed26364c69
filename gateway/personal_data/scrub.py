"""The gate every canonical event passes before anything of it is stored or sent.

User fields have hashing rules (each destination hashes them in memory); everything else that
can hold a person has none, so personal data found there is dropped, whatever the rules say:

- a page URL's query parameter that holds an email address or a phone number (`urls`);
- a free-form custom field that is personal by its name or value (`custom.email`, `cd[note]`
  with an address in it, `up.phone`), GA4 user properties and item parameters the same way;
- a free text (`page_title`, `search_string`, a line item's name) holding an email address or
  a phone number written with `+` and its country code.

Names in free text cannot be told from other words: free-text fields must not carry them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final

from gateway.event import JSON, Content, Custom, Event, Ga4Extras
from gateway.personal_data.detect import personal_by_name, personal_field, personal_text
from gateway.personal_data.urls import scrub_optional

FREE_TEXT: Final = ("search_string", "content_name", "content_category", "page_title")
"""Typed custom fields of free text, where a shop or a visitor may type an address."""
_CONTENT_TEXT: Final = ("name", "category", "brand")


@dataclasses.dataclass(frozen=True, slots=True)
class Scrubbed:
    """The event as it may be stored and sent, and which fields lost what (names only)."""

    event: Event
    fields: tuple[str, ...] = ()


def scrub_event(event: Event) -> Scrubbed:
    """`event` without the personal data it may not carry (module docstring)."""
    dropped: list[str] = []
    page_url = scrub_optional(event.event_source_url)
    referrer = scrub_optional(event.referrer)
    if page_url != event.event_source_url:
        dropped.append("event_source_url")
    if referrer != event.referrer:
        dropped.append("referrer")
    custom = _custom(event.custom, dropped)
    ga4 = _ga4(event.ga4, dropped) if event.ga4 is not None else None
    if not dropped:
        return Scrubbed(event)
    return Scrubbed(
        dataclasses.replace(
            event, event_source_url=page_url, referrer=referrer, custom=custom, ga4=ga4
        ),
        tuple(name[:64] for name in dropped),
    )


def _custom(custom: Custom, dropped: list[str]) -> Custom:
    before = len(dropped)
    extra = _fields(custom.extra, "custom", dropped)
    texts = [name for name in FREE_TEXT if personal_text(getattr(custom, name))]
    dropped.extend(f"custom.{name}" for name in texts)
    contents = tuple(
        kept
        for i, item in enumerate(custom.contents)
        if (kept := _content(item, f"custom.contents[{i}]", dropped)) is not None
    )
    ids = tuple(i for i in custom.content_ids if not personal_text(i))
    if len(ids) != len(custom.content_ids):
        dropped.append("custom.content_ids")
    if len(dropped) == before:
        return custom
    cleared: dict[str, None] = dict.fromkeys(texts)
    return dataclasses.replace(custom, extra=extra, contents=contents, content_ids=ids, **cleared)


def _content(item: Content, where: str, dropped: list[str]) -> Content | None:
    if personal_text(item.id):
        dropped.append(f"{where}.id")
        return None  # an item known by an address is no item to keep
    texts = [name for name in _CONTENT_TEXT if personal_text(getattr(item, name))]
    if not texts:
        return item
    dropped.extend(f"{where}.{name}" for name in texts)
    cleared: dict[str, Any] = dict.fromkeys(texts)
    return dataclasses.replace(item, **cleared)


def _fields(fields: Mapping[str, JSON], where: str, dropped: list[str]) -> Mapping[str, JSON]:
    personal = [key for key, value in fields.items() if personal_field(key, value)]
    if not personal:
        return fields
    dropped.extend(f"{where}.{key}" for key in personal)
    return {k: v for k, v in fields.items() if k not in personal}


def _ga4(ga4: Ga4Extras, dropped: list[str]) -> Ga4Extras:
    before = len(dropped)
    properties = _fields(ga4.user_properties, "user_properties", dropped)
    items = tuple(_fields(item, f"items[{i}]", dropped) for i, item in enumerate(ga4.items))
    if len(dropped) == before:
        return ga4
    return dataclasses.replace(ga4, user_properties=properties, items=items)


GONE: Final = object()
"""What `strip_personal` returns for a value that is itself personal data."""


def strip_personal(key: str, value: object, depth: int = 0) -> object:
    """A JSON value with the personal parts taken out, in place, the rest kept: a member whose
    name says it is a person's (`email`, `customer_phone` with a number), a text holding an
    address or a `+` phone number. `GONE` when `value` itself is such a part (for a raw hit
    forwarded as the browser sent it, where dropping a whole `contents` for one name would
    lose the order's lines)."""
    if depth > 8:
        return GONE  # nested deeper than anything a tag sends: not worth the risk
    if personal_by_name(key, value):
        return GONE
    if isinstance(value, dict):
        for k in [k for k, v in value.items() if strip_personal(str(k), v, depth + 1) is GONE]:
            del value[k]
    elif isinstance(value, list):
        value[:] = [v for v in value if strip_personal(key, v, depth + 1) is not GONE]
    elif personal_text(value):
        return GONE
    return value
