"""Browser hits held in memory while storage refuses writes, and written once it takes them.

A browser hit gets the vendor's answer whatever the storage does (a page must never break), so
a hit whose write failed is not dropped at once: its rows, as the pipeline prepared them
(personal data already hashed, exactly what would have been on disk), wait here while one task
retries the write with backoff. While anything is held, new hits queue behind it without trying
the storage first, so their answers do not wait for a failing write.

Bounded by `storage.outage_buffer` (a count of events and their bytes). When it is full, a new
hit is dropped (counted in `tag_gateway_outage_dropped_total`, logged as `outage.buffer_full`)
and the held ones are kept: the oldest were answered first and would be the first lost. What
is held when the process stops is written if the storage takes it by then, else logged as lost
(`outage.lost`): memory does not survive a restart. The server API never uses this: it answers
503 with Retry-After, and the backend sends again.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Final

import structlog

from gateway.metrics import Metrics
from gateway.outbox import Added, NewEvent, StoreClosed

log = structlog.get_logger("gateway.backlog")

RETRY_FIRST_S: Final = 0.25
RETRY_MAX_S: Final = 2.0
_EVENTS_PER_WRITE: Final = 500
_EVENT_BYTES: Final = 2_600
_DELIVERY_BYTES: Final = 1_100
"""What an event and each of its deliveries hold in memory beside their payloads (objects,
strings, the hit's share of the deque), so `max_bytes` bounds the process's memory, not only
payloads: bench/outage.py measured 4.3 kB of RSS per held single-destination event (20,000
held: 58 -> 156 MB) and this counts 4.2 kB for it."""


class Kept(StrEnum):
    """What became of a hit's rows."""

    STORED = "stored"
    HELD = "held"  # in memory, to be written when the storage is back
    DROPPED = "dropped"  # the buffer was full


def size_of(rows: Sequence[NewEvent]) -> int:
    """The bytes a hit's rows hold in memory, near enough."""
    return sum(
        _EVENT_BYTES
        + len(e.consent or "")
        + sum(_DELIVERY_BYTES + len(d.payload or b"") for d in e.deliveries)
        for e in rows
    )


class Backlog:
    """Writes a hit's rows, or holds them while the storage fails."""

    def __init__(
        self,
        commit: Callable[[Sequence[NewEvent]], asyncio.Future[list[Added]]],
        metrics: Metrics,
        max_events: int,
        max_bytes: int,
    ) -> None:
        self._commit = commit
        self._metrics = metrics
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._held: deque[tuple[Sequence[NewEvent], int]] = deque()
        self.events = 0
        self.bytes = 0
        self._since: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain_forever(), name="outage-backlog")

    def submit(self, rows: Sequence[NewEvent]) -> asyncio.Future[Kept]:
        """Commit `rows`; when that fails, or while earlier rows wait, hold them. The future
        says which, and the rows end stored or held whether anyone still waits on it or not.
        Raises `StoreClosed` (at once, or on the future) when the store is closing."""
        kept: asyncio.Future[Kept] = asyncio.get_running_loop().create_future()
        if self._held:
            kept.set_result(self._hold(rows))
        else:
            self._commit(rows).add_done_callback(functools.partial(self._written, rows, kept))
        return kept

    def _written(
        self,
        rows: Sequence[NewEvent],
        kept: asyncio.Future[Kept],
        written: asyncio.Future[list[Added]],
    ) -> None:
        error = StoreClosed("cancelled") if written.cancelled() else written.exception()
        if isinstance(error, StoreClosed):
            if not kept.done():
                kept.set_exception(error)
            return
        if error is None:
            result = Kept.STORED
        else:  # the store logged the detail (store.write_failed)
            log.warning("outage.write_failed", error=type(error).__name__)
            result = self._hold(rows)
        if not kept.done():
            kept.set_result(result)

    def _hold(self, rows: Sequence[NewEvent]) -> Kept:
        size = size_of(rows)
        if self.events + len(rows) > self.max_events or self.bytes + size > self.max_bytes:
            self._metrics.outage_dropped.inc(len(rows))
            log.error(
                "outage.buffer_full",
                dropped=len(rows),
                held=self.events,
                held_bytes=self.bytes,
                max_events=self.max_events,
                max_bytes=self.max_bytes,
            )
            return Kept.DROPPED
        if not self._held:
            self._since = time.monotonic()
            log.warning("outage.holding", note="storage refuses writes; hits held in memory")
        self._held.append((rows, size))
        self.events += len(rows)
        self.bytes += size
        self._metrics.outage_held.inc(len(rows))
        self._gauges()
        self._wake.set()
        return Kept.HELD

    def _gauges(self) -> None:
        self._metrics.outage_buffer_events.set(self.events)
        self._metrics.outage_buffer_bytes.set(self.bytes)

    def _front(self) -> tuple[int, list[NewEvent]]:
        """How many held hits the next write takes, and their rows (whole hits only)."""
        count = 0
        rows: list[NewEvent] = []
        for hit_rows, _ in self._held:
            if rows and len(rows) + len(hit_rows) > _EVENTS_PER_WRITE:
                break
            rows.extend(hit_rows)
            count += 1
        return count, rows

    async def _write_front(self) -> None:
        count, rows = self._front()
        await self._commit(rows)
        for _ in range(count):
            hit_rows, size = self._held.popleft()
            self.events -= len(hit_rows)
            self.bytes -= size
        self._gauges()

    async def _drain_forever(self) -> None:
        delay = RETRY_FIRST_S
        while True:
            await self._wake.wait()
            while self._held:
                try:
                    await self._write_front()
                except StoreClosed:
                    return
                except Exception as exc:
                    log.warning("outage.retry_failed", held=self.events, error=type(exc).__name__)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                    continue
                delay = RETRY_FIRST_S
                if not self._held:
                    lasted = time.monotonic() - (self._since or time.monotonic())
                    log.info("outage.written", note="every held hit is stored", lasted_s=lasted)
            self._wake.clear()

    async def close(self) -> None:
        """Stop retrying; one last write of what is held, before the store closes."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._held:
            try:
                await self._write_front()
            except Exception as exc:
                log.error("outage.lost", events=self.events, error=type(exc).__name__)
                return
