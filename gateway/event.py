"""The canonical event: the one shape every source produces and every destination reads.

Raw personal data lives only in these in-memory records; what reaches the disk is what each
destination's `prepare` made of them (normalized and hashed).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final, TypeVar

from gateway.frozen import fast_init

JSON = Any
"""A value orjson can serialize (str, int, float, bool, None, list, dict)."""

PURPOSES: Final = ("ad_storage", "analytics_storage", "ad_user_data", "ad_personalization")

ACTION_SOURCES: Final = frozenset(
    {
        "email",
        "website",
        "app",
        "phone_call",
        "chat",
        "physical_store",
        "system_generated",
        "business_messaging",
        "other",
    }
)

# Fields that identify a person and are hashed before anything is stored
# (docs/http.md §4, docs/operations.md §5).
HASHED_USER_FIELDS: Final = (
    "email",
    "phone",
    "first_name",
    "last_name",
    "gender",
    "date_of_birth",
    "city",
    "state",
    "zip",
    "country",
    "external_id",
)
# What every event may say about the request, sent as it is, never hashed.
CLEAR_USER_FIELDS: Final = ("client_ip", "user_agent")
USER_FIELDS: Final = HASHED_USER_FIELDS + CLEAR_USER_FIELDS
"""The typed `User` fields. The server API takes these and every vendor identifier
(`gateway.destinations.IDENTIFIERS`) as `user.<field>`."""


class ConsentState(StrEnum):
    """One purpose's resolved state."""

    GRANTED = "granted"
    DENIED = "denied"


@fast_init
@dataclass(frozen=True, slots=True)
class User:
    """Who the event is about. Hashed fields may arrive raw or already hashed (64 hex)."""

    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    gender: str | None = None
    date_of_birth: str | None = None
    city: str | None = None
    state: str | None = None
    zip: str | None = None
    country: str | None = None
    external_id: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    ids: Mapping[str, str] = field(default_factory=dict)
    """Vendor identifiers by their canonical field name (`fbp`, `ttclid`, `epik`), sent as they
    are, never hashed. Each vendor's destination declares its own (`Destination.identifiers`);
    in the canonical JSON they stand beside the other fields (`user.epik`)."""


@fast_init
@dataclass(frozen=True, slots=True)
class Content:
    """One line item (`custom.contents[]`)."""

    id: str
    quantity: int | None = None
    item_price: Decimal | None = None
    name: str | None = None
    category: str | None = None
    brand: str | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class Custom:
    """Business data. Known keys are typed; anything else rides in `extra` unchanged."""

    value: Decimal | None = None
    currency: str | None = None
    order_id: str | None = None
    contents: tuple[Content, ...] = ()
    content_ids: tuple[str, ...] = ()
    content_type: str | None = None
    content_name: str | None = None
    content_category: str | None = None
    num_items: int | None = None
    search_string: str | None = None
    page_title: str | None = None
    extra: Mapping[str, JSON] = field(default_factory=dict)


CUSTOM_FIELDS: Final = frozenset(f.name for f in fields(Custom)) - {"extra"}
"""The typed `custom` fields; any other key of a canonical `custom` lives in `extra`."""


@fast_init
@dataclass(frozen=True, slots=True)
class Consent:
    """The four purposes of docs/consent.md §7, each resolved or None (no signal)."""

    ad_storage: ConsentState | None = None
    analytics_storage: ConsentState | None = None
    ad_user_data: ConsentState | None = None
    ad_personalization: ConsentState | None = None
    basis: Mapping[str, str] = field(default_factory=dict)
    """Which signal decided each purpose: `server`, `gcd`, `gcs`, `npa`, `tcf`, `default`, `gpc`."""

    def get(self, purpose: str) -> ConsentState | None:
        """The state of one purpose by name."""
        state: ConsentState | None = getattr(self, purpose)
        return state

    def granted(self, purpose: str) -> bool:
        """True only when the purpose is explicitly granted."""
        return self.get(purpose) is ConsentState.GRANTED


@fast_init
@dataclass(frozen=True, slots=True)
class RawHit:
    """The browser request as it arrived, kept only for a transparent `forward` destination."""

    vendor: str
    method: str
    path: str
    query_string: str
    body: bytes
    content_type: str | None
    accept_language: str | None = None
    """The browser's `Accept-Language`, which a forward passes on (GA4 reads the language)."""


@fast_init
@dataclass(frozen=True, slots=True)
class MetaExtras:
    """What a Meta pixel hit carries that only a Meta destination reads."""

    pixel_id: str
    dpo: str | None = None
    """Limited Data Use as the pixel sent it (`dpo`, a comma list; docs/consent.md §5)."""
    dpoco: str | None = None
    dpost: str | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class Ga4Extras:
    """What a GA4 hit carries that only a GA4 destination reads (session, engagement, user
    properties, whole items), and where in its request the event was."""

    measurement_id: str
    event_name: str
    """The name gtag sent (`en`), before it became canonical."""
    line: int = 0
    """Which event of the request this is (line `line` of `lines` of a POST body): every
    event of a hit carries the whole request in `raw`, and a forward sends it once."""
    lines: int = 1
    session_id: str | None = None
    session_count: int | None = None
    session_engaged: int | None = None
    engagement_time_msec: int | None = None
    page_load_id: str | None = None
    hit_sequence: int | None = None
    user_properties: Mapping[str, JSON] = field(default_factory=dict)
    items: tuple[Mapping[str, JSON], ...] = ()
    """The hit's own items, every item field kept, after the personal-data gate."""


@fast_init
@dataclass(frozen=True, slots=True)
class TikTokExtras:
    """What a TikTok pixel hit carries that only a TikTok destination reads."""

    event: str
    """The name as received, so the Events API copy matches the browser's (legacy names stay)."""
    pixel_code: str | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class Event:
    """One canonical event (docs/http.md §4)."""

    event_id: str
    event_name: str
    event_time: int
    source: str
    action_source: str = "website"
    event_source_url: str | None = None
    referrer: str | None = None
    user: User = field(default_factory=User)
    custom: Custom = field(default_factory=Custom)
    consent: Consent = field(default_factory=Consent)
    consent_signals: Mapping[str, str] = field(default_factory=dict)
    """Raw consent signals the hit carried (`gcs`, `gcd`, `npa`, `dma`, `dma_cps`, `gdpr`,
    `gdpr_consent`, `gpc`); the consent rules resolve them into `consent`."""
    received_at: float = field(default_factory=time.time)
    """When the gateway received it (report windows count by this)."""
    limited: bool = False
    """Consent asked for this event to go out stripped of identifiers (`on_denied: limited`)."""
    dedupable: bool = True
    """False when the source had no event ID and one was generated (the report counts these)."""
    meta: MetaExtras | None = None
    ga4: Ga4Extras | None = None
    tiktok: TikTokExtras | None = None
    """Per-vendor extras from a browser hit; only that vendor's destinations read them."""
    raw: RawHit | None = None


def ids_of(**values: str | None) -> dict[str, str]:
    """`User.ids` from the identifiers a source found, those without a value left out."""
    return {name: value for name, value in values.items() if value}


def json_number(value: Decimal | None) -> int | float | None:
    """A decimal as the JSON number platforms expect (an int when it is whole)."""
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else float(value)


def new_event_id() -> str:
    """An event ID for a hit that came without one: random, URL-safe, never reused."""
    return "tg-" + secrets.token_urlsafe(16)


_R = TypeVar("_R")
_COPIERS: dict[type, tuple[Callable[[Any, dict[str, Any]], Any], frozenset[str]]] = {}


def evolve(record: _R, /, **changes: Any) -> _R:
    """A copy of one of this module's records with `changes` applied: what
    `dataclasses.replace` makes, in about a third of its time (the hit path copies an event
    and its user a few times per hit). Every record here is frozen and slotted, with no
    `__post_init__` and no `init=False` field, so a copy is its slots: each class gets a copier
    that sets them through their descriptors, written once, as `dataclasses` writes `__init__`."""
    cls = type(record)
    known = _COPIERS.get(cls) or _copier(cls)
    if not changes.keys() <= known[1]:
        unknown = ", ".join(sorted(changes.keys() - known[1]))
        raise TypeError(f"{cls.__name__} has no field {unknown}")
    copy: _R = known[0](record, changes)
    return copy


def _copier(cls: type) -> tuple[Callable[[Any, dict[str, Any]], Any], frozenset[str]]:
    names = [f.name for f in fields(cls)]
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
    lines = ["def copy(record, changes):", "    made = new(cls)"]
    for i, name in enumerate(names):
        namespace[f"set{i}"] = getattr(cls, name).__set__
        lines.append(f"    set{i}(made, changes.get({name!r}, record.{name}))")
    lines.append("    return made")
    exec("\n".join(lines), namespace)  # noqa: S102 (names are the class's own fields)
    known = _COPIERS[cls] = (namespace["copy"], frozenset(names))
    return known
