"""Moving rows from the outbox to the destinations: one worker per destination.

A worker leases due rows, lets its destination build the requests, makes them, and writes each
outcome back. It never holds more than one batch in memory, so a million queued events cost
nothing but disk. One destination failing slows no other: each has its own worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import structlog

from gateway.destinations.base import Answer, Destination, Item, OutRequest, Result, Verdict
from gateway.metrics import Metrics
from gateway.storage import Storage
from gateway.store import Claimed, Finished, Status

if TYPE_CHECKING:
    from gateway.preview import Preview

log = structlog.get_logger("gateway.delivery")

IN_FLIGHT = 2
"""Batches one destination may have on the wire at once."""
IDLE_RECHECK_S = 1.0
"""How often an idle worker looks for retries that fell due (a new row wakes it at once)."""


def backoff_s(
    attempt: int,
    base_ms: int,
    max_ms: int,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Delay before the next try: capped exponential backoff with full jitter, never sooner
    than the platform's `Retry-After`.
    """
    cap = min(max_ms, base_ms * 2 ** max(0, attempt - 1)) / 1000
    delay = (rng or random).uniform(0, cap)
    return max(delay, retry_after_s or 0.0)


@dataclass(slots=True)
class Health:
    """How a destination's requests have been going, for `/readyz`."""

    last_success_at: float | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    auth_error: str | None = None
    """Set while the platform refuses the credentials (an invalid or expired token)."""

    def record(self, result: Result, now: float) -> None:
        """Count one request's verdict."""
        if result.auth:
            self.auth_error = self.last_error = result.message[:300]
            return
        if result.verdict is not Verdict.RETRY:
            self.auth_error = None  # the platform took the credentials
        if result.verdict is Verdict.SENT:
            self.last_success_at, self.consecutive_failures = now, 0
        elif result.verdict is Verdict.RETRY:
            self.consecutive_failures += 1
            self.last_error = result.message[:300]
        else:
            # The platform answered: it is up, even if it refused this event.
            self.last_success_at, self.consecutive_failures = now, 0
            self.last_error = result.message[:300]

    @property
    def healthy(self) -> bool:
        """False after three transient failures in a row, and while the credentials fail."""
        return self.consecutive_failures < 3 and self.auth_error is None


@dataclass(frozen=True, slots=True)
class _Verdicts:
    """One verdict per item of a request, with the HTTP facts for the log."""

    items: Sequence[Item]
    result: Result
    http_status: int | None
    latency_ms: float


async def transport(
    session: aiohttp.ClientSession, request: OutRequest, timeout_s: float
) -> Answer:
    """Make one HTTP request; timeouts and socket errors become an Answer with no status."""
    try:
        async with session.request(
            request.method,
            request.url,
            data=request.body,
            headers=dict(request.headers),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as response:
            body = await response.read()
            return Answer(response.status, body, dict(response.headers))
    except TimeoutError:
        return Answer(None, b"", {}, error=f"timeout after {timeout_s:.1f}s")
    except aiohttp.ClientError as exc:
        # Some errors quote the URL, and a URL may carry a secret (GA4's api_secret).
        detail = str(exc).replace(request.url, request.url.split("?", 1)[0])
        return Answer(None, b"", {}, error=f"{type(exc).__name__}: {detail[:200]}")


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
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """New rows were queued for this destination."""
        self._wake.set()

    def start(self) -> None:
        """Run in the background until `stop`."""
        self._task = asyncio.create_task(self._run(), name=f"deliver-{self.destination.name}")

    async def stop(self, grace_s: float) -> None:
        """Let the batch in flight finish within `grace_s`, then cancel (its lease is released
        on the next boot, so nothing is lost)."""
        self._stopping = True
        self._wake.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace_s)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        settings = self.destination.settings
        # A lease outlasts every request one batch can take (a batch split down to its bad
        # event; GA4's one request per person), or a second slot would claim and send it
        # again. On PostgreSQL it is also how long a dead replica's batch waits for another.
        timeout_s = settings.timeout_ms / 1000
        lease_s = 10.0 + timeout_s * self.destination.requests_per_batch(
            self.destination.batch_size
        )
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping:
                try:
                    self._wake.clear()
                    if len(in_flight) >= IN_FLIGHT:
                        # Both slots busy: the next claim waits for one to free up.
                        await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                        continue
                    limit = self.destination.batch_size
                    if self._paused_until is not None:
                        wait_s = self._paused_until - time.time()
                        if wait_s > 0:
                            # The token fails: nothing is claimed, so every event waits queued.
                            await self._pause_wait(min(wait_s, IDLE_RECHECK_S))
                            continue
                        limit = 1  # a probe: does the token work again?
                    claimed = await self.store.claim(self.destination.name, limit, lease_s)
                    if claimed:
                        # The next batch is claimed and built while this one is on the wire.
                        task = asyncio.create_task(self._deliver_logged(claimed))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
                        continue
                    if in_flight:
                        await asyncio.wait(
                            in_flight, timeout=IDLE_RECHECK_S, return_when=asyncio.FIRST_COMPLETED
                        )
                        continue
                    await self._idle()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a worker must outlive any one bad batch
                    self._log_error(exc)
                    await asyncio.sleep(IDLE_RECHECK_S)
        finally:
            if in_flight:
                # Stopping: batches on the wire finish (stop() bounds how long we wait).
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def _deliver_logged(self, claimed: Sequence[Claimed]) -> None:
        try:
            await self.deliver(claimed)
        except Exception as exc:  # the lease runs out and the rows come back: nothing lost
            self._log_error(exc)

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
        """Send one claimed batch and write every outcome back."""
        now = time.time()
        dest = self.destination
        finished: list[Finished] = []
        items: list[Item] = []
        attempts = {c.id: c for c in claimed}
        for row in claimed:
            if dest.max_age_s is not None and row.event_time < now - dest.max_age_s:
                # Never sent, never batched with fresh events: the platform refuses it whole.
                finished.append(
                    self._final(row, Status.DEAD, "older than the platform's age limit", now)
                )
            elif row.payload is None:
                finished.append(self._final(row, Status.DEAD, "payload missing", now))
            else:
                items.append(Item(row.id, raw=row.payload))
        verdicts: list[_Verdicts] = []
        for request in dest.build_requests(items) if items else []:
            refused = next((v.result for v in verdicts if v.result.auth), None)
            if refused is not None:
                # The credentials failed on this batch already: the rest wait unsent.
                verdicts.append(_Verdicts(request.items, refused, None, 0.0))
                continue
            verdicts.extend(await self._send(request))
        for v in verdicts:
            for item in v.items:
                finished.append(self._outcome(attempts[item.delivery_id], v, now))
        await self.store.finish(finished)
        for outcome in finished:
            self.metrics.count_delivery(dest.name, str(outcome.status))

    async def _send(self, request: OutRequest) -> list[_Verdicts]:
        dest = self.destination
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
            # One bad event refused the whole batch: halve until it stands alone.
            half = len(request.items) // 2
            out: list[_Verdicts] = []
            for part in (request.items[:half], request.items[half:]):
                for sub in dest.build_requests(part):
                    out.extend(await self._send(sub))
            return out
        if result.verdict is Verdict.SPLIT:
            result = Result(Verdict.DEAD, result.message)
        return [_Verdicts(request.items, result, answer.status, latency_ms)]

    def _outcome(self, row: Claimed, v: _Verdicts, now: float) -> Finished:
        dest = self.destination
        retry = dest.settings.retry
        attempts = row.attempts + 1
        status = Status.DEAD
        next_at = now
        message = v.result.message
        if v.result.auth:
            # Not the event's fault: it waits, queued, and the try does not count as an attempt.
            return Finished(
                id=row.id,
                status=Status.QUEUED,
                attempts=row.attempts,
                next_attempt_at=self._paused_until or now,
                http_status=v.http_status,
                message=f"waiting for working credentials: {message}",
                latency_ms=v.latency_ms,
                first_attempt_at=row.first_attempt_at or now,
                erase_payload=False,
            )
        if v.result.verdict is Verdict.SENT:
            status = Status.SENT
        elif v.result.verdict is Verdict.RETRY:
            next_at = now + backoff_s(attempts, retry.base_ms, retry.max_ms, v.result.retry_after_s)
            too_old = dest.max_age_s is not None and row.event_time < next_at - dest.max_age_s
            if attempts >= retry.max_attempts:
                message = f"gave up after {attempts} attempts: {message}"
            elif too_old:
                message = f"would pass the platform's age limit before the next try: {message}"
            else:
                status = Status.FAILED
        return Finished(
            id=row.id,
            status=status,
            attempts=attempts,
            next_attempt_at=next_at,
            http_status=v.http_status,
            message=message,
            latency_ms=v.latency_ms,
            first_attempt_at=row.first_attempt_at or now,
            # A dead row keeps its payload so an operator can fix the cause and replay it;
            # retention prunes it. A sent one has no use for it.
            erase_payload=status is Status.SENT and not dest.keeps_payload,
        )

    def _final(self, row: Claimed, status: Status, message: str, now: float) -> Finished:
        return Finished(
            id=row.id,
            status=status,
            attempts=row.attempts,
            next_attempt_at=now,
            http_status=None,
            message=message,
            latency_ms=None,
            first_attempt_at=row.first_attempt_at or now,
            erase_payload=not self.destination.keeps_payload,
        )
