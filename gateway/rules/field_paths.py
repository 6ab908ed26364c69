"""Dotted field paths (`user.phone`, `custom.value`, `custom.coupon`) that rules drop or set.

A path is checked once, when the config is loaded; a set value is checked and converted to
the field's type then too, so applying a rule to an event cannot fail.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final

import pycountry

from gateway.destinations import IDENTIFIERS
from gateway.event import ACTION_SOURCES, CUSTOM_FIELDS, USER_FIELDS, Event
from gateway.sources.coerce import decimal_or_none

MAX_TEXT: Final = 4096


class Section(StrEnum):
    """Where a field lives on the Event."""

    EVENT = "event"
    USER = "user"
    ID = "id"
    """A vendor identifier under `user` (`user.fbp`), kept in `User.ids`."""
    CUSTOM = "custom"
    EXTRA = "extra"
    """A free key under `custom`, kept in `Custom.extra`."""


_EVENT_FIELDS: Final = frozenset({"event_source_url", "referrer", "action_source"})
_PROTECTED: Final = {
    "event_id": "the platforms deduplicate on it",
    "event_name": "use rename_event",
    "event_time": "it is when the source saw the event",
}
_CUSTOM_TEXT: Final = frozenset(
    {"order_id", "content_type", "content_name", "content_category", "search_string", "page_title"}
)


@dataclass(frozen=True, slots=True)
class FieldPath:
    """One field of the canonical event, as a rule names it."""

    section: Section
    name: str

    def __str__(self) -> str:
        if self.section is Section.EVENT:
            return self.name
        if self.section in (Section.USER, Section.ID):
            return f"user.{self.name}"
        return f"custom.{self.name}"


class PathError(ValueError):
    """A path or value a rule cannot use; the message is what `check` prints after the key path."""


def parse_path(text: str, *, setting: bool) -> FieldPath:
    """The field a dotted path names, or PathError (`setting` for `set`, else `drop_fields`)."""
    head, dot, rest = text.partition(".")
    if not dot and text in _PROTECTED:
        verb = "set" if setting else "dropped"
        raise PathError(f"'{text}' cannot be {verb} ({_PROTECTED[text]})")
    if not dot and text in _EVENT_FIELDS:
        if text == "action_source" and not setting:
            raise PathError("'action_source' cannot be dropped (every event has one); set it")
        return FieldPath(Section.EVENT, text)
    if head == "user" and rest in USER_FIELDS:
        return FieldPath(Section.USER, rest)
    if head == "user" and rest in IDENTIFIERS:
        return FieldPath(Section.ID, rest)
    if head == "custom" and rest and "." not in rest:
        if rest in CUSTOM_FIELDS:
            if setting and rest == "contents":
                raise PathError("'custom.contents' cannot be set, only dropped")
            return FieldPath(Section.CUSTOM, rest)
        return FieldPath(Section.EXTRA, rest)
    raise PathError(f"unknown field path '{text}'")


def coerce(path: FieldPath, value: object) -> Any:
    """`value` as the field at `path` holds it, or PathError saying what the field takes."""
    if value is None:
        raise PathError("must not be null (to remove a field, use drop_fields)")
    if path.section is Section.EXTRA:
        if not _is_json(value):
            raise PathError("must be a string, number, boolean, list or mapping")
        return value
    if path.section is Section.CUSTOM:
        return _custom_value(path.name, value)
    text = _text(value)
    if path.name == "action_source" and text not in ACTION_SOURCES:
        raise PathError(f"must be one of {', '.join(sorted(ACTION_SOURCES))}")
    return text


def drop(event: Event, path: FieldPath) -> Event:
    """`event` without the field (its default: None, empty, or the key gone from extra)."""
    cleared: dict[str, Any] = {path.name: None}
    if path.section is Section.EVENT:
        if getattr(event, path.name) is None:
            return event
        return replace(event, **cleared)
    if path.section is Section.USER:
        if getattr(event.user, path.name) is None:
            return event
        return replace(event, user=replace(event.user, **cleared))
    if path.section is Section.ID:
        if path.name not in event.user.ids:
            return event
        ids = {k: v for k, v in event.user.ids.items() if k != path.name}
        return replace(event, user=replace(event.user, ids=ids))
    if path.section is Section.CUSTOM:
        if path.name in ("contents", "content_ids"):
            cleared[path.name] = ()
        if getattr(event.custom, path.name) == cleared[path.name]:
            return event
        return replace(event, custom=replace(event.custom, **cleared))
    if path.name not in event.custom.extra:
        return event
    extra = {k: v for k, v in event.custom.extra.items() if k != path.name}
    return replace(event, custom=replace(event.custom, extra=extra))


def assign(event: Event, path: FieldPath, value: Any) -> Event:
    """`event` with the field set to `value` (already coerced)."""
    if path.section is Section.EVENT:
        return replace(event, **{path.name: value})
    if path.section is Section.USER:
        return replace(event, user=replace(event.user, **{path.name: value}))
    if path.section is Section.ID:
        return replace(event, user=replace(event.user, ids={**event.user.ids, path.name: value}))
    if path.section is Section.CUSTOM:
        return replace(event, custom=replace(event.custom, **{path.name: value}))
    # A copy each time: events must not share a list or dict some later code could change.
    extra = {**event.custom.extra, path.name: copy.deepcopy(value)}
    return replace(event, custom=replace(event.custom, extra=extra))


def _text(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PathError("must be a string")
    text = str(value).strip()
    if not text:
        raise PathError("must not be empty")
    if len(text) > MAX_TEXT:
        raise PathError(f"longer than {MAX_TEXT} characters")
    return text


def _custom_value(name: str, value: object) -> Any:
    if name in _CUSTOM_TEXT:
        return _text(value)
    if name == "value":
        number = None if isinstance(value, bool) else decimal_or_none(value)
        if number is None or number < 0:
            raise PathError("must be a decimal number, not negative")
        return number
    if name == "currency":
        code = _text(value).upper()
        if len(code) != 3 or pycountry.currencies.get(alpha_3=code) is None:
            raise PathError(f"unknown currency '{value}'")
        return code
    if name == "num_items":
        count = None if isinstance(value, bool) else decimal_or_none(value)
        # A constant in the config says what it means: 2.5 items is a mistake, not 2.
        if count is None or count < 0 or count != count.to_integral_value() or count > 2**31:
            raise PathError("must be a whole number, not negative")
        return int(count)
    if name == "content_ids":
        if not isinstance(value, list) or not value:
            raise PathError("must be a non-empty list of IDs")
        return tuple(_text(item) for item in value)
    raise PathError(f"'custom.{name}' cannot be set")  # pragma: no cover - parse_path guards


def _is_json(value: object) -> bool:
    if value is None or isinstance(value, str | bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_json(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False
