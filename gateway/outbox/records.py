"""The outbox's records: what callers hand in, what they get back, and the states of a delivery.

They belong to the interface (`interface.Storage`), not to a backend: the pipeline, the delivery
worker, the operator views and the commands import them from `gateway.outbox` alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, NamedTuple

from gateway.frozen import fast_init

DEDUP_WINDOW_S: Final = 48 * 3600
"""A live delivery blocks a later copy of its event for this long (docs/operations.md §5)."""


class Status(StrEnum):
    """A delivery row's state (docs/operations.md §5); each carries what it means as data."""

    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"  # last attempt failed; another is scheduled
    DEAD = "dead"
    DUPLICATE = "duplicate"
    DROPPED_CONSENT = "dropped_consent"
    DROPPED_RULE = "dropped_rule"

    @property
    def pending(self) -> bool:
        """A worker will still try to send it."""
        return _TRAITS[self].pending

    @property
    def final(self) -> bool:
        """Nothing will happen to it any more (but a replay); prune may delete it."""
        return not _TRAITS[self].pending

    @property
    def blocks_dedup(self) -> bool:
        """A later copy of its event (same destination, name and id) is a duplicate of it."""
        return _TRAITS[self].blocks_dedup


@dataclass(frozen=True, slots=True)
class _Traits:
    pending: bool
    blocks_dedup: bool


_TRAITS: Final = {
    Status.QUEUED: _Traits(pending=True, blocks_dedup=True),
    Status.SENT: _Traits(pending=False, blocks_dedup=True),
    Status.FAILED: _Traits(pending=True, blocks_dedup=True),
    Status.DEAD: _Traits(pending=False, blocks_dedup=False),
    Status.DUPLICATE: _Traits(pending=False, blocks_dedup=False),
    Status.DROPPED_CONSENT: _Traits(pending=False, blocks_dedup=False),
    Status.DROPPED_RULE: _Traits(pending=False, blocks_dedup=False),
}

PENDING: Final = tuple(s for s in Status if s.pending)
"""The states a worker claims from: queued and failed."""
FINAL: Final = tuple(s for s in Status if s.final)
BLOCKS_DEDUP: Final = tuple(s for s in Status if s.blocks_dedup)
"""A delivery in one of these states blocks a later copy of the same event (dedup)."""

REPLAY_REASONS: Final = {
    "in_flight": "in flight (a worker is sending it)",
    "later_copy": "a later copy of the event is queued or was sent within 48 hours",
    "older_copy": "an older row of an event whose newest row was re-queued",
    "too_old": "past the platform's age limit (it would be refused)",
    "no_payload": "no payload kept",
}
"""Why `replay` leaves a row, as `replay_leftovers` counts them."""


# --- what goes in ------------------------------------------------------------------------------


@fast_init
@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A delivery row to create with its event."""

    destination: str
    status: Status
    payload: bytes | None = None
    message: str | None = None
    event_name: str | None = None
    """The name this destination knows the event by, when a rule renamed it."""


@fast_init
@dataclass(frozen=True, slots=True)
class NewTouch:
    """One visitor key of an event, for attribution: a touch when `channel` is set."""

    visitor: str
    """The key's HMAC (`attribution.visitor_keys`)."""
    channel: str | None = None
    campaign: str | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event row and its delivery rows, as the pipeline hands them to the outbox."""

    event_id: str
    event_name: str
    source: str
    event_time: int
    received_at: float
    dedupable: bool
    match_keys: int
    deliveries: Sequence[NewDelivery]
    value: str | None = None
    currency: str | None = None
    consent: str | None = None
    touches: Sequence[NewTouch] = ()


@dataclass(frozen=True, slots=True)
class Finished:
    """The outcome of one attempt, written back to the delivery row."""

    id: int
    status: Status
    attempts: int
    next_attempt_at: float
    http_status: int | None
    message: str
    latency_ms: float | None
    first_attempt_at: float
    erase_payload: bool


Lease = tuple[int, float]
"""A delivery row id and the `leased_until` its holder last wrote."""


# --- what comes out ----------------------------------------------------------------------------


@fast_init
@dataclass(frozen=True, slots=True)
class Added:
    """What became of one added event: its row id and how many deliveries were duplicates."""

    row: int
    queued: int
    duplicates: int
    statuses: tuple[tuple[str, str], ...] = ()
    """(destination, status) of each delivery row as written."""
    deliveries: tuple[tuple[int, int | None], ...] = ()
    """(delivery id, the delivery it duplicates) of each row, in the order of `statuses`."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A due delivery leased to a worker."""

    id: int
    payload: bytes | None
    attempts: int
    event_time: int
    first_attempt_at: float | None
    leased_until: float = 0.0
    """The lease as written by this claim: the token that says the row is still this
    worker's when it extends or returns the lease."""


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """One row of the delivery log as `tag-gateway deliveries` shows it."""

    id: int
    event_id: str
    event_name: str
    destination: str
    status: str
    attempts: int
    http_status: int | None
    message: str | None
    latency_ms: float | None
    created_at: float
    updated_at: float
    next_attempt_at: float
    duplicate_of: int | None
    source: str
    payload: bytes | None


# Report rows are named tuples: read by name, and still equal to the plain rows they replace.


class WindowRow(NamedTuple):
    """The report's counts for one destination and event name (`Storage.window`)."""

    destination: str
    event_name: str
    total: int
    sent: int
    duplicate: int
    dropped_consent: int
    dropped_rule: int
    dead: int
    pending: int
    dedupable: int
    email: int
    """Events carrying each match key, one count per bit (pipeline.MATCH_KEYS order)."""
    phone: int
    external_id: int
    fbp: int
    fbc: int
    ip_ua: int

    @property
    def counts(self) -> tuple[int, ...]:
        """total, sent, duplicate, dropped_consent, dropped_rule, dead, pending (report.COUNTS)."""
        return tuple(self[2:9])

    @property
    def keys(self) -> tuple[int, ...]:
        """One count per match key, in pipeline.MATCH_KEYS order."""
        return tuple(self[10:16])


MATCH_KEY_BITS: Final = 6
"""How many match-key counts a WindowRow carries."""


class ValueRow(NamedTuple):
    """The value sum of sent deliveries of one destination, event name and currency."""

    destination: str
    event_name: str
    currency: str | None
    total: float | None


class OverlapRow(NamedTuple):
    """Pixel and server copies of one event name: `kind` is backend, browser or both."""

    event_name: str
    kind: str
    copies: int
    median_lag_s: float | None


class HourlyRow(NamedTuple):
    """Deliveries of one hour, destination and status (the admin page's chart)."""

    hour: float
    destination: str
    status: str
    deliveries: int


class ConversionRow(NamedTuple):
    """One copy of a conversion event (attribution)."""

    event_id: str
    value: str | None
    currency: str | None


class CreditRow(NamedTuple):
    """The touch a conversion is credited to."""

    event_id: str
    channel: str
    campaign: str
    """A touch always has a campaign (attribution.NO_CAMPAIGN when the URL names none)."""


class TouchCountRow(NamedTuple):
    """Touches per channel and campaign in a window."""

    channel: str
    campaign: str
    touches: int


class AttributionRows(NamedTuple):
    """What `Storage.attribution` reads: conversions, credits and touch counts."""

    conversions: list[ConversionRow]
    credits: list[CreditRow]
    touches: list[TouchCountRow]


# --- health and errors -------------------------------------------------------------------------


@dataclass(slots=True)
class WriteHealth:
    """Whether the last write transaction committed, for /readyz: a failed one makes the
    gateway unready at once, the next good one ready again."""

    failed_at: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """The last write committed."""
        return self.failed_at is None

    def failed(self, exc: BaseException) -> None:
        """Record a failed write (keeping when the failures began)."""
        if self.failed_at is None:
            self.failed_at = time.time()
        self.error = type(exc).__name__

    def succeeded(self) -> None:
        """Record a committed write."""
        self.failed_at = self.error = None


class StoreClosed(RuntimeError):
    """The outbox is stopping or stopped; nothing more is accepted."""


class StoreLocked(RuntimeError):
    """Another `serve` process holds this SQLite file."""


@dataclass(frozen=True, slots=True)
class DeliveryQuery:
    """Filters for reading or replaying the delivery log (rendered by `where.render`)."""

    statuses: Sequence[str] = ()
    destination: str | None = None
    event_id: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100
    oldest: tuple[tuple[str, int], ...] = ()
    """(destination, oldest event_time) pairs: rows of an older event are left out. `replay`
    sets it from each platform's age limit, past which a send is refused whole."""
