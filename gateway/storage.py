"""The storage interface the gateway codes against, and opening the configured backend.

Two implementations: `store.Store` (SQLite, the default: `storage.path`) and
`store_pg.PgStore` (PostgreSQL, for several replicas: `storage.url`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from gateway.store import (
    Added,
    Claimed,
    DeliveryQuery,
    DeliveryRow,
    Finished,
    Lease,
    NewEvent,
    WriteHealth,
)


class Storage(Protocol):
    """The outbox and the delivery log."""

    on_queued: Callable[[Iterable[str]], None]
    write_health: WriteHealth
    """The outcome of the last write transaction (for /readyz)."""
    visitor_secret: bytes
    """The HMAC key of attribution's visitor keys: made once, shared by every replica."""

    async def close(self) -> None:
        """Finish queued writes and close."""

    async def ping(self) -> None:
        """Raise unless storage takes writes."""

    async def add(self, events: Sequence[NewEvent]) -> list[Added]:
        """Store events and their deliveries; return after COMMIT."""

    async def claim(
        self, destination: str, limit: int, lease_s: float, now: float | None = None
    ) -> list[Claimed]:
        """Lease due deliveries of one destination."""

    async def finish(self, outcomes: Sequence[Finished], now: float | None = None) -> None:
        """Write attempt outcomes back."""

    async def extend_leases(self, leases: Sequence[Lease], until: float) -> list[int]:
        """Extend leases still held as written; the ids extended."""

    async def return_leases(self, leases: Sequence[Lease]) -> int:
        """Give held rows back to the queue unsent."""

    async def prune(self, older_than: float, batch: int = 500) -> int:
        """Delete old final rows in a small batch."""

    async def release_leases(self) -> int:
        """On boot: give back what this process had in flight."""

    async def requeue(self, query: DeliveryQuery, now: float | None = None) -> int:
        """Re-queue dead or failed deliveries."""

    async def replay_leftovers(
        self, query: DeliveryQuery, now: float | None = None
    ) -> dict[str, int]:
        """Why `requeue(query)` would leave each row it matches, counted by reason."""

    async def next_due(self, destination: str) -> float | None:
        """When the next pending delivery is due."""

    async def deliveries(self, query: DeliveryQuery) -> list[DeliveryRow]:
        """Delivery-log rows, newest first."""

    async def queue_stats(self) -> dict[str, tuple[int, float | None]]:
        """Pending count and oldest creation time per destination."""

    async def window(self, since: float, until: float) -> list[tuple[Any, ...]]:
        """The report's counts for a window."""

    async def values(self, since: float, until: float) -> list[tuple[Any, ...]]:
        """Value sums for a window."""

    async def attribution(
        self, event: str, since: float, until: float, window_s: float, first: bool
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Conversions, their credited touches, and touch counts (docs/operations.md §6)."""

    async def overlap(self, since: float, until: float) -> list[tuple[Any, ...]]:
        """Pixel and server copies of each event name (docs/operations.md §6)."""

    async def hourly(self, since: float, until: float) -> list[tuple[Any, ...]]:
        """Deliveries per hour, destination and status."""


async def open_storage(
    path: str, url: str | None, synchronous: str, *, exclusive: bool = False
) -> Storage:
    """The configured backend: PostgreSQL when `url` is set, else the SQLite file at `path`
    (`exclusive`: held by this process alone, as `serve` holds it; PostgreSQL is shared)."""
    if url:
        from gateway.store_pg import PgStore

        return await PgStore.open(url, synchronous)
    from gateway.store import Store

    return await Store.open(path, synchronous, exclusive=exclusive)
