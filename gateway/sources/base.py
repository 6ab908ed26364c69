"""What every source is: routes, a pure parser from a hit to canonical events, and an answer."""

from __future__ import annotations

import base64
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Final

from aiohttp import web
from multidict import MultiMapping

from gateway.event import Event
from gateway.frozen import fast_init
from gateway.settings import SourceSettings

GIF: Final = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
"""The 1×1 transparent GIF the pixels (Meta's, TikTok's no-script image) answer image hits with."""

# gtag's `_ga` cookie on the shop's registrable domain: `GA1.<domain depth>.<random>.<first-seen
# unix s>`; the client ID (`cid`) is its last two parts.
_GA_COOKIE: Final = re.compile(r"GA1\.\d{1,2}\.(\d{1,20}\.\d{1,20})")


def client_id_from_cookie(cookies: Mapping[str, str]) -> str | None:
    """The GA4 client ID in a request's `_ga` cookie, so another tag's hit (a Meta or TikTok
    pixel's, on the same domain) joins the browser's own GA4 user; None without one."""
    match = _GA_COOKIE.fullmatch(cookies.get("_ga", "").strip())
    return match[1] if match else None


class Outcome(StrEnum):
    """How a hit was taken, for metrics and the hit log line."""

    OK = "ok"
    IGNORED = "ignored"  # not an event (a telemetry beacon, a sandbox registration)
    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    TOO_SLOW = "too_slow"  # the body did not arrive within listen.body_timeout_s
    STORE_ERROR = "store_error"


@fast_init
@dataclass(frozen=True, slots=True)
class Hit:
    """A browser request, reduced to what parsers read. Built once per request by the app."""

    method: str
    path: str
    query: MultiMapping[str]
    query_string: str
    body: bytes
    content_type: str | None
    cookies: Mapping[str, str]
    client_ip: str | None
    user_agent: str | None
    received_at: float
    referer: str | None = None
    gpc: bool = False
    """`Sec-GPC: 1` came; `gateway/ingest/signals.py` makes it a consent signal, not the source."""
    accept_language: str | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class Parsed:
    """What a parser made of a hit."""

    events: Sequence[Event] = ()
    outcome: Outcome = Outcome.OK
    reason: str | None = None
    notes: Mapping[str, str] = field(default_factory=dict)
    """Non-personal facts worth a log field (pixel id, transport, agent)."""
    carried: Mapping[str, str] = field(default_factory=dict)
    """First-party IDs the tag itself sent (`User` field → value: `fbp`, `fbc`, `ttp`), as
    opposed to cookies or IDs derived here: they win over anything the gateway would mint."""


class Source(ABC):
    """A browser tag's endpoint. Subclasses know one vendor's hit format and nothing else."""

    name: ClassVar[str]
    vendor: ClassVar[str | None]
    """The vendor whose destinations may read this source's extras (`Event.meta`...) and hits."""
    settings_model: ClassVar[type[SourceSettings]] = SourceSettings
    default_path: ClassVar[str]
    user_keys: ClassVar[Mapping[str, str]] = {}
    """The tag's own names for canonical user fields (Meta's `ud[em]` → `em`: `email`), which
    `forward` hashes and a preview masks as the source reads them."""
    personal_params: ClassVar[frozenset[str]] = frozenset()
    """The hit's query or form parameters that hold a person, hashed or not (a preview masks
    a plain one)."""

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings

    @property
    def base_path(self) -> str:
        """The configured base path, or the vendor's default."""
        return self.settings.path or self.default_path

    @abstractmethod
    def routes(self) -> Sequence[tuple[str, str]]:
        """(method, path) pairs this source answers."""

    @abstractmethod
    def parse(self, hit: Hit) -> Parsed:
        """Turn one hit into canonical events. Pure; may raise on garbage (the app catches)."""

    @abstractmethod
    def answer(self, hit: Hit | None) -> web.Response:
        """The vendor's normal answer, whatever became of the hit."""
