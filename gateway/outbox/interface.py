"""The outbox interface, by role: what the ingest, the delivery workers, retention, the operator
commands and the reports each ask of it. Two backends implement it (`open_outbox` picks one);
where they differ on purpose, the method says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from gateway.outbox.records import (
    Added,
    AttributionRows,
    Claimed,
    DeliveryQuery,
    DeliveryRow,
    Finished,
    HourlyRow,
    Lease,
    NewEvent,
    OverlapRow,
    ValueRow,
    WindowRow,
    WriteHealth,
)


class Lifecycle(Protocol):
    """Opening is `open_outbox`; these are the rest of an outbox's life."""

    write_health: WriteHealth
    """The outcome of the last write transaction (for /readyz)."""
    visitor_secret: bytes
    """The HMAC key of attribution's visitor keys: made once, shared by every replica."""

    async def close(self) -> None:
        """Finish queued writes and close."""

    async def ping(self) -> None:
        """Raise unless the outbox takes writes (for /readyz).

        SQLite writes a heartbeat row (a transaction that writes nothing commits even on a full
        disk); PostgreSQL makes a round trip, which is what can fail there."""

    async def write(self, fn: Callable[[Any], Any]) -> Any:
        """Run `fn(connection)` in a transaction and return its result after COMMIT: for tests
        and tools that need a statement of their own. The connection is the backend's own.

        SQLite runs `fn` inside the single writer's next group, on the loop's thread, and holds
        the transaction while an awaitable it returns runs (tests hold the writer so); `fn` is a
        `sqlite3.Connection` caller. PostgreSQL runs it in a transaction of its own on a pooled
        asyncpg connection (it must return an awaitable), apart from the `add` groups."""


class Ingest(Protocol):
    """What the pipeline writes."""

    on_queued: Callable[[Iterable[str]], None]
    """Called after a commit with the destinations that got new queued rows (on PostgreSQL,
    this replica's only: the others find theirs when they next look)."""

    async def add(self, events: Sequence[NewEvent]) -> list[Added]:
        """Store events and their deliveries, a group of callers in one transaction; return
        after COMMIT. A later copy of a live delivery's event is written as a duplicate."""

    def add_soon(self, events: Sequence[NewEvent]) -> asyncio.Future[list[Added]]:
        """`add` without a coroutine: the events are queued at once and the future settles
        after their COMMIT (raises `StoreClosed` at once when the store is closing)."""


class Worker(Protocol):
    """What a destination's delivery worker asks."""

    async def claim(
        self, destination: str, limit: int, lease_s: float, now: float | None = None
    ) -> list[Claimed]:
        """Lease due deliveries of one destination, oldest due first (PostgreSQL skips rows
        another replica is claiming at that instant)."""

    async def finish(self, outcomes: Sequence[Finished], now: float | None = None) -> None:
        """Write attempt outcomes back and release their leases."""

    async def extend_leases(self, leases: Sequence[Lease], until: float) -> list[int]:
        """Extend leases still held as written; the ids extended."""

    async def return_leases(self, leases: Sequence[Lease]) -> int:
        """Give held rows back to the queue unsent."""

    async def next_due(self, destination: str) -> float | None:
        """When the next pending delivery is due."""

    async def release_leases(self) -> int:
        """On boot: give back what a dead process had in flight; how many.

        SQLite frees every lease (one `serve` holds the file: any lease is a dead process's).
        PostgreSQL frees only expired ones: a live lease may be another replica's, sending."""


class Retention(Protocol):
    """What the retention loop deletes."""

    async def prune(self, older_than: float, batch: int = 500) -> int:
        """Delete old final rows in a small batch; how many delivery and touch rows went."""


class Operator(Protocol):
    """What the operator commands and views read and replay."""

    async def requeue(self, query: DeliveryQuery, now: float | None = None) -> int:
        """Re-queue dead or failed deliveries (never one that would be sent twice)."""

    async def replay_leftovers(
        self, query: DeliveryQuery, now: float | None = None
    ) -> dict[str, int]:
        """Why `requeue(query)` would leave each row it matches, counted by reason."""

    async def deliveries(self, query: DeliveryQuery) -> list[DeliveryRow]:
        """Delivery-log rows, newest first."""

    async def queue_stats(self) -> dict[str, tuple[int, float | None]]:
        """Pending count and oldest creation time per destination."""


class Reports(Protocol):
    """What the release report, attribution and the admin page's chart read."""

    async def window(self, since: float, until: float) -> list[WindowRow]:
        """The report's counts for a window, by destination and event name."""

    async def values(self, since: float, until: float) -> list[ValueRow]:
        """Value sums of sent deliveries for a window."""

    async def attribution(
        self, event: str, since: float, until: float, window_s: float, first: bool
    ) -> AttributionRows:
        """Conversions, their credited touches, and touch counts (docs/operations.md §6)."""

    async def overlap(self, since: float, until: float) -> list[OverlapRow]:
        """Pixel and server copies of each event name (docs/operations.md §6)."""

    async def hourly(self, since: float, until: float) -> list[HourlyRow]:
        """Deliveries per hour, destination and status."""


class Storage(Lifecycle, Ingest, Worker, Retention, Operator, Reports, Protocol):
    """The outbox and the delivery log: every role at once, as the app holds it."""
