"""The group commit, written once for both backends.

`add` calls queue a job and wait for its future; one writer task takes every job that queued
up while the last transaction ran (at most `MAX_GROUP`), writes them in one transaction and
settles each future after COMMIT: durability costs one commit per group, not per hit, and an
acknowledgement is a promise. What a group's transaction does is the backend's `_commit_group`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import structlog

from gateway.outbox.records import Added, NewEvent, Status, StoreClosed, WriteHealth

log = structlog.get_logger("gateway.outbox")

MAX_GROUP: Final = 2000
"""At most this many jobs share one transaction."""

Q = TypeVar("Q")


async def next_group(queue: asyncio.Queue[Q | None], limit: int) -> tuple[list[Q], bool]:
    """The next group commit's jobs: wait for one, then take everything that queued up while
    the last transaction ran (at most `limit`). The bool says a None asked the writer to stop."""
    first = await queue.get()
    stop = first is None
    jobs: list[Q] = [] if first is None else [first]
    while not queue.empty() and len(jobs) < limit:
        job = queue.get_nowait()
        if job is None:
            stop = True
        else:
            jobs.append(job)
    return jobs, stop


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
        self._closing = False
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
        self._check_open()
        future: asyncio.Future[list[Added]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(AddJob(events, future))
        return await future

    async def _commit_group(
        self, events: list[NewEvent], fns: list[FnJob]
    ) -> tuple[list[Added], list[Any]]:
        """Write one group in one transaction and COMMIT: the Added of each event, and what
        each function returned (or its `Failure`). Raises if the transaction failed."""
        raise NotImplementedError

    async def _write_loop(self) -> None:
        stop = False
        while not stop:
            group: tuple[list[Job], bool] = await next_group(self._queue, MAX_GROUP)
            jobs, stop = group
            if jobs:
                await self._run_group(jobs)

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
