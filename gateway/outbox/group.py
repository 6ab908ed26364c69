"""The group commit, written once for both backends.

`add` calls queue a job and wait for its future; one writer task takes every job that queued
up while the last transaction ran (at most `MAX_GROUP`; a group that starts small waits
`GROUP_WINDOW_S` for more), writes them in one transaction and settles each future after
COMMIT: durability costs one commit per group, not per hit, and an acknowledgement is a
promise. Jobs keep the order they queued in. What a group's transaction does is the backend's
`_commit_group`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog

from gateway.outbox.records import Added, NewEvent, Status, StoreClosed, WriteHealth

log = structlog.get_logger("gateway.outbox")

MAX_GROUP: Final = 2000
"""At most this many jobs share one transaction."""

GROUP_WINDOW_S: Final = 0.001
"""A group that starts small waits this long for more before its transaction begins. A commit
costs about the same CPU for one hit as for fifty (BEGIN, COMMIT's trip to the committer
thread, the wake-ups around them): at a paced load groups held one or two hits each."""
SMALL_GROUP: Final = 16
"""A group of at least this many jobs starts at once: the window would only add latency."""


@dataclass(slots=True)
class AddJob:
    """One `add` call: its events, and the future its caller awaits."""

    events: Sequence[NewEvent]
    future: asyncio.Future[list[Added]]


@dataclass(slots=True)
class FnJob:
    """A function to run inside the group's transaction (SQLite's `write`)."""

    fn: Callable[[Any], Any]
    future: asyncio.Future[Any]


@dataclass(frozen=True, slots=True)
class Failure:
    """A job's own exception, to set on its future once the group has committed."""

    error: BaseException


Job = AddJob | FnJob


class GroupCommit:
    """The writer task and its queue; a backend subclasses it and writes `_commit_group`."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Job | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._carried: Job | None = None
        """A job taken from the queue that must start the next group, not join this one."""
        self._closing = False
        self.window_s = GROUP_WINDOW_S
        self.grouped = 0
        """`add` calls committed since open."""
        self.write_health = WriteHealth()
        self.on_queued: Callable[[Iterable[str]], None] = lambda destinations: None
        """Called after a commit with the destinations that got new queued rows."""

    def _start_writer(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="store-writer")

    async def _stop_writer(self) -> bool:
        """Let every queued job finish and stop the writer; False if it was already stopping."""
        if self._closing:
            return False
        self._closing = True
        await self._queue.put(None)
        if self._writer is not None:
            await self._writer
        return True

    def _check_open(self) -> None:
        if self._closing:
            raise StoreClosed("store is closing")

    async def add(self, events: Sequence[NewEvent]) -> list[Added]:
        """Store events and their deliveries; returns once they are committed."""
        return await self.add_soon(events)

    def add_soon(self, events: Sequence[NewEvent]) -> asyncio.Future[list[Added]]:
        """Queue events for the next group; the future is settled after its COMMIT. No task
        per call: a browser hit waits on this future itself."""
        self._check_open()
        future: asyncio.Future[list[Added]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(AddJob(events, future))
        return future

    async def _commit_group(
        self, events: list[NewEvent], fns: list[FnJob]
    ) -> tuple[list[Added], list[Any]]:
        """Write one group in one transaction and COMMIT: the Added of each event, and what
        each function returned (or its `Failure`). Raises if the transaction failed."""
        raise NotImplementedError

    async def _write_loop(self) -> None:
        stop = False
        while not stop:
            jobs, stop = await self._next_group()
            if jobs:
                await self._run_group(jobs)

    async def _next_group(self) -> tuple[list[Job], bool]:
        """The next group's jobs, in the order they queued: wait for one, take what queued up
        while the last transaction ran, and while `window_s` passes if that is still fewer than
        SMALL_GROUP (at most MAX_GROUP). The bool says a None asked the writer to stop."""
        first = self._carried or await self._queue.get()
        self._carried = None
        if first is None:
            return [], True
        jobs = [first]
        stop = self._take_queued(jobs)
        if self.window_s > 0 and not stop and self._carried is None and len(jobs) < SMALL_GROUP:
            await asyncio.sleep(self.window_s)
            stop = self._take_queued(jobs)
        return jobs, stop

    def _take_queued(self, jobs: list[Job]) -> bool:
        """Move what waits in the queue onto `jobs`; True when a None was among it. A group
        writes its events before it runs its functions, so an `add` queued after a function (a
        retention pass, a replay) waits for the next group: each job sees the writes of every
        job queued before it, as if each had its own transaction."""
        while not self._queue.empty() and len(jobs) < MAX_GROUP:
            job = self._queue.get_nowait()
            if job is None:
                return True
            if isinstance(job, AddJob) and isinstance(jobs[-1], FnJob):
                self._carried = job
                return False
            jobs.append(job)
        return False

    async def _run_group(self, jobs: list[Job]) -> None:
        adds = [j for j in jobs if isinstance(j, AddJob)]
        fns = [j for j in jobs if isinstance(j, FnJob)]
        try:
            added, results = await self._commit_group([e for j in adds for e in j.events], fns)
        except Exception as exc:
            log.error("store.write_failed", error=type(exc).__name__, detail=str(exc)[:200])
            self.write_health.failed(exc)
            for failed in jobs:
                if not failed.future.done():
                    failed.future.set_exception(exc)
            return
        self.write_health.succeeded()
        self.grouped += len(adds)
        offset = 0
        for add_job in adds:
            n = len(add_job.events)
            if not add_job.future.done():
                add_job.future.set_result(added[offset : offset + n])
            offset += n
        for fn_job, result in zip(fns, results, strict=True):
            if fn_job.future.done():
                continue
            if isinstance(result, Failure):
                fn_job.future.set_exception(result.error)
            else:
                fn_job.future.set_result(result)
        touched = {d for a in added for d, status in a.statuses if status == Status.QUEUED}
        if touched:
            self.on_queued(touched)
