"""The cost of `tag-gateway report` over 1,000,000 events, and what the pixel/backend overlap
(contract §10) adds to it.

    python bench/report.py [--events 1000000] [--rounds 3]

Writes N events with one sent delivery each into a fresh SQLite store, all in the last 24 hours:
60 % pixel page views, 20 % pixel purchases, 20 % backend purchases of which three in four carry
the pixel's event ID. Then times, alternating A B A B in one process:

- A: the report without the overlap (the volumes, shares and values of both windows: the
  report as it was before §10), the baseline;
- B: the whole report (`report.build`), overlap included.

Prints the median of each and the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, cpu_note

sys.path.insert(0, str(REPO))

from gateway import report
from gateway.outbox import SQLITE_SCHEMA as SCHEMA
from gateway.outbox import SqliteOutbox as Store


def fill(db: Path, events: int, now: float) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.executescript(SCHEMA)
    page_views, purchases = int(events * 0.6), int(events * 0.2)
    rows = []
    for i in range(events):
        at = now - 86000 * (i / events)
        if i < page_views:
            rows.append((i + 1, f"pv-{i}", "page_view", "meta_pixel", at))
        elif i < page_views + purchases:
            rows.append((i + 1, f"ord-{i - page_views}", "purchase", "meta_pixel", at))
        else:
            # The backend's copy 30 s after the pixel's.
            n = i - page_views - purchases
            event_id = f"ord-{n}" if n % 4 else f"srv-{n}"
            at = now - 86000 * ((page_views + n) / events) + 30
            rows.append((i + 1, event_id, "purchase", "server", at))
    conn.executemany(
        "INSERT INTO events (id, event_id, event_name, source, event_time, received_at,"
        " dedupable, match_keys, value, currency, consent)"
        " VALUES (?, ?, ?, ?, CAST(?5 AS INTEGER), ?5, 1, 40, '10.00', 'EUR', NULL)",
        rows,
    )
    conn.executemany(
        "INSERT INTO deliveries (id, event_row, event_id, event_name, destination, status,"
        " event_time, next_attempt_at, created_at, updated_at)"
        " VALUES (?1, ?1, ?2, ?3, 'meta', 'sent', CAST(?5 AS INTEGER), ?5, ?5, ?5)",
        rows,
    )
    conn.commit()
    conn.close()


async def without_overlap(store: Store, window: report.Window) -> None:
    await report._figures(store, window)
    await report._figures(store, window.before())


async def run(db: Path, rounds: int, now: float) -> None:
    store = await Store.open(str(db))
    window = report.Window(now - 86400, now + 1)
    timings: dict[str, list[float]] = {"A": [], "B": []}
    built = await report.build(store, window)  # warm the page cache for both
    for _ in range(rounds):
        for name in ("A", "B"):
            started = time.perf_counter()
            if name == "A":
                await without_overlap(store, window)
            else:
                built = await report.build(store, window)
            timings[name].append(time.perf_counter() - started)
    await store.close()
    a, b = statistics.median(timings["A"]), statistics.median(timings["B"])
    (purchase,) = [o for o in built.overlap if o.event_name == "purchase"]
    print(f"overlap: {purchase.as_dict()}")
    for name, label, median in (("A", "without", a), ("B", "with   ", b)):
        runs = ", ".join(f"{t:.2f}" for t in timings[name])
        print(f"{name} report {label} overlap: median {median:.2f} s  ({runs})")
    print(f"overlap adds {b - a:.2f} s ({(b - a) / a:+.0%})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(cpu_note())
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "report.sqlite3"
        now = time.time()
        started = time.monotonic()
        fill(db, args.events, now)
        print(f"{args.events} events written in {time.monotonic() - started:.1f} s")
        asyncio.run(run(db, args.rounds, now))


if __name__ == "__main__":
    main()
