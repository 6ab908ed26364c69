"""The group commit's window: a small group waits a moment for more, a big one does not."""

from __future__ import annotations

import asyncio

from gateway.outbox.group import SMALL_GROUP, next_group


async def _put_later(queue: asyncio.Queue[int | None], job: int | None, after_s: float) -> None:
    await asyncio.sleep(after_s)
    queue.put_nowait(job)


async def test_a_job_queued_within_the_window_joins_the_group() -> None:
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    queue.put_nowait(1)
    later = asyncio.create_task(_put_later(queue, 2, 0.01))
    jobs, stop = await next_group(queue, 100, window_s=0.2)
    await later
    assert (jobs, stop) == ([1, 2], False)


async def test_without_a_window_the_group_is_what_had_queued() -> None:
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    queue.put_nowait(1)
    later = asyncio.create_task(_put_later(queue, 2, 0.01))
    jobs, _ = await next_group(queue, 100, window_s=0)
    await later
    assert jobs == [1]
    assert queue.get_nowait() == 2


async def test_a_big_group_starts_at_once() -> None:
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    for job in range(SMALL_GROUP):
        queue.put_nowait(job)
    # A window of a minute: only skipping it returns within the second.
    jobs, _ = await asyncio.wait_for(next_group(queue, 100, window_s=60), 1)
    assert jobs == list(range(SMALL_GROUP))


async def test_a_stop_skips_the_window_and_a_stop_within_it_is_seen() -> None:
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    queue.put_nowait(1)
    queue.put_nowait(None)
    assert await asyncio.wait_for(next_group(queue, 100, window_s=60), 1) == ([1], True)
    queue.put_nowait(2)
    later = asyncio.create_task(_put_later(queue, None, 0.01))
    assert await next_group(queue, 100, window_s=0.2) == ([2], True)
    await later
