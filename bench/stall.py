"""How long the event loop stalls while big server-API batches are written.

    python bench/stall.py

Writes 20 batches of 1,000 events to 3 destinations at once (one group commit) into a store
that already holds 60,000 rows, while a task ticks every millisecond on the loop, and prints the
longest gap between ticks. Beside it, in the same run, the same write with every group inserted
on the loop (the store's threshold raised), the baseline the committer thread is there to beat.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from common import REPO


def _event(event_id: str) -> object:
    from gateway.outbox import NewDelivery, NewEvent, Status

    now = time.time()
    deliveries = [NewDelivery(d, Status.QUEUED, b"x" * 600) for d in ("meta", "ga4", "tiktok")]
    return NewEvent(event_id, "purchase", "server", int(now), now, True, 1, deliveries)


async def _run(path: Path) -> tuple[float, float]:
    from gateway.outbox import SqliteOutbox as Store

    store = await Store.open(str(path))
    try:
        for b in range(20):
            await store.add([_event(f"w{b}-{i}") for i in range(1000)])  # type: ignore[misc]
        gaps: list[float] = []
        done = False

        async def tick() -> None:
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        ticker = asyncio.create_task(tick())
        batches = [[_event(f"b{b}-{i}") for i in range(1000)] for b in range(20)]
        await asyncio.sleep(0.05)
        gaps.clear()
        started = time.perf_counter()
        await asyncio.gather(*(store.add(batch) for batch in batches))  # type: ignore[arg-type]
        took = time.perf_counter() - started
        done = True
        await ticker
        return took, max(gaps)
    finally:
        await store.close()


def main() -> None:
    import structlog

    from gateway.outbox.sqlite import outbox as store_module

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    with tempfile.TemporaryDirectory() as tmp:
        print("20 batches of 1,000 events to 3 destinations, written at once")
        for label, threshold in (
            ("inserted in the committer thread", store_module._ROWS_ON_LOOP),
            ("inserted on the loop (baseline)", 10**9),
        ):
            store_module._ROWS_ON_LOOP = threshold  # type: ignore[misc]
            took, stall = asyncio.run(_run(Path(tmp) / f"{threshold}.sqlite3"))
            print(f"{label:<36} took {took * 1000:6.0f} ms, longest stall {stall * 1000:5.0f} ms")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
