"""The shop's own backend: `POST /v1/events` with canonical events as JSON (docs/http.md §2).

Validation is strict where the platforms are strict, so a bad event is refused here, with its
field path, instead of dying later at a platform (or spoiling a whole batch there).
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, Final

import orjson
from pydantic import Field, SecretStr

from gateway import names
from gateway.event import (
    ACTION_SOURCES,
    CUSTOM_FIELDS,
    PURPOSES,
    USER_FIELDS,
    Consent,
    ConsentState,
    Content,
    Custom,
    Event,
    User,
)
from gateway.settings import Secret, SourceSettings
from gateway.sources.coerce import decimal_or_none, int_or_none, known_currency

MAX_EVENTS: Final = 1000
MAX_AGE_S: Final = 7 * 24 * 3600
CLOCK_SKEW_S: Final = 300
"""A backend clock may run this far ahead of ours before an event counts as from the future."""


class ServerSettings(SourceSettings):
    """`sources.server`."""

    api_keys: tuple[Secret, ...] = Field(min_length=1)


class EventError(ValueError):
    """One event is invalid; the message starts with the field path."""


def authorized(header: str | None, keys: Sequence[SecretStr]) -> bool:
    """`Authorization: Bearer <key>` against every configured key, each in constant time."""
    if not header or not header.startswith("Bearer "):
        return False
    given = header[len("Bearer ") :].strip().encode()
    if not given:
        return False
    matched = False
    for key in keys:
        # No early exit: the time taken does not say which key (or how much of one) matched.
        matched |= hmac.compare_digest(given, key.get_secret_value().encode())
    return matched


@dataclass(frozen=True, slots=True)
class Batch:
    """A request body split into valid events and per-index rejections."""

    events: list[tuple[int, Event]]
    rejected: list[dict[str, Any]]


class BodyError(ValueError):
    """The body as a whole is unusable (answered with 400)."""


def parse_body(body: bytes, received_at: float, identifiers: Collection[str]) -> Batch:
    """`{"events": [...]}` into valid events and rejections; BodyError for a bad shape.

    `identifiers`: the vendor IDs `user` may carry besides the typed fields (the registry's
    `gateway.destinations.IDENTIFIERS`, handed in by the server API's handler)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError("body is not JSON") from exc
    if not isinstance(document, dict):
        raise BodyError("body must be a JSON object")
    raw_events = document.get("events")
    if not isinstance(raw_events, list):
        raise BodyError("events: required, a list of canonical events")
    if len(raw_events) > MAX_EVENTS:
        raise BodyError(f"events: at most {MAX_EVENTS} per request, got {len(raw_events)}")
    unknown = sorted(set(document) - {"events"})
    if unknown:
        raise BodyError(f"{unknown[0]}: unknown key")
    events: list[tuple[int, Event]] = []
    rejected: list[dict[str, Any]] = []
    for index, raw in enumerate(raw_events):
        try:
            events.append((index, parse_event(raw, received_at, identifiers)))
        except EventError as exc:
            rejected.append({"index": index, "error": str(exc)})
    return Batch(events, rejected)


_EVENT_KEYS: Final = frozenset(
    {
        "event_id",
        "event_name",
        "event_time",
        "action_source",
        "event_source_url",
        "referrer",
        "user",
        "custom",
        "consent",
    }
)


def _text(raw: object, path: str, *, required: bool = False, limit: int = 2048) -> str | None:
    if raw is None:
        if required:
            raise EventError(f"{path}: required")
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise EventError(f"{path}: must be a string")
    text = str(raw).strip()
    if not text:
        if required:
            raise EventError(f"{path}: required")
        return None
    if len(text) > limit:
        raise EventError(f"{path}: longer than {limit} characters")
    return text


def _object(raw: object, path: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise EventError(f"{path}: must be an object")
    return raw


def _currency(raw: object) -> str | None:
    code = _text(raw, "custom.currency", limit=8)
    if code is None:
        return None
    if not known_currency(code):
        raise EventError(f"custom.currency: unknown currency '{code}'")
    return code.upper()


def _value(raw: object) -> Decimal | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise EventError("custom.value: must be a decimal number")
    value = decimal_or_none(raw)
    if value is None:
        raise EventError(f"custom.value: not a decimal number: {str(raw)[:40]!r}")
    if value < 0:
        raise EventError("custom.value: must not be negative")
    return value


def _contents(raw: object) -> tuple[Content, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise EventError("custom.contents: must be a list")
    items = []
    for i, entry in enumerate(raw):
        path = f"custom.contents[{i}]"
        entry = _object(entry, path)
        unknown = set(entry) - {"id", "quantity", "item_price", "name", "category", "brand"}
        if unknown:
            raise EventError(f"{path}.{sorted(unknown)[0]}: unknown field")
        quantity = entry.get("quantity")
        if quantity is not None and (int_or_none(quantity) is None or isinstance(quantity, bool)):
            raise EventError(f"{path}.quantity: must be an integer")
        price = entry.get("item_price")
        if price is not None and decimal_or_none(price) is None:
            raise EventError(f"{path}.item_price: not a decimal number")
        items.append(
            Content(
                id=_text(entry.get("id"), f"{path}.id", required=True, limit=256) or "",
                quantity=int_or_none(quantity),
                item_price=decimal_or_none(price),
                name=_text(entry.get("name"), f"{path}.name"),
                category=_text(entry.get("category"), f"{path}.category"),
                brand=_text(entry.get("brand"), f"{path}.brand"),
            )
        )
    return tuple(items)


def _custom(raw: object) -> Custom:
    custom = _object(raw, "custom")
    value = _value(custom.get("value"))
    currency = _currency(custom.get("currency"))
    if value is not None and currency is None:
        raise EventError("custom.currency: required when custom.value is given")
    content_ids = custom.get("content_ids")
    if content_ids is not None and not isinstance(content_ids, list):
        raise EventError("custom.content_ids: must be a list")
    num_items = custom.get("num_items")
    if num_items is not None and int_or_none(num_items) is None:
        raise EventError("custom.num_items: must be an integer")
    return Custom(
        value=value,
        currency=currency,
        order_id=_text(custom.get("order_id"), "custom.order_id", limit=256),
        contents=_contents(custom.get("contents")),
        content_ids=tuple(str(i) for i in content_ids or () if i is not None),
        content_type=_text(custom.get("content_type"), "custom.content_type"),
        content_name=_text(custom.get("content_name"), "custom.content_name"),
        content_category=_text(custom.get("content_category"), "custom.content_category"),
        num_items=int_or_none(num_items),
        search_string=_text(custom.get("search_string"), "custom.search_string"),
        page_title=_text(custom.get("page_title"), "custom.page_title"),
        extra={k: v for k, v in custom.items() if k not in CUSTOM_FIELDS and v is not None},
    )


def _user(raw: object, identifiers: Collection[str]) -> User:
    user = _object(raw, "user")
    unknown = sorted(set(user) - set(USER_FIELDS) - set(identifiers))
    if unknown:
        raise EventError(f"user.{unknown[0]}: unknown field")
    values = {k: _text(v, f"user.{k}") for k, v in user.items()}
    typed = {k: v for k, v in values.items() if k in USER_FIELDS}
    ids = {k: v for k, v in values.items() if k not in USER_FIELDS and v is not None}
    return User(**typed, ids=ids)


def _consent(raw: object) -> Consent:
    consent = _object(raw, "consent")
    states: dict[str, ConsentState] = {}
    for key, value in consent.items():
        if key not in PURPOSES:
            raise EventError(f"consent.{key}: unknown purpose")
        if value not in ("granted", "denied"):
            raise EventError(f"consent.{key}: must be 'granted' or 'denied'")
        states[key] = ConsentState(value)
    return Consent(**states, basis=dict.fromkeys(states, "server"))


def parse_event(raw: object, received_at: float, identifiers: Collection[str]) -> Event:
    """One canonical event from JSON, or EventError naming the field (`identifiers`: as in
    `parse_body`)."""
    event = _object(raw, "event")
    unknown = sorted(set(event) - _EVENT_KEYS)
    if unknown:
        raise EventError(f"{unknown[0]}: unknown field")
    event_id = _text(event.get("event_id"), "event_id", required=True, limit=256) or ""
    raw_name = _text(event.get("event_name"), "event_name", required=True, limit=100) or ""
    event_name = names.any_to_canonical(raw_name)
    raw_time = event.get("event_time")
    if raw_time is None:
        event_time = int(received_at)
    else:
        if isinstance(raw_time, bool) or not isinstance(raw_time, int | float | str):
            raise EventError("event_time: must be Unix seconds")
        parsed_time = int_or_none(raw_time)
        if parsed_time is None:
            raise EventError("event_time: must be Unix seconds")
        event_time = parsed_time
    if event_time > received_at + CLOCK_SKEW_S:
        raise EventError("event_time: in the future")
    if event_time < received_at - MAX_AGE_S:
        raise EventError("event_time: more than 7 days in the past")
    action_source = _text(event.get("action_source"), "action_source") or "website"
    if action_source not in ACTION_SOURCES:
        raise EventError(f"action_source: must be one of {', '.join(sorted(ACTION_SOURCES))}")
    url = _text(event.get("event_source_url"), "event_source_url", limit=4096)
    if action_source == "website" and url is None:
        raise EventError("event_source_url: required when action_source is website")
    return Event(
        event_id=event_id,
        event_name=event_name,
        event_time=event_time,
        source="server",
        action_source=action_source,
        event_source_url=url,
        referrer=_text(event.get("referrer"), "referrer", limit=4096),
        user=_user(event.get("user"), identifiers),
        custom=_custom(event.get("custom")),
        consent=_consent(event.get("consent")),
        received_at=received_at,
        dedupable=True,
    )


class ServerSource:
    """`POST /v1/events`: not a browser tag, so it answers in the contract's own terms."""

    name: ClassVar[str] = "server"
    vendor: ClassVar[str | None] = None
    settings_model: ClassVar[type[SourceSettings]] = ServerSettings
    default_path: ClassVar[str] = "/v1/events"

    def __init__(self, settings: SourceSettings) -> None:
        assert isinstance(settings, ServerSettings)
        self.settings = settings

    @property
    def base_path(self) -> str:
        """The configured path, or `/v1/events`."""
        return self.settings.path or self.default_path

    def routes(self) -> Sequence[tuple[str, str]]:
        """One route: POST on the base path."""
        return [("POST", self.base_path)]
