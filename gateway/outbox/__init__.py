"""The outbox and delivery log: the one face the rest of the gateway imports.

Events are immutable rows; each (event, destination) pair has one delivery row carrying its
state. `add` returns only after COMMIT, a group of callers in one transaction. The records and
the interface (`Storage`) are the outbox's own; two backends implement it, `SqliteOutbox` (the
default: `storage.path`) and `PostgresOutbox` (several replicas: `storage.url`), and
`open_outbox` opens the configured one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.outbox.interface import Storage
from gateway.outbox.records import (
    BLOCKS_DEDUP,
    DEDUP_WINDOW_S,
    FINAL,
    PENDING,
    REPLAY_REASONS,
    Added,
    AttributionRows,
    Claimed,
    ConversionRow,
    CreditRow,
    DeliveryQuery,
    DeliveryRow,
    Finished,
    HourlyRow,
    Lease,
    NewDelivery,
    NewEvent,
    NewTouch,
    OverlapRow,
    Status,
    StoreClosed,
    StoreLocked,
    TouchCountRow,
    ValueRow,
    WindowRow,
    WriteHealth,
)
from gateway.outbox.sqlite import SCHEMA as SQLITE_SCHEMA
from gateway.outbox.sqlite import SqliteOutbox

if TYPE_CHECKING:
    from gateway.outbox.postgres import PostgresOutbox

__all__ = [
    "BLOCKS_DEDUP",
    "DEDUP_WINDOW_S",
    "FINAL",
    "PENDING",
    "REPLAY_REASONS",
    "SQLITE_SCHEMA",
    "Added",
    "AttributionRows",
    "Claimed",
    "ConversionRow",
    "CreditRow",
    "DeliveryQuery",
    "DeliveryRow",
    "Finished",
    "HourlyRow",
    "Lease",
    "NewDelivery",
    "NewEvent",
    "NewTouch",
    "OverlapRow",
    "PostgresOutbox",
    "SqliteOutbox",
    "Status",
    "Storage",
    "StoreClosed",
    "StoreLocked",
    "TouchCountRow",
    "ValueRow",
    "WindowRow",
    "WriteHealth",
    "open_outbox",
]


async def open_outbox(
    path: str, url: str | None, synchronous: str, *, exclusive: bool = False
) -> Storage:
    """The configured backend: PostgreSQL when `url` is set, else the SQLite file at `path`
    (`exclusive`: held by this process alone, as `serve` holds it; PostgreSQL is shared)."""
    if url:
        from gateway.outbox.postgres import PostgresOutbox

        return await PostgresOutbox.open(url, synchronous)
    return await SqliteOutbox.open(path, synchronous, exclusive=exclusive)


def __getattr__(name: str) -> Any:
    # asyncpg takes about 90 ms to import: only a PostgreSQL gateway (or a test) pays for it.
    if name == "PostgresOutbox":
        from gateway.outbox.postgres import PostgresOutbox

        return PostgresOutbox
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
