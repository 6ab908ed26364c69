"""What both backends do the same way, written once on top of the group commit: the worker's
claim and finish, retention, and every read (the delivery log, replay's leftovers, queue
stats, the reports). A backend supplies a transaction (`_transact`), a read (`_read`) and its
`Statements`; what it does differently stays in its own folder.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from gateway.outbox.group import GroupCommit
from gateway.outbox.records import (
    DEDUP_WINDOW_S,
    AttributionRows,
    Claimed,
    ConversionRow,
    CreditRow,
    DeliveryQuery,
    DeliveryRow,
    Finished,
    HourlyRow,
    OverlapRow,
    TouchCountRow,
    ValueRow,
    WindowRow,
)
from gateway.outbox.statements import Statements

T = TypeVar("T")
Row = Sequence[Any]


class Tx(Protocol):
    """One transaction's statements, in the backend's placeholders."""

    async def execute(self, sql: str, *params: Any) -> int:
        """Run a statement; the rows it changed."""

    async def fetch(self, sql: str, *params: Any) -> list[Row]:
        """Run a statement; the rows it returned."""

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run a statement once per row of parameters."""


class OutboxBase(GroupCommit):
    """The shared half of an outbox; `SqliteOutbox` and `PostgresOutbox` are the others."""

    sql: Statements

    async def _transact(self, fn: Callable[[Tx], Awaitable[T]], *, one_statement: bool) -> T:
        """Run `fn` in a transaction; its result after COMMIT (`one_statement`: `fn` runs a
        single statement, which needs no transaction of its own where that costs)."""
        raise NotImplementedError

    async def _read(self, sql: str, *params: Any) -> list[Row]:
        """Run a read-only statement outside the writer."""
        raise NotImplementedError

    # --- the delivery worker ---------------------------------------------------------------

    async def claim(
        self, destination: str, limit: int, lease_s: float, now: float | None = None
    ) -> list[Claimed]:
        """Lease up to `limit` due deliveries of one destination, oldest due first."""
        self._check_open()
        at = time.time() if now is None else now

        async def run(tx: Tx) -> list[Row]:
            return await tx.fetch(self.sql.claim, at + lease_s, destination, at, limit)

        rows = await self._transact(run, one_statement=True)
        return sorted((Claimed(*row) for row in rows), key=lambda c: c.id)

    async def finish(self, outcomes: Sequence[Finished], now: float | None = None) -> None:
        """Write attempt outcomes back and release their leases."""
        if not outcomes:
            return
        self._check_open()
        at = time.time() if now is None else now
        rows = [
            (
                str(o.status),
                o.attempts,
                o.next_attempt_at,
                o.http_status,
                o.message[:1000],
                o.latency_ms,
                o.first_attempt_at,
                at,
                o.erase_payload,
                o.id,
            )
            for o in outcomes
        ]

        async def run(tx: Tx) -> None:
            await tx.executemany(self.sql.finish, rows)

        await self._transact(run, one_statement=True)

    async def next_due(self, destination: str) -> float | None:
        """When the earliest pending delivery of a destination is due, or None if none is."""
        rows = await self._read(self.sql.next_due, destination)
        due = rows[0][0] if rows else None
        return None if due is None else float(due)

    # --- retention -------------------------------------------------------------------------

    async def prune(self, older_than: float, batch: int = 500) -> int:
        """Delete up to `batch` final delivery rows created before `older_than`, events left
        with no delivery, and touches; returns how many delivery and touch rows went. Small
        batches, so each is one short transaction among the hits'."""
        self._check_open()

        async def run(tx: Tx) -> int:
            deleted = await self._prune_deliveries(tx, older_than, batch)
            await tx.execute(self.sql.prune_events, older_than, batch)
            return deleted + await tx.execute(self.sql.prune_touches, older_than, batch)

        return await self._transact(run, one_statement=False)

    async def _prune_deliveries(self, tx: Tx, older_than: float, batch: int) -> int:
        """Delete one batch of `sql.prunable_deliveries`; how many went."""
        raise NotImplementedError

    # --- the operator's reads ----------------------------------------------------------------

    async def deliveries(self, query: DeliveryQuery) -> list[DeliveryRow]:
        """Delivery-log rows, newest first."""
        bound = self.sql.deliveries(query)
        return [DeliveryRow(*row) for row in await self._read(bound.sql, *bound.values)]

    async def replay_leftovers(
        self, query: DeliveryQuery, now: float | None = None
    ) -> dict[str, int]:
        """Before `requeue(query)`: the rows it matches and why each would be left, as counts
        by reason (REPLAY_REASONS); `candidate` rows are those it may take (of several of one
        event, it takes only the newest)."""
        at = time.time() if now is None else now
        bound = self.sql.replay_leftovers(query, at, at - DEDUP_WINDOW_S)
        return {str(r[0]): int(r[1]) for r in await self._read(bound.sql, *bound.values)}

    async def queue_stats(self) -> dict[str, tuple[int, float | None]]:
        """Per destination: pending deliveries and when the oldest of them was created."""
        return {r[0]: (int(r[1]), r[2]) for r in await self._read(self.sql.queue_stats)}

    # --- reports -----------------------------------------------------------------------------

    async def window(self, since: float, until: float) -> list[WindowRow]:
        """Per destination and event name, the report's counts for events received in
        [since, until) (see WindowRow)."""
        return [WindowRow(*row) for row in await self._read(self.sql.window, since, until)]

    async def values(self, since: float, until: float) -> list[ValueRow]:
        """Per destination, event name and currency: the value sum of sent deliveries."""
        return [ValueRow(*row) for row in await self._read(self.sql.values, since, until)]

    async def overlap(self, since: float, until: float) -> list[OverlapRow]:
        """Pixel and server copies per event name (docs/operations.md §6)."""
        rows = await self._read(self.sql.overlap, since, until, float(DEDUP_WINDOW_S))
        return [
            OverlapRow(r[0], r[1], int(r[2]), None if r[3] is None else float(r[3])) for r in rows
        ]

    async def hourly(self, since: float, until: float) -> list[HourlyRow]:
        """Deliveries per hour, destination and status, for the admin page's chart."""
        return [HourlyRow(*row) for row in await self._read(self.sql.hourly, since, until)]

    async def attribution(
        self, event: str, since: float, until: float, window_s: float, first: bool
    ) -> AttributionRows:
        """docs/operations.md §6: the copies of `event` received in [since, until) (first copy
        first), the touch each is credited to, and touches per channel and campaign."""
        direction = 1.0 if first else -1.0
        conversions = await self._read(self.sql.conversions, event, since, until)
        credits = await self._read(
            self.sql.credits, event, since, until, float(window_s), direction
        )
        touches = await self._read(self.sql.touches, since, until)
        return AttributionRows(
            [ConversionRow(*r) for r in conversions],
            [CreditRow(*r) for r in credits],
            [TouchCountRow(r[0], r[1], int(r[2])) for r in touches],
        )
