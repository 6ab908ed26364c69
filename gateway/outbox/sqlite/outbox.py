"""The SQLite backend: one file, one process that writes it (`storage.path`).

Every write goes through the one writer task of the group commit, `write` and the worker's
statements included: SQLite has one writer, and a transaction a group keeps fsyncs per group.

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
import functools
import inspect
import os
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar, overload

import aiosqlite

from gateway.outbox import plan
from gateway.outbox.base import OutboxBase, Row, Tx
from gateway.outbox.dialect import PENDING_SQL, Dialect, Style
from gateway.outbox.group import Failure, FnJob, log
from gateway.outbox.records import DEDUP_WINDOW_S, Added, DeliveryQuery, Lease, NewEvent
from gateway.outbox.sqlite.dedup import live_holders, requeue_statement
from gateway.outbox.sqlite.files import create_private, lock_file
from gateway.outbox.sqlite.schema import migrate
from gateway.outbox.statements import Statements

T = TypeVar("T")

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

# DEDUP_WINDOW_S beside the knobs above, for the white-box tests that read them off this module.
__all__ = ["DEDUP_WINDOW_S", "SqliteOutbox"]

# Durability first: WAL with a full sync on every commit survives a crash and a power cut.
# secure_delete overwrites erased payloads instead of leaving them in free pages.
_PRAGMAS: Final = (
    # First. This connection runs on the event loop: when another process (a CLI command)
    # holds the lock it must not wait in SQLite; `_until_free` sleeps and retries instead.
    "PRAGMA busy_timeout=0",
    "PRAGMA journal_mode=WAL",
    "PRAGMA secure_delete=ON",
)

SQL: Final = Statements(
    Dialect(
        Style.SQLITE,
        skip_locked="",
        collate="",
        value_sum="SUM(CAST(e.value AS REAL))",
        hour="CAST(e.received_at / 3600 AS INTEGER) * 3600",
    )
)

# next_attempt_at, created_at and updated_at all start as the event's received_at (?8).
_INSERT_EVENTS: Final = (
    "INSERT INTO events (id, event_id, event_name, source, event_time, received_at,"
    " dedupable, match_keys, value, currency, consent)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_DELIVERIES: Final = (
    "INSERT INTO deliveries (id, event_row, event_id, event_name, destination, status,"
    " event_time, next_attempt_at, message, duplicate_of, created_at, updated_at, payload)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?8, ?8, ?11)"
)
_INSERT_TOUCHES: Final = (
    "INSERT INTO touches (event_row, event_id, event_name, received_at, visitor,"
    " channel, campaign) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class SqliteTx:
    """`Tx` on the write connection (statements run on the loop's thread)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, *params: Any) -> int:
        """Run a statement; the rows it changed."""
        return self.conn.execute(sql, params).rowcount

    async def fetch(self, sql: str, *params: Any) -> list[Row]:
        """Run a statement; the rows it returned."""
        return self.conn.execute(sql, params).fetchall()

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run a statement once per row of parameters."""
        self.conn.executemany(sql, rows)


class SqliteOutbox(OutboxBase):
    """The outbox on SQLite. Open with `await SqliteOutbox.open(path)`; close with
    `await close()`. `reader` is the aiosqlite connection, for tests and tools that read."""

    sql = SQL

    def __init__(self, path: str, conn: sqlite3.Connection, reader: aiosqlite.Connection):
        super().__init__()
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
        self._next_event = self._next_delivery = 1
        """Row ids are counted here, not by SQLite: the group knows its ids before inserting,
        and no other process inserts (the file lock)."""
        self._commits = 0
        self._lock_fd: int | None = None
        self.visitor_secret = b""
        """The HMAC key of attribution's visitor keys, made once per file (set by `open`)."""

    @classmethod
    async def open(
        cls, path: str, synchronous: str = "full", *, exclusive: bool = False
    ) -> SqliteOutbox:
        """Open (creating if needed) the SQLite file, migrate, and start the writer.

        `exclusive` (what `serve` asks for) holds the file for the process's life: a second
        opener that asks too gets StoreLocked. The commands (`replay`, ...) do not ask."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        create_private(path)
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
            await _until_free(lambda: migrate(conn))
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
        store._start_writer()
        return store

    def _init_ids(self) -> None:
        row = self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
        self._next_event = (row[0] if row else 0) + 1
        row = self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM deliveries").fetchone()
        self._next_delivery = (row[0] if row else 0) + 1

    async def close(self) -> None:
        """Finish every queued write, then close both connections."""
        if not await self._stop_writer():
            return
        log.info("store.closed", commits=self._commits, adds=self.grouped)
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

    async def ping(self) -> None:
        """A write that reaches the file (a transaction that wrote nothing commits even on a
        full disk): the outbox takes writes (for /readyz)."""
        await self.write(_heartbeat)

    @property
    def commits(self) -> int:
        """Transactions committed since open (for tests and metrics)."""
        return self._commits

    # --- the writer --------------------------------------------------------------------------

    @overload
    async def write(self, fn: Callable[[sqlite3.Connection], Awaitable[T]]) -> T: ...
    @overload
    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...
    async def write(self, fn: Callable[[sqlite3.Connection], T | Awaitable[T]]) -> T:
        """Run `fn` inside the writer's next transaction and return its result after COMMIT.

        `fn` runs on the loop's thread; if it returns an awaitable, the writer awaits it and
        holds the transaction meanwhile (tests use that to hold the writer)."""
        self._check_open()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(FnJob(fn, future))
        return await future

    async def _transact(self, fn: Callable[[Tx], Awaitable[T]], *, one_statement: bool) -> T:
        return await self.write(lambda conn: fn(SqliteTx(conn)))

    async def _read(self, sql: str, *params: Any) -> list[Row]:
        async with self.reader.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def _commit_group(
        self, events: list[NewEvent], fns: list[FnJob]
    ) -> tuple[list[Added], list[Any]]:
        conn = self._conn
        ids_before = (self._next_event, self._next_delivery)
        loop = asyncio.get_running_loop()
        try:
            await _until_free(lambda: conn.execute("BEGIN IMMEDIATE"))
            rows = sum(1 + len(e.deliveries) for e in events)
            if rows > _ROWS_ON_LOOP and self._committer is not None:
                # A group of big API batches: off the loop, or hits wait behind it (20 batches
                # of 1,000 events to 3 destinations held the loop for over a second).
                added = await loop.run_in_executor(self._committer, self._insert, events)
            else:
                added = self._insert(events) if events else []
            results = [await _settle(job.fn, conn) for job in fns]
            if self._committer is None:
                conn.execute("COMMIT")
            else:
                await loop.run_in_executor(self._committer, conn.execute, "COMMIT")
        except Exception:
            self._next_event, self._next_delivery = ids_before
            with contextlib.suppress(Exception):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            raise
        self._commits += 1
        return added, results

    def _insert(self, events: Sequence[NewEvent]) -> list[Added]:
        """One group's rows, inside its transaction: ids counted here, holders looked up."""
        live = live_holders(self._conn, plan.dedup_keys(events))
        first_event, first_delivery = self._next_event, self._next_delivery
        n_deliveries = sum(len(e.deliveries) for e in events)
        self._next_event += len(events)
        self._next_delivery += n_deliveries
        planned = plan.assign(
            events,
            range(first_event, self._next_event),
            iter(range(first_delivery, self._next_delivery)),
        )
        rows = plan.rows(planned, plan.holders(planned, live))
        self._conn.executemany(_INSERT_EVENTS, rows.events)
        self._conn.executemany(_INSERT_DELIVERIES, rows.deliveries)
        if rows.touches:
            self._conn.executemany(_INSERT_TOUCHES, rows.touches)
        return rows.added

    # --- what differs from PostgreSQL ----------------------------------------------------------

    async def _prune_deliveries(self, tx: Tx, older_than: float, batch: int) -> int:
        sql = f"DELETE FROM deliveries WHERE id IN ({self.sql.prunable_deliveries})"
        return await tx.execute(sql, older_than, batch)

    async def extend_leases(self, leases: Sequence[Lease], until: float) -> list[int]:
        """Move the leases of rows still pending and still held as written (`leased_until`
        unchanged since) to `until`; returns the ids extended. A row finished meanwhile (its
        lease is 0) or taken by another claim is left alone."""
        if not leases:
            return []

        def run(conn: sqlite3.Connection) -> list[int]:
            sql = (
                "UPDATE deliveries SET leased_until = ? WHERE id = ? AND leased_until = ?"
                f" AND status IN {PENDING_SQL}"
            )
            return [i for i, held in leases if conn.execute(sql, (until, i, held)).rowcount]

        return await self.write(run)

    async def return_leases(self, leases: Sequence[Lease]) -> int:
        """Give rows back to the queue unsent (a stopping worker's): due again at once, for
        any worker. Only leases still held as written; returns how many."""
        if not leases:
            return 0
        sql = (
            "UPDATE deliveries SET leased_until = 0 WHERE id = ? AND leased_until = ?"
            f" AND status IN {PENDING_SQL}"
        )
        return await self.write(lambda conn: conn.executemany(sql, leases).rowcount)

    async def release_leases(self) -> int:
        """On boot: every lease goes back to the queue. One `serve` holds the file, so any
        lease left is a dead process's."""
        sql = "UPDATE deliveries SET leased_until = 0 WHERE leased_until > 0"
        return await self.write(lambda conn: conn.execute(sql).rowcount)

    async def requeue(self, query: DeliveryQuery, now: float | None = None) -> int:
        """Put dead or failed deliveries matching `query` back in the queue, due now.

        Never one that would be sent twice: not a row in flight (leased), not one whose event
        another delivery of the same key has taken (queued, failed or sent within 48 hours: a
        later copy went out while this one lay dead), and of several matching rows of one key
        only the newest."""
        at = time.time() if now is None else now
        bound = requeue_statement(query, at)
        return await self.write(lambda conn: conn.execute(bound.sql, bound.values).rowcount)


async def _settle(fn: Callable[[sqlite3.Connection], Any], conn: sqlite3.Connection) -> Any:
    """What `fn(conn)` returns, after awaiting it if it is awaitable; or its exception."""
    try:
        result = fn(conn)
        if inspect.isawaitable(result):
            result = await result
    except Exception as exc:
        return Failure(exc)
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


def _secret(conn: sqlite3.Connection) -> bytes:
    """The visitor-key secret: made on first open, read ever after."""
    conn.execute(
        "INSERT OR IGNORE INTO store_secrets (name, value) VALUES ('visitor_key', ?)",
        (secrets.token_bytes(32),),
    )
    row = conn.execute("SELECT value FROM store_secrets WHERE name = 'visitor_key'").fetchone()
    return bytes(row[0])
