"""The SQLite outbox and delivery log.

Events are immutable rows; each (event, destination) pair has one delivery row carrying its
state. Every write goes through one writer task: concurrent `add` calls that arrive while a
transaction is running are merged into the next one (group commit), so durability costs one
fsync per group, not per hit. `add` returns only after COMMIT: that is what makes an
acknowledgement a promise.

The write connection is a plain `sqlite3` connection used on the event loop's thread, not
aiosqlite: each aiosqlite call is a trip to its thread and back (queue, wake-up, callback
into the loop), which cost about 30 times the CPU of the statement itself, and a group
commit made seven of them. Statements here are short (the log is indexed for every write),
so running them on the loop is cheaper than handing them off. Two waits must still not
stall the loop: COMMIT, which carries the fsync, runs in one dedicated thread (one trip per
group); and a write lock held by another process (the `replay` command) is waited out with
`asyncio.sleep` and retries, not in SQLite's busy handler. Reads for the admin page, the
report and the CLI keep their aiosqlite connection (`reader`): they can be long.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import functools
import inspect
import os
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar, overload

import aiosqlite
import structlog

from gateway.outbox.dialect import BLOCKS_DEDUP_SQL, Params, Style
from gateway.outbox.records import (
    DEDUP_WINDOW_S,
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
from gateway.outbox.where import too_old, where

log = structlog.get_logger("gateway.outbox.sqlite")

T = TypeVar("T")

_MAX_GROUP: Final = 2000
"""At most this many `add` calls share one transaction."""
_KEYS_PER_QUERY: Final = 300
_ROWS_ON_LOOP: Final = 500
"""A group writing more rows than this inserts them in the committer thread (hits' groups of a
row or two each stay on the loop, where a statement costs no thread trip)."""
_COMMIT_IN_THREAD: Final[bool] = True
"""COMMIT (and its fsync) in the committer thread; False commits on the loop, blocking it
for the fsync (to compare the two)."""
_BUSY_WAIT_S: Final = 5.0
"""How long a write waits for another process's write lock before it fails."""
_BUSY_FIRST_SLEEP_S: Final = 0.002
_BUSY_MAX_SLEEP_S: Final = 0.02


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


SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    event_name TEXT NOT NULL,
    source TEXT NOT NULL,
    event_time INTEGER NOT NULL,
    received_at REAL NOT NULL,
    dedupable INTEGER NOT NULL,
    match_keys INTEGER NOT NULL,
    value TEXT,
    currency TEXT,
    consent TEXT
);
CREATE INDEX IF NOT EXISTS events_received ON events (received_at);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    event_row INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event_name TEXT NOT NULL,
    destination TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    event_time INTEGER NOT NULL,
    next_attempt_at REAL NOT NULL,
    leased_until REAL NOT NULL DEFAULT 0,
    first_attempt_at REAL,
    http_status INTEGER,
    message TEXT,
    latency_ms REAL,
    duplicate_of INTEGER,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    payload BLOB
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (destination, next_attempt_at)
    WHERE status IN ('queued', 'failed');
CREATE INDEX IF NOT EXISTS deliveries_key ON deliveries (destination, event_name, event_id);
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_row);
CREATE INDEX IF NOT EXISTS deliveries_created ON deliveries (created_at);
CREATE TABLE IF NOT EXISTS heartbeat (id INTEGER PRIMARY KEY, at REAL NOT NULL);
-- Attribution (docs/operations.md §6): a row per visitor key of a consented event, its channel and
-- campaign when the event is a touch. `visitor` is an HMAC, never the key itself.
CREATE TABLE IF NOT EXISTS touches (
    id INTEGER PRIMARY KEY,
    event_row INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event_name TEXT NOT NULL,
    received_at REAL NOT NULL,
    visitor TEXT NOT NULL,
    channel TEXT,
    campaign TEXT
);
CREATE INDEX IF NOT EXISTS touches_visitor ON touches (visitor, received_at)
    WHERE channel IS NOT NULL;
CREATE INDEX IF NOT EXISTS touches_received ON touches (received_at);
CREATE TABLE IF NOT EXISTS store_secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);
"""

# docs/operations.md §6, per name the server API sent in [since, until): each event ID once per
# side (its first copy), the pairs whose two copies came within 48 hours, and the median of
# their lags (the middle one or two of the sorted pairs, averaged). Sources other than
# `server` are the pixels.
OVERLAP: Final = """
WITH s AS (
    SELECT event_name, event_id, MIN(received_at) AS t FROM events
    WHERE received_at >= ?1 AND received_at < ?2 AND source = 'server'
    GROUP BY event_name, event_id
), b AS (
    SELECT event_name, event_id, MIN(received_at) AS t FROM events
    WHERE received_at >= ?1 AND received_at < ?2 AND source <> 'server'
      AND event_name IN (SELECT event_name FROM s)
    GROUP BY event_name, event_id
), p AS (
    SELECT s.event_name, ABS(s.t - b.t) AS lag FROM s
    JOIN b ON b.event_name = s.event_name AND b.event_id = s.event_id
    WHERE ABS(s.t - b.t) <= ?3
), r AS (
    SELECT event_name, lag, ROW_NUMBER() OVER (PARTITION BY event_name ORDER BY lag) AS i,
           COUNT(*) OVER (PARTITION BY event_name) AS n
    FROM p
)
SELECT event_name, 'backend', COUNT(*), NULL FROM s GROUP BY event_name
UNION ALL SELECT event_name, 'browser', COUNT(*), NULL FROM b GROUP BY event_name
UNION ALL SELECT event_name, 'both', n, AVG(lag) FROM r
    WHERE i IN ((n + 1) / 2, (n + 2) / 2) GROUP BY event_name, n
"""

# docs/operations.md §6. Conversions: every copy of the event in the window, first copy first (the
# caller counts each event ID once).
CONVERSIONS: Final = """
SELECT event_id, value, currency FROM events
WHERE event_name = ?1 AND received_at >= ?2 AND received_at < ?3
ORDER BY received_at, id
"""
# Credits: each conversion (its first copy's time) with the visitor keys any of its copies
# left, matched to touches of those keys within the window before it; the last touch
# (?5 = -1) or the first (?5 = 1) wins.
CREDITS: Final = """
WITH c AS (
    SELECT event_id, MIN(received_at) AS t FROM events
    WHERE event_name = ?1 AND received_at >= ?2 AND received_at < ?3
    GROUP BY event_id
), k AS (
    SELECT DISTINCT c.event_id, c.t, v.visitor FROM touches AS v
    JOIN c ON c.event_id = v.event_id
    WHERE v.event_name = ?1 AND v.received_at >= ?2 AND v.received_at < ?3
), m AS (
    SELECT k.event_id, t.channel, t.campaign,
           ROW_NUMBER() OVER (PARTITION BY k.event_id
                              ORDER BY t.received_at * ?5, t.id * ?5) AS n
    FROM k JOIN touches AS t ON t.visitor = k.visitor AND t.channel IS NOT NULL
        AND t.received_at >= k.t - ?4 AND t.received_at <= k.t
)
SELECT event_id, channel, campaign FROM m WHERE n = 1
"""
TOUCHES: Final = """
SELECT channel, campaign, COUNT(DISTINCT event_row) FROM touches
WHERE channel IS NOT NULL AND received_at >= ?1 AND received_at < ?2
GROUP BY channel, campaign
"""

# Durability first: WAL with a full sync on every commit survives a crash and a power cut.
# secure_delete overwrites erased payloads instead of leaving them in free pages.
_PRAGMAS: Final = (
    # First. This connection runs on the event loop: when another process (a CLI command)
    # holds the lock it must not wait in SQLite; `_until_free` sleeps and retries instead.
    "PRAGMA busy_timeout=0",
    "PRAGMA journal_mode=WAL",
    "PRAGMA secure_delete=ON",
)


@dataclass(slots=True)
class _AddJob:
    events: Sequence[NewEvent]
    future: asyncio.Future[list[Added]]


@dataclass(slots=True)
class _FnJob:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Counters:
    next_event: int = 1
    next_delivery: int = 1
    commits: int = 0
    grouped: int = 0


def lock_file(path: str) -> int:
    """Hold an exclusive lock on the SQLite file for the life of this process; return the
    descriptor to close when done. Two `serve` processes on one file each count their own
    row ids, so the second's inserts collide with the first's (`UNIQUE constraint failed`):
    the second must not start. `flock` locks are apart from SQLite's own (POSIX) locks and
    die with the process, `kill -9` included. Taken before SQLite opens the file, so that
    closing this descriptor on failure cannot drop a lock of SQLite's."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise StoreLocked(
                f"{path} is in use by another tag-gateway serve; one process per SQLite file"
                " (for several replicas use storage.url, PostgreSQL)"
            ) from exc
        raise
    return fd


def _create_private(path: str) -> None:
    """Create the file 0600 if it is new: it holds IP addresses, user agents and hashes.
    SQLite gives `-wal` and `-shm` the main file's mode. An existing file keeps its mode (an
    operator may have chosen group access for backups)."""
    if path == ":memory:" or path.startswith("file:"):
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class SqliteOutbox:
    """The outbox and log. Open with `await SqliteOutbox.open(path)`; close with `await close()`."""

    def __init__(self, path: str, conn: sqlite3.Connection, reader: aiosqlite.Connection):
        self.path = path
        self._conn = conn
        """The write connection: used on the loop's thread, and by the committer thread only
        while the writer awaits its COMMIT."""
        self.reader = reader
        self._committer = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-commit")
            if _COMMIT_IN_THREAD
            else None
        )
        self._queue: asyncio.Queue[_AddJob | _FnJob | None] = asyncio.Queue()
        self._ids = _Counters()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self.on_queued: Callable[[Iterable[str]], None] = lambda destinations: None
        """Called after a commit with the destinations that got new queued rows."""
        self.write_health = WriteHealth()
        self._lock_fd: int | None = None
        self.visitor_secret = b""
        """The HMAC key of attribution's visitor keys, made once per store (set by `open`)."""

    @classmethod
    async def open(
        cls, path: str, synchronous: str = "full", *, exclusive: bool = False
    ) -> SqliteOutbox:
        """Open (creating if needed) the SQLite file, migrate, and start the writer.

        `exclusive` (what `serve` asks for) holds the file for the process's life: a second
        opener that asks too gets StoreLocked. The commands (`replay`, ...) do not ask."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        _create_private(path)
        lock_fd = lock_file(path) if exclusive else None
        try:
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        try:
            level = "NORMAL" if synchronous == "normal" else "FULL"
            for pragma in (*_PRAGMAS, f"PRAGMA synchronous={level}"):
                await _until_free(functools.partial(conn.execute, pragma))
            # Every statement is IF NOT EXISTS: a retry after a busy one redoes nothing.
            await _until_free(lambda: conn.executescript(SCHEMA))
            reader = await aiosqlite.connect(path, isolation_level=None)
        except BaseException:
            conn.close()
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        try:
            await reader.execute("PRAGMA busy_timeout=5000")
            store = cls(path, conn, reader)
            store._lock_fd = lock_fd
            await _until_free(store._init_ids)
            store.visitor_secret = await _until_free(lambda: _secret(conn))
        except BaseException:
            # aiosqlite's reader thread would keep a process that failed to start alive.
            await reader.close()
            conn.close()
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        store._writer = asyncio.create_task(store._write_loop(), name="store-writer")
        return store

    def _init_ids(self) -> None:
        row = self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
        self._ids.next_event = (row[0] if row else 0) + 1
        row = self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM deliveries").fetchone()
        self._ids.next_delivery = (row[0] if row else 0) + 1

    async def close(self) -> None:
        """Finish every queued write, then close both connections."""
        if self._closing:
            return
        self._closing = True
        await self._queue.put(None)
        if self._writer is not None:
            await self._writer
        log.info("store.closed", commits=self._ids.commits, adds=self._ids.grouped)
        await self.reader.close()
        # In the committer thread, after any COMMIT still there (if the writer was cancelled
        # mid-commit); closing the last connection checkpoints the WAL, which is disk work.
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._committer, self._conn.close)
        if self._committer is not None:
            self._committer.shutdown(wait=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- writes ------------------------------------------------------------------------------

    async def add(self, events: Sequence[NewEvent]) -> list[Added]:
        """Store events and their deliveries; returns once they are committed."""
        if self._closing:
            raise StoreClosed("store is closing")
        future: asyncio.Future[list[Added]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_AddJob(events, future))
        return await future

    @overload
    async def write(self, fn: Callable[[sqlite3.Connection], Awaitable[T]]) -> T: ...
    @overload
    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...
    async def write(self, fn: Callable[[sqlite3.Connection], T | Awaitable[T]]) -> T:
        """Run `fn` inside the writer's next transaction and return its result after COMMIT.

        `fn` runs on the loop's thread; if it returns an awaitable, the writer awaits it and
        holds the transaction meanwhile (tests use that to hold the writer)."""
        if self._closing:
            raise StoreClosed("store is closing")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_FnJob(fn, future))
        return await future

    async def _write_loop(self) -> None:
        stop = False
        while not stop:
            group: tuple[list[_AddJob | _FnJob], bool] = await next_group(self._queue, _MAX_GROUP)
            jobs, stop = group
            if jobs:
                await self._run_group(jobs)

    async def _run_group(self, jobs: list[_AddJob | _FnJob]) -> None:
        adds = [j for j in jobs if isinstance(j, _AddJob)]
        fns = [j for j in jobs if isinstance(j, _FnJob)]
        conn = self._conn
        ids_before = (self._ids.next_event, self._ids.next_delivery)
        results: list[Any] = []
        touched: set[str] = set()
        try:
            await _until_free(lambda: conn.execute("BEGIN IMMEDIATE"))
            rows = sum(1 + len(e.deliveries) for job in adds for e in job.events)
            if rows > _ROWS_ON_LOOP and self._committer is not None:
                # A group of big API batches: off the loop, or hits wait behind it (20 batches
                # of 1,000 events to 3 destinations held the loop for over a second).
                loop = asyncio.get_running_loop()
                added = await loop.run_in_executor(self._committer, self._insert, adds, touched)
            else:
                added = self._insert(adds, touched) if adds else []
            for fn_job in fns:
                results.append(await _settle(fn_job.fn, conn))
            if self._committer is None:
                conn.execute("COMMIT")
            else:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._committer, conn.execute, "COMMIT")
        except Exception as exc:
            self._ids.next_event, self._ids.next_delivery = ids_before
            with contextlib.suppress(Exception):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            log.error("store.write_failed", error=type(exc).__name__, detail=str(exc)[:200])
            self.write_health.failed(exc)
            for failed in jobs:
                if not failed.future.done():
                    failed.future.set_exception(exc)
            return
        self.write_health.succeeded()
        self._ids.commits += 1
        self._ids.grouped += len(adds)
        offset = 0
        for add_job in adds:
            n = len(add_job.events)
            if not add_job.future.done():
                add_job.future.set_result(added[offset : offset + n])
            offset += n
        for fn_job, result in zip(fns, results, strict=True):
            if fn_job.future.done():
                continue
            if isinstance(result, _Failure):
                fn_job.future.set_exception(result.error)
            else:
                fn_job.future.set_result(result)
        if touched:
            self.on_queued(touched)

    def _insert(self, adds: list[_AddJob], touched: set[str]) -> list[Added]:
        events = [e for job in adds for e in job.events]
        first_seen = self._existing_keys(events)
        event_rows: list[tuple[Any, ...]] = []
        delivery_rows: list[tuple[Any, ...]] = []
        touch_rows: list[tuple[Any, ...]] = []
        added: list[Added] = []
        for event in events:
            row = self._ids.next_event
            self._ids.next_event += 1
            for t in event.touches:
                touch_rows.append(
                    (row, event.event_id, event.event_name, event.received_at, *touch_columns(t))
                )
            event_rows.append(
                (
                    row,
                    event.event_id,
                    event.event_name,
                    event.source,
                    event.event_time,
                    event.received_at,
                    int(event.dedupable),
                    event.match_keys,
                    event.value,
                    event.currency,
                    event.consent,
                )
            )
            queued = duplicates = 0
            statuses: list[tuple[str, str]] = []
            ids: list[tuple[int, int | None]] = []
            for d in event.deliveries:
                delivery_id = self._ids.next_delivery
                self._ids.next_delivery += 1
                status, payload, message, duplicate_of = d.status, d.payload, d.message, None
                name = d.event_name or event.event_name
                if status is Status.QUEUED:
                    key = (d.destination, name, event.event_id)
                    duplicate_of = first_seen.get(key)
                    if duplicate_of is None:
                        first_seen[key] = delivery_id
                        queued += 1
                        touched.add(d.destination)
                    else:
                        status, payload = Status.DUPLICATE, None
                        message = f"duplicate of delivery {duplicate_of}"
                        duplicates += 1
                statuses.append((d.destination, str(status)))
                ids.append((delivery_id, duplicate_of))
                delivery_rows.append(
                    (
                        delivery_id,
                        row,
                        event.event_id,
                        name,
                        d.destination,
                        str(status),
                        event.event_time,
                        event.received_at,
                        message,
                        duplicate_of,
                        event.received_at,
                        event.received_at,
                        payload,
                    )
                )
            added.append(Added(row, queued, duplicates, tuple(statuses), tuple(ids)))
        self._conn.executemany(
            "INSERT INTO events (id, event_id, event_name, source, event_time, received_at,"
            " dedupable, match_keys, value, currency, consent)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            event_rows,
        )
        self._conn.executemany(
            "INSERT INTO deliveries (id, event_row, event_id, event_name, destination, status,"
            " event_time, next_attempt_at, message, duplicate_of, created_at, updated_at, payload)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            delivery_rows,
        )
        if touch_rows:
            self._conn.executemany(
                "INSERT INTO touches (event_row, event_id, event_name, received_at, visitor,"
                " channel, campaign) VALUES (?, ?, ?, ?, ?, ?, ?)",
                touch_rows,
            )
        return added

    def _existing_keys(self, events: Sequence[NewEvent]) -> dict[tuple[str, str, str], int]:
        """The first live delivery of each (destination, name, id) seen within 48 hours."""
        keys = list(
            {
                (d.destination, d.event_name or e.event_name, e.event_id)
                for e in events
                for d in e.deliveries
                if d.status is Status.QUEUED
            }
        )
        found: dict[tuple[str, str, str], int] = {}
        cutoff = time.time() - DEDUP_WINDOW_S
        blocking = BLOCKS_DEDUP_SQL
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            chunk = keys[start : start + _KEYS_PER_QUERY]
            values = ",".join("(?, ?, ?)" for _ in chunk)
            params: list[Any] = []
            for key in chunk:
                params.extend(key)
            # Within 48 hours of arriving, or of the last send or replay: the platform counts
            # from when it got the event.
            params.extend((cutoff, cutoff))
            # One index search per key. (A row-value `IN (VALUES ...)` made SQLite scan the
            # whole index: 1,000,000 rows in the log cut hits/s from ~900 to ~100.)
            sql = (
                f"WITH k(destination, event_name, event_id) AS (VALUES {values})"
                " SELECT k.destination, k.event_name, k.event_id,"
                " (SELECT MIN(d.id) FROM deliveries d WHERE d.destination = k.destination"
                " AND d.event_name = k.event_name AND d.event_id = k.event_id"
                " AND (d.created_at > ? OR d.updated_at > ?)"
                f" AND d.status IN {blocking}) FROM k"
            )
            for dest, name, event_id, first in self._conn.execute(sql, params):
                if first is not None:
                    found[(dest, name, event_id)] = first
        return found

    async def claim(
        self, destination: str, limit: int, lease_s: float, now: float | None = None
    ) -> list[Claimed]:
        """Lease up to `limit` due deliveries of one destination, oldest due first."""
        at = time.time() if now is None else now

        def run(conn: sqlite3.Connection) -> list[Claimed]:
            sql = (
                "UPDATE deliveries SET leased_until = ? WHERE id IN ("
                " SELECT id FROM deliveries WHERE destination = ?"
                " AND status IN ('queued', 'failed') AND next_attempt_at <= ?"
                " AND leased_until <= ? ORDER BY next_attempt_at, id LIMIT ?)"
                " RETURNING id, payload, attempts, event_time, first_attempt_at, leased_until"
            )
            rows = conn.execute(sql, (at + lease_s, destination, at, at, limit)).fetchall()
            return sorted((Claimed(*row) for row in rows), key=lambda c: c.id)

        return await self.write(run)

    async def finish(self, outcomes: Sequence[Finished], now: float | None = None) -> None:
        """Write attempt outcomes back and release their leases."""
        if not outcomes:
            return
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
                int(o.erase_payload),
                o.id,
            )
            for o in outcomes
        ]

        def run(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = ?,"
                " http_status = ?, message = ?, latency_ms = ?,"
                " first_attempt_at = COALESCE(first_attempt_at, ?), updated_at = ?,"
                " leased_until = 0, payload = CASE WHEN ? THEN NULL ELSE payload END"
                " WHERE id = ?",
                rows,
            )

        await self.write(run)

    async def extend_leases(self, leases: Sequence[Lease], until: float) -> list[int]:
        """Move the leases of rows still pending and still held as written (`leased_until`
        unchanged since) to `until`; returns the ids extended. A row finished meanwhile (its
        lease is 0) or taken by another claim is left alone."""
        if not leases:
            return []

        def run(conn: sqlite3.Connection) -> list[int]:
            extended = []
            for row_id, held in leases:
                cur = conn.execute(
                    "UPDATE deliveries SET leased_until = ? WHERE id = ? AND leased_until = ?"
                    " AND status IN ('queued', 'failed')",
                    (until, row_id, held),
                )
                if cur.rowcount:
                    extended.append(row_id)
            return extended

        return await self.write(run)

    async def return_leases(self, leases: Sequence[Lease]) -> int:
        """Give rows back to the queue unsent (a stopping worker's): due again at once, for
        any worker. Only leases still held as written; returns how many."""
        if not leases:
            return 0

        def run(conn: sqlite3.Connection) -> int:
            cur = conn.executemany(
                "UPDATE deliveries SET leased_until = 0 WHERE id = ? AND leased_until = ?"
                " AND status IN ('queued', 'failed')",
                leases,
            )
            return cur.rowcount

        return await self.write(run)

    async def prune(self, older_than: float, batch: int = 500) -> int:
        """Delete up to `batch` final delivery rows created before `older_than`, events left
        with no delivery, and touches; returns how many delivery and touch rows went. Small
        batches, so each is one short transaction among the hits'."""

        def run(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries"
                " WHERE created_at < ? AND status NOT IN ('queued', 'failed') LIMIT ?)",
                (older_than, batch),
            )
            deleted = cur.rowcount
            conn.execute(
                "DELETE FROM events WHERE id IN (SELECT e.id FROM events e"
                " WHERE e.received_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM deliveries d WHERE d.event_row = e.id) LIMIT ?)",
                (older_than, batch),
            )
            cur = conn.execute(
                "DELETE FROM touches WHERE id IN (SELECT id FROM touches"
                " WHERE received_at < ? LIMIT ?)",
                (older_than, batch),
            )
            return deleted + cur.rowcount

        return await self.write(run)

    async def release_leases(self) -> int:
        """On boot: rows a dead process had in flight go back to the queue."""

        def run(conn: sqlite3.Connection) -> int:
            cur = conn.execute("UPDATE deliveries SET leased_until = 0 WHERE leased_until > 0")
            return cur.rowcount

        return await self.write(run)

    # --- reads -------------------------------------------------------------------------------

    async def next_due(self, destination: str) -> float | None:
        """When the earliest pending delivery of a destination is due, or None if none is."""
        sql = (
            "SELECT MIN(next_attempt_at) FROM deliveries"
            " WHERE destination = ? AND status IN ('queued', 'failed')"
        )
        async with self.reader.execute(sql, (destination,)) as cur:
            row = await cur.fetchone()
        return float(row[0]) if row and row[0] is not None else None

    async def deliveries(self, query: DeliveryQuery) -> list[DeliveryRow]:
        """Delivery-log rows, newest first."""
        bind = Params(Style.QMARK)
        clause = where(query, bind)
        params = bind.values
        sql = (
            "SELECT d.id, d.event_id, d.event_name, d.destination, d.status, d.attempts,"
            " d.http_status, d.message, d.latency_ms, d.created_at, d.updated_at,"
            " d.next_attempt_at, d.duplicate_of, e.source, d.payload"
            " FROM deliveries d JOIN events e ON e.id = d.event_row"
            f" {clause} ORDER BY d.id DESC LIMIT ?"
        )
        async with self.reader.execute(sql, [*params, query.limit]) as cur:
            rows = await cur.fetchall()
        return [DeliveryRow(*row) for row in rows]

    async def requeue(self, query: DeliveryQuery, now: float | None = None) -> int:
        """Put dead or failed deliveries matching `query` back in the queue, due now.

        Never one that would be sent twice: not a row in flight (leased), not one whose event
        another delivery of the same key has taken (queued, failed or sent within 48 hours: a
        later copy went out while this one lay dead), and of several matching rows of one key
        only the newest."""
        at = time.time() if now is None else now
        bind = Params(Style.QMARK)
        clause = where(query, bind)
        params = bind.values
        blocking = BLOCKS_DEDUP_SQL

        def run(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE deliveries SET status = 'queued', next_attempt_at = ?, leased_until = 0,"
                " updated_at = ?, message = 'replayed: ' || COALESCE(message, '')"
                " WHERE id IN (SELECT MAX(d.id) FROM deliveries d"
                f" {clause} AND d.payload IS NOT NULL AND d.leased_until <= ?"
                " AND NOT EXISTS (SELECT 1 FROM deliveries o WHERE o.destination = d.destination"
                " AND o.event_name = d.event_name AND o.event_id = d.event_id AND o.id != d.id"
                " AND (o.created_at > ? OR o.updated_at > ?)"
                f" AND o.status IN {blocking})"
                " GROUP BY d.destination, d.event_name, d.event_id)",
                [at, at, *params, at, at - DEDUP_WINDOW_S, at - DEDUP_WINDOW_S],
            )
            return cur.rowcount

        return await self.write(run)

    async def replay_leftovers(
        self, query: DeliveryQuery, now: float | None = None
    ) -> dict[str, int]:
        """Before `requeue(query)`: the rows it matches and why each would be left, as counts
        by reason (REPLAY_REASONS); `candidate` rows are those it may take (of several of one
        event, it takes only the newest)."""
        at = time.time() if now is None else now
        base = dataclasses.replace(query, oldest=())
        old_bind = Params(Style.QMARK)
        old = too_old(query, old_bind)
        old_params = old_bind.values
        bind = Params(Style.QMARK)
        clause = where(base, bind)
        params = bind.values
        blocking = BLOCKS_DEDUP_SQL
        sql = (
            f"SELECT CASE WHEN {old} THEN 'too_old'"
            " WHEN d.payload IS NULL THEN 'no_payload'"
            " WHEN d.leased_until > ? THEN 'in_flight'"
            " WHEN EXISTS (SELECT 1 FROM deliveries o WHERE o.destination = d.destination"
            " AND o.event_name = d.event_name AND o.event_id = d.event_id AND o.id != d.id"
            f" AND (o.created_at > ? OR o.updated_at > ?) AND o.status IN {blocking})"
            " THEN 'later_copy' ELSE 'candidate' END, COUNT(*)"
            f" FROM deliveries d {clause} GROUP BY 1"
        )
        cutoff = at - DEDUP_WINDOW_S
        async with self.reader.execute(sql, [*old_params, at, cutoff, cutoff, *params]) as cur:
            return {str(row[0]): int(row[1]) for row in await cur.fetchall()}

    async def queue_stats(self) -> dict[str, tuple[int, float | None]]:
        """Per destination: pending deliveries and when the oldest of them was created."""
        sql = (
            "SELECT destination, COUNT(*), MIN(created_at) FROM deliveries"
            " WHERE status IN ('queued', 'failed') GROUP BY destination"
        )
        async with self.reader.execute(sql) as cur:
            return {row[0]: (int(row[1]), row[2]) for row in await cur.fetchall()}

    async def window(self, since: float, until: float) -> list[WindowRow]:
        """Per destination and event name, the report's counts for events received in
        [since, until): in, sent, duplicate, dropped_consent, dropped_rule, dead, pending,
        deduplicable, then one count per match-key bit (pipeline.MATCH_KEYS order)."""
        keys = ", ".join(f"SUM((e.match_keys >> {bit}) & 1)" for bit in range(6))
        sql = (
            "SELECT d.destination, d.event_name, COUNT(*),"
            " SUM(d.status = 'sent'), SUM(d.status = 'duplicate'),"
            " SUM(d.status = 'dropped_consent'), SUM(d.status = 'dropped_rule'),"
            " SUM(d.status = 'dead'), SUM(d.status IN ('queued', 'failed')),"
            f" SUM(e.dedupable), {keys}"
            " FROM events e JOIN deliveries d ON d.event_row = e.id"
            " WHERE e.received_at >= ? AND e.received_at < ?"
            " GROUP BY d.destination, d.event_name ORDER BY d.destination, d.event_name"
        )
        async with self.reader.execute(sql, (since, until)) as cur:
            return [WindowRow(*row) for row in await cur.fetchall()]

    async def values(self, since: float, until: float) -> list[ValueRow]:
        """Per destination, event name and currency: the value sum of sent deliveries."""
        sql = (
            "SELECT d.destination, d.event_name, e.currency, SUM(CAST(e.value AS REAL))"
            " FROM events e JOIN deliveries d ON d.event_row = e.id"
            " WHERE e.received_at >= ? AND e.received_at < ? AND e.value IS NOT NULL"
            " AND d.status = 'sent' GROUP BY d.destination, d.event_name, e.currency"
        )
        async with self.reader.execute(sql, (since, until)) as cur:
            return [ValueRow(*row) for row in await cur.fetchall()]

    async def overlap(self, since: float, until: float) -> list[OverlapRow]:
        """Pixel and server copies per event name (docs/operations.md §6): rows of (event_name,
        kind, count, median lag), kind `backend`, `browser` or `both`."""
        async with self.reader.execute(OVERLAP, (since, until, DEDUP_WINDOW_S)) as cur:
            return [OverlapRow(*row) for row in await cur.fetchall()]

    async def hourly(self, since: float, until: float) -> list[HourlyRow]:
        """Deliveries per hour, destination and status, for the admin page's chart."""
        sql = (
            "SELECT CAST(e.received_at / 3600 AS INTEGER) * 3600, d.destination, d.status,"
            " COUNT(*) FROM events e JOIN deliveries d ON d.event_row = e.id"
            " WHERE e.received_at >= ? AND e.received_at < ?"
            " GROUP BY 1, 2, 3 ORDER BY 1"
        )
        async with self.reader.execute(sql, (since, until)) as cur:
            return [HourlyRow(*row) for row in await cur.fetchall()]

    async def attribution(
        self, event: str, since: float, until: float, window_s: float, first: bool
    ) -> AttributionRows:
        """docs/operations.md §6: the copies of `event` received in [since, until) (event_id, value,
        currency; first copy first), the touch each is credited to (event_id, channel,
        campaign), and touches per channel and campaign in the window."""
        params = (event, since, until, window_s, 1 if first else -1)
        async with self.reader.execute(CONVERSIONS, params[:3]) as cur:
            conversions = [ConversionRow(*row) for row in await cur.fetchall()]
        async with self.reader.execute(CREDITS, params) as cur:
            credits = [CreditRow(*row) for row in await cur.fetchall()]
        async with self.reader.execute(TOUCHES, params[1:3]) as cur:
            touches = [TouchCountRow(*row) for row in await cur.fetchall()]
        return AttributionRows(conversions, credits, touches)

    async def ping(self) -> None:
        """A write that reaches the file (a transaction that wrote nothing commits even on a
        full disk): storage takes writes (for /readyz)."""
        await self.write(_heartbeat)

    @property
    def commits(self) -> int:
        """Transactions committed since open (for tests and metrics)."""
        return self._ids.commits


@dataclass(frozen=True, slots=True)
class _Failure:
    error: BaseException = field()


async def _settle(fn: Callable[[sqlite3.Connection], Any], conn: sqlite3.Connection) -> Any:
    """What `fn(conn)` returns, after awaiting it if it is awaitable; or its exception."""
    try:
        result = fn(conn)
        if inspect.isawaitable(result):
            result = await result
    except Exception as exc:
        return _Failure(exc)
    return result


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """Another connection holds a lock this statement needs."""
    return (exc.sqlite_errorcode & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


async def _until_free(statement: Callable[[], T]) -> T:
    """Run `statement` on the write connection; while another process holds the lock it
    needs, sleep a few ms and try again, for up to `_BUSY_WAIT_S`."""
    deadline = time.monotonic() + _BUSY_WAIT_S
    delay = _BUSY_FIRST_SLEEP_S
    while True:
        try:
            return statement()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, _BUSY_MAX_SLEEP_S)


def _heartbeat(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT OR REPLACE INTO heartbeat (id, at) VALUES (1, ?)", (time.time(),))


def touch_columns(t: NewTouch) -> tuple[str, str | None, str | None]:
    """A touch as the columns both stores insert after the event's own."""
    return t.visitor, t.channel, t.campaign


def _secret(conn: sqlite3.Connection) -> bytes:
    """The visitor-key secret: made on first open, read ever after."""
    conn.execute(
        "INSERT OR IGNORE INTO store_secrets (name, value) VALUES ('visitor_key', ?)",
        (secrets.token_bytes(32),),
    )
    row = conn.execute("SELECT value FROM store_secrets WHERE name = 'visitor_key'").fetchone()
    return bytes(row[0])
