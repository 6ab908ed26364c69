"""Moving rows from the outbox to the destinations: one worker per destination.

A worker leases due rows, lets its destination build the requests, makes them (up to the
destination's `concurrency` at once) and writes each request's outcome back the moment its
answer arrives, so a crash or a stop resends only what was on the wire. While it holds rows it
keeps their leases alive: however long a batch takes (split down to its bad events, or GA4's
one request per visitor), no other slot or replica claims them. On stop, what is on the wire
gets the grace to finish; every row not finished by then goes back to the queue at once.

It never holds more than a couple of batches in memory, so a million queued events cost
nothing but disk. One destination failing slows no other: each has its own worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

import aiohttp
import structlog

from gateway.delivery.health import Health
from gateway.delivery.retry import answered, unsent
from gateway.delivery.transport import transport
from gateway.destinations.base import Answer, Destination, Item, OutRequest, Result, Verdict
from gateway.metrics import Metrics
from gateway.outbox import Claimed, Finished, Status, Storage

if TYPE_CHECKING:
    from gateway.preview import Preview

log = structlog.get_logger("gateway.delivery")

IN_FLIGHT: Final = 2
"""Batches one destination may have claimed at once (the next is claimed while one is sent),
or enough to keep its `concurrency` busy when requests carry few events (GA4)."""
IDLE_RECHECK_S: Final = 1.0
"""How often an idle worker looks for retries that fell due (a new row wakes it at once)."""
LEASE_MIN_S: Final = 30.0
"""A lease lasts this long, or three request timeouts if longer, and is extended every third
of it while its rows are in hand. On PostgreSQL it is also how long a dead replica's rows wait
for another replica."""
WRITE_BACK_S: Final = 1.0
"""Of a stop's grace, the part kept for writing outcomes and giving rows back."""


class Worker:
    """Delivers one destination's queue."""

    def __init__(
        self,
        destination: Destination,
        store: Storage,
        session: aiohttp.ClientSession,
        metrics: Metrics | None = None,
        preview: Preview | None = None,
    ) -> None:
        self.destination = destination
        self.preview = preview
        self.store = store
        self.session = session
        self.metrics = metrics or Metrics()
        self.health = Health()
        self._paused_until: float | None = None
        """While the credentials fail: when the next probe (one event) may go."""
        self.metrics.auth_failed.labels(destination.name).set(0)
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopping = False
        self._deadline = float("inf")
        """Loop time past which requests still on the wire are abandoned (set by `stop`)."""
        self._slots = asyncio.Semaphore(destination.concurrency)
        # A batch ends with its slowest request: with one visitor a request (GA4), two batches
        # of 25 leave the 32 slots half idle in each batch's tail.
        self._batches = max(IN_FLIGHT, -(-2 * destination.concurrency // destination.batch_size))
        self._held: dict[int, float] = {}
        """Rows this worker has leased and not finished: id → the lease as last written."""
        self._task: asyncio.Task[None] | None = None

    @property
    def lease_s(self) -> float:
        """How long a claim or an extension leases rows for."""
        return max(LEASE_MIN_S, 3 * self.destination.settings.timeout_ms / 1000)

    def wake(self) -> None:
        """New rows were queued for this destination."""
        self._wake.set()

    def start(self) -> None:
        """Run in the background until `stop`."""
        self._task = asyncio.create_task(self._run(), name=f"deliver-{self.destination.name}")

    async def stop(self, grace_s: float) -> None:
        """Claim nothing more and start no request; let those on the wire finish within
        `grace_s` (less a moment to write back), record every answer, and give each row not
        finished back to the queue, due at once (here after a restart, or on another replica).
        Call it for every worker at once: the grace is one deadline, not one per worker."""
        loop = asyncio.get_running_loop()
        self._deadline = min(self._deadline, loop.time() + max(0.0, grace_s - WRITE_BACK_S))
        self._stopping = True
        self._stopped.set()
        self._wake.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace_s)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        keeper = asyncio.create_task(self._keep_leases(), name=f"leases-{self.destination.name}")
        stopped = asyncio.create_task(self._stopped.wait())
        try:
            while not self._stopping:
                try:
                    self._wake.clear()
                    if len(in_flight) >= self._batches:
                        # Both slots busy: the next claim waits for one to free up.
                        await asyncio.wait(
                            [*in_flight, stopped], return_when=asyncio.FIRST_COMPLETED
                        )
                        continue
                    limit = self.destination.batch_size
                    if self._paused_until is not None:
                        wait_s = self._paused_until - time.time()
                        if wait_s > 0:
                            # The token fails: nothing is claimed, so every event waits queued.
                            await self._pause_wait(min(wait_s, IDLE_RECHECK_S))
                            continue
                        limit = 1  # a probe: does the token work again?
                    claimed = await self.store.claim(self.destination.name, limit, self.lease_s)
                    fresh = self._hold(claimed)
                    if fresh:
                        # The next batch is claimed and built while this one is on the wire.
                        task = asyncio.create_task(self._deliver_logged(fresh))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
                        continue
                    if in_flight:
                        await asyncio.wait(
                            [*in_flight, stopped],
                            timeout=IDLE_RECHECK_S,
                            return_when=asyncio.FIRST_COMPLETED,
                        )
                        continue
                    await self._idle()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a worker must outlive any one bad batch
                    self._log_error(exc)
                    await asyncio.sleep(IDLE_RECHECK_S)
        finally:
            stopped.cancel()
            await self._wind_down(in_flight)
            keeper.cancel()
            await asyncio.gather(keeper, stopped, return_exceptions=True)

    def _hold(self, claimed: Sequence[Claimed]) -> list[Claimed]:
        """Note the leases of claimed rows; the rows not already in hand."""
        fresh = [row for row in claimed if row.id not in self._held]
        for row in claimed:
            # A row already in hand came back only because its lease lapsed (the loop stalled
            # past it): it is still being sent, so it is not sent again, but the lease is new.
            self._held[row.id] = row.leased_until
        return fresh

    async def _wind_down(self, in_flight: set[asyncio.Task[None]]) -> None:
        """Stopping: requests on the wire until the deadline, then give back what is left."""
        if in_flight:
            timeout = max(0.0, self._deadline - asyncio.get_running_loop().time())
            _, late = await asyncio.wait(set(in_flight), timeout=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if not self._held:
            return
        leases = list(self._held.items())
        self._held.clear()
        try:
            returned = await self.store.return_leases(leases)
        except Exception as exc:  # their leases run out instead: nothing is lost
            self._log_error(exc)
            return
        log.info("delivery.returned", destination=self.destination.name, deliveries=returned)

    async def _keep_leases(self) -> None:
        """Extend the leases of rows in hand every third of a lease, so they never lapse."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            if not self._held:
                continue
            leases = list(self._held.items())
            until = time.time() + self.lease_s
            try:
                extended = set(await self.store.extend_leases(leases, until))
            except Exception as exc:  # tried again in a third of a lease; it has two left
                self._log_error(exc)
                continue
            for row_id, held in leases:
                if self._held.get(row_id) != held:
                    continue  # finished, or claimed again, while the extension ran
                if row_id in extended:
                    self._held[row_id] = until
                else:
                    # Finished meanwhile, or taken by another claim after a lapse: not ours.
                    del self._held[row_id]

    async def _deliver_logged(self, claimed: Sequence[Claimed]) -> None:
        try:
            await self.deliver(claimed)
        except Exception as exc:
            self._log_error(exc)
            # Outcomes that could not be written: let those leases lapse and the rows come
            # back (at worst sent again), rather than keep them in hand for ever.
            for row in claimed:
                self._held.pop(row.id, None)

    def _log_error(self, exc: Exception) -> None:
        log.error(
            "delivery.worker_error",
            destination=self.destination.name,
            error=type(exc).__name__,
            detail=str(exc)[:200],
        )

    async def _pause_wait(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_s)

    def _auth(self, result: Result) -> None:
        """Pause on refused credentials (an error log once per episode); resume on any other
        answer the platform gives."""
        name = self.destination.name
        if result.auth:
            probe_s = self.destination.settings.retry.auth_probe_ms / 1000
            fields = {"destination": name, "message": result.message[:300], "next_probe_s": probe_s}
            if self._paused_until is None:  # a new episode: say it once, loudly
                log.error("delivery.auth_failed", **fields, note="deliveries wait queued")
            else:
                log.info("delivery.auth_still_failing", **fields)
            self._paused_until = time.time() + probe_s
            self.metrics.auth_failed.labels(name).set(1)
        elif self._paused_until is not None and result.verdict is not Verdict.RETRY:
            self._paused_until = None
            self.metrics.auth_failed.labels(name).set(0)
            log.warning("delivery.auth_recovered", destination=name)

    async def _idle(self) -> None:
        due = await self.store.next_due(self.destination.name)
        timeout = IDLE_RECHECK_S if due is None else min(max(due - time.time(), 0), IDLE_RECHECK_S)
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            return
        wait_ms = self.destination.settings.batch.max_wait_ms
        if wait_ms and not self._stopping:
            # The queue had run dry: give a batch a moment to fill before sending.
            await asyncio.sleep(wait_ms / 1000)

    async def deliver(self, claimed: Sequence[Claimed]) -> None:
        """Send one claimed batch, writing each request's outcome back as its answer comes."""
        now = time.time()
        dest = self.destination
        settled: list[Finished] = []
        items: list[Item] = []
        for row in claimed:
            if dest.max_age_s is not None and row.event_time < now - dest.max_age_s:
                # Never sent, never batched with fresh events: the platform refuses it whole.
                settled.append(
                    unsent(dest, row, Status.DEAD, "older than the platform's age limit", now)
                )
            elif row.payload is None:
                settled.append(unsent(dest, row, Status.DEAD, "payload missing", now))
            else:
                items.append(Item(row.id, raw=row.payload))
        await self._record(settled)
        if items:
            rows = {c.id: c for c in claimed}
            refused: list[Result] = []
            await _all(
                self._attempt(request, rows, refused) for request in dest.build_requests(items)
            )

    async def _attempt(
        self, request: OutRequest, rows: Mapping[int, Claimed], refused: list[Result]
    ) -> None:
        """Make one request (when a slot is free) and record its items' outcomes; a batch
        refused for one bad event is halved, and the halves go out side by side. Once the
        platform refused the credentials, the batch's requests not yet sent wait unsent."""
        dest = self.destination
        async with self._slots:
            if self._stopping:
                return  # never on the wire: given back with the rest when the worker stops
            if refused:
                now = time.time()
                outcomes = [
                    answered(
                        dest, rows[item.delivery_id], refused[0], None, 0.0, now, self._paused_until
                    )
                    for item in request.items
                ]
                await self._record(outcomes)
                return
            started = time.perf_counter()
            if dest.sends:
                answer = await transport(self.session, request, dest.settings.timeout_ms / 1000)
            else:
                answer = Answer(None, b"", {})
            latency_ms = (time.perf_counter() - started) * 1000
        if dest.sends:
            self.metrics.delivery_latency.labels(dest.name).observe(latency_ms / 1000)
        result = dest.classify(request, answer)
        if dest.sends:
            self.health.record(result, time.time())
            self._auth(result)
            if result.auth:
                refused.append(result)
        if self.preview is not None:  # traced rows only: one dict check otherwise
            self.preview.attempt(dest.name, request, answer, result, latency_ms)
        log.info(
            "delivery.attempt",
            destination=dest.name,
            events=len(request.items),
            verdict=str(result.verdict),
            http_status=answer.status,
            latency_ms=round(latency_ms, 1),
            message=result.message[:300],
        )
        if result.verdict is Verdict.SPLIT and len(request.items) > 1:
            half = len(request.items) // 2
            parts = (request.items[:half], request.items[half:])
            await _all(
                self._attempt(sub, rows, refused)
                for part in parts
                for sub in dest.build_requests(part)
            )
            return
        if result.verdict is Verdict.SPLIT:
            result = Result(Verdict.DEAD, result.message)
        now = time.time()
        await self._record(
            [
                answered(
                    dest,
                    rows[item.delivery_id],
                    result,
                    answer.status,
                    latency_ms,
                    now,
                    self._paused_until,
                )
                for item in request.items
            ]
        )

    async def _record(self, outcomes: Sequence[Finished]) -> None:
        """Write outcomes back. Once the answer is in, a stop does not interrupt the write: a
        row given back after its platform took it would be sent twice."""
        if not outcomes:
            return
        write = asyncio.ensure_future(self._write_back(outcomes))
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await write
            raise

    async def _write_back(self, outcomes: Sequence[Finished]) -> None:
        await self.store.finish(outcomes)
        for outcome in outcomes:
            self._held.pop(outcome.id, None)
            self.metrics.count_delivery(self.destination.name, str(outcome.status))


async def _all(attempts: Iterable[Awaitable[None]]) -> None:
    """Run side by side until every one is done, then raise the first failure, if any (one
    failed write must not abandon the other requests' answers)."""
    results = await asyncio.gather(*attempts, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
