"""The PostgreSQL backend: many gateway replicas on one shared database (`storage.url`).

The same interface, records and semantics as SQLite's, by the same shared code; what differs:

- Only `add` goes through the writer task (one per replica): PostgreSQL takes concurrent
  writers, so the worker's statements and `write` run on pooled connections of their own,
  retried where that is safe (see `_write`).
- Ids come from the identity sequences; dedup is race-free across replicas through
  `dedup_keys` (postgres/dedup.py); picking rows to change skips those another replica holds
  (`FOR UPDATE SKIP LOCKED`).
- `release_leases` frees only expired leases: on a shared database the other leases belong to
  replicas that are alive and sending (see its docstring).
- Sets travel as arrays and come back out of unnest(): one statement for a whole group.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

import asyncpg  # type: ignore[import-untyped]

from gateway.outbox import plan
from gateway.outbox.base import OutboxBase, Row, Tx
from gateway.outbox.dialect import PENDING_SQL, Dialect, Style
from gateway.outbox.group import FnJob, log
from gateway.outbox.postgres import dedup
from gateway.outbox.postgres.schema import migrate
from gateway.outbox.records import DEDUP_WINDOW_S, Added, DeliveryQuery, Lease, NewEvent
from gateway.outbox.statements import Statements
from gateway.outbox.where import where

T = TypeVar("T")

_ATTEMPTS: Final = 3
"""Tries of a write that failed in a way that is safe to try again (see `_write`)."""
_ABORTED: Final = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
"""PostgreSQL rolled the transaction back: nothing of it was written."""
_CONNECTION_LOST: Final = (
    asyncpg.PostgresConnectionError,
    asyncpg.InternalClientError,  # what asyncpg raised, in tests, on a terminated connection
    asyncpg.AdminShutdownError,
    asyncpg.CannotConnectNowError,
    OSError,
)
"""The connection broke (a server restart, a failover, an idle connection cut)."""

# SQLite's CAST(text AS REAL) reads a non-number as 0; PostgreSQL's cast raises, which would
# fail the whole report. So: numbers (exponent at most two digits, inside float8's range) are
# cast, anything else counts 0. Values come from finite decimals (sources/coerce.py) anyway.
SQL: Final = Statements(
    Dialect(
        Style.POSTGRES,
        skip_locked="\n    FOR UPDATE SKIP LOCKED",
        # Byte order, as SQLite sorts, whatever the database's locale.
        collate=' COLLATE "C"',
        value_sum=r"""SUM(CASE WHEN e.value ~ '^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d{1,2})?\s*$'
                THEN e.value::float8 ELSE 0 END)""",
        # trunc(), not a cast: CAST(float AS bigint) rounds in PostgreSQL, truncates in SQLite.
        hour="trunc(e.received_at / 3600)::bigint * 3600",
    )
)
_CLAIM: Final = SQL.claim

# IDs are drawn from the identity sequences before inserting, so the group knows each event's
# and delivery's id up front (RETURNING does not promise to keep the input order).
_ALLOCATE_IDS: Final = """
SELECT ARRAY(SELECT nextval(pg_get_serial_sequence('events', 'id')::regclass)
             FROM generate_series(1, $1::int)),
       ARRAY(SELECT nextval(pg_get_serial_sequence('deliveries', 'id')::regclass)
             FROM generate_series(1, $2::int))
"""
_INSERT_EVENTS: Final = """
INSERT INTO events (id, event_id, event_name, source, event_time, received_at, dedupable,
                    match_keys, value, currency, consent)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                     $6::float8[], $7::bool[], $8::int[], $9::text[], $10::text[], $11::text[])
"""
# next_attempt_at, created_at and updated_at all start as the event's received_at.
_INSERT_DELIVERIES: Final = """
INSERT INTO deliveries (id, event_row, event_id, event_name, destination, status, event_time,
                        next_attempt_at, message, duplicate_of, created_at, updated_at, payload)
SELECT id, event_row, event_id, event_name, destination, status, event_time,
       received_at, message, duplicate_of, received_at, received_at, payload
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::bigint[], $8::float8[], $9::text[], $10::bigint[], $11::bytea[])
    AS t (id, event_row, event_id, event_name, destination, status, event_time, received_at,
          message, duplicate_of, payload)
"""
_INSERT_TOUCHES: Final = """
INSERT INTO touches (event_row, event_id, event_name, received_at, visitor, channel, campaign)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::float8[], $5::text[],
                     $6::text[], $7::text[])
"""

# A lease is extended or returned only while it is still as its holder wrote it: a row that
# was finished (lease 0) or that another replica claimed after a stall is not touched.
_EXTEND_LEASES: Final = f"""
UPDATE deliveries AS d SET leased_until = $1
FROM unnest($2::bigint[], $3::float8[]) AS l (id, held)
WHERE d.id = l.id AND d.leased_until = l.held AND d.status IN {PENDING_SQL}
RETURNING d.id
"""
_RETURN_LEASES: Final = f"""
UPDATE deliveries AS d SET leased_until = 0
FROM unnest($1::bigint[], $2::float8[]) AS l (id, held)
WHERE d.id = l.id AND d.leased_until = l.held AND d.status IN {PENDING_SQL}
"""
_RELEASE_EXPIRED: Final = f"""
UPDATE deliveries SET leased_until = 0
WHERE id IN (
    SELECT id FROM deliveries
    WHERE status IN {PENDING_SQL} AND leased_until > 0 AND leased_until <= $1
    FOR UPDATE SKIP LOCKED)
"""

# Every replica opens with the same secret: the first to insert makes it. Read in a statement
# of its own, so its snapshot sees a row another replica committed while this insert waited.
_MAKE_VISITOR_KEY: Final = """
INSERT INTO store_secrets (name, value) VALUES ('visitor_key', $1) ON CONFLICT (name) DO NOTHING
"""
_READ_VISITOR_KEY: Final = "SELECT value FROM store_secrets WHERE name = 'visitor_key'"


class PgTx:
    """`Tx` on a pooled asyncpg connection."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def execute(self, sql: str, *params: Any) -> int:
        """Run a statement; the rows it changed."""
        return _rowcount(await self.conn.execute(sql, *params))

    async def fetch(self, sql: str, *params: Any) -> list[Row]:
        """Run a statement; the rows it returned."""
        return list(await self.conn.fetch(sql, *params))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run a statement once per row of parameters (asyncpg: all or none)."""
        await self.conn.executemany(sql, rows)


class PostgresOutbox(OutboxBase):
    """The outbox on PostgreSQL. Open with `await PostgresOutbox.open(url)`; close with
    `await close()`. `pool` is the asyncpg pool, for tests and tools that read raw rows."""

    sql = SQL

    def __init__(self, pool: Any) -> None:
        super().__init__()
        self.pool = pool
        self._commits = 0
        self.visitor_secret = b""
        """The HMAC key of attribution's visitor keys, one for all replicas (set by `open`)."""

    @classmethod
    async def open(
        cls, url: str, synchronous: str = "full", *, min_size: int = 1, max_size: int = 10
    ) -> PostgresOutbox:
        """Connect a pool to `url` (postgresql://...), migrate, and start the writer.

        `synchronous="normal"` sets `synchronous_commit=off` for this gateway's sessions, the
        nearest thing to SQLite's NORMAL: an acknowledged event survives the gateway's crash,
        but the database server's crash may lose its last fraction of a second of commits.
        """
        settings = {"application_name": "tag-gateway"}
        if synchronous == "normal":
            settings["synchronous_commit"] = "off"
        pool = await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, server_settings=settings
        )
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
                await conn.execute(_MAKE_VISITOR_KEY, secrets.token_bytes(32))
                secret = bytes(await conn.fetchval(_READ_VISITOR_KEY))
        except BaseException:
            await pool.close()
            raise
        store = cls(pool)
        store.visitor_secret = secret
        store._start_writer()
        return store

    async def close(self) -> None:
        """Finish every queued write, then close the pool."""
        if await self._stop_writer():
            await self.pool.close()

    async def ping(self) -> None:
        """A trivial round trip, for /readyz: raises when the database is unreachable."""
        try:
            await self.pool.fetchval("SELECT 1")
        except Exception as exc:
            self.write_health.failed(exc)
            raise
        self.write_health.succeeded()

    @property
    def commits(self) -> int:
        """Transactions committed since open (for tests and metrics)."""
        return self._commits

    # --- writes ------------------------------------------------------------------------------

    async def write(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run `fn(connection)` in a transaction of its own; its result after COMMIT.

        Unlike SQLite's, this does not join the `add` group: PostgreSQL takes concurrent
        writers, so only hits need the writer task."""
        self._check_open()
        return await self._write(fn)

    async def _transact(self, fn: Callable[[Tx], Awaitable[T]], *, one_statement: bool) -> T:
        return await self._write(lambda conn: fn(PgTx(conn)), transaction=not one_statement)

    async def _read(self, sql: str, *params: Any) -> list[Row]:
        return list(await self.pool.fetch(sql, *params))

    async def _write(self, fn: Callable[[Any], Awaitable[T]], *, transaction: bool = True) -> T:
        """Run `fn` on a pooled connection, in a transaction unless it is one statement.

        Tried again (on a fresh connection from the pool) when PostgreSQL aborted it for a
        deadlock or a serialization failure, or when the connection broke before COMMIT was
        sent. A connection lost during COMMIT, or during a lone statement, is not retried: the
        write may have happened, and the caller must not be told it did not.
        """
        attempt = 0
        while True:
            attempt += 1
            before_commit = transaction
            try:
                async with self.pool.acquire() as conn:
                    if transaction:
                        async with conn.transaction():
                            result = await fn(conn)
                            before_commit = False
                    else:
                        result = await fn(conn)
            except Exception as exc:
                lost = before_commit and isinstance(exc, _CONNECTION_LOST)
                if attempt >= _ATTEMPTS or not (lost or isinstance(exc, _ABORTED)):
                    self.write_health.failed(exc)
                    raise
                log.warning("store.retry", error=type(exc).__name__, attempt=attempt)
                await asyncio.sleep(0.05 * attempt)
                continue
            self._commits += 1
            self.write_health.succeeded()
            return result

    async def _commit_group(
        self, events: list[NewEvent], fns: list[FnJob]
    ) -> tuple[list[Added], list[Any]]:
        return await self._write(lambda conn: self._insert(conn, events)), []

    async def _insert(self, conn: Any, events: Sequence[NewEvent]) -> list[Added]:
        """One group's rows, inside its transaction."""
        if not events:
            return []
        n_deliveries = sum(len(e.deliveries) for e in events)
        event_ids, delivery_ids = await conn.fetchrow(_ALLOCATE_IDS, len(events), n_deliveries)
        # Ascending, so ids follow the order of arrival within the group, as in SQLite.
        planned = plan.assign(events, sorted(event_ids), iter(sorted(delivery_ids)))
        live = await dedup.live_holders(conn, planned.firsts)
        rows = plan.rows(planned, plan.holders(planned, live))
        await conn.execute(_INSERT_EVENTS, *plan.columns(rows.events, 11))
        await conn.execute(_INSERT_DELIVERIES, *plan.columns(rows.deliveries, 11))
        if rows.touches:
            await conn.execute(_INSERT_TOUCHES, *plan.columns(rows.touches, 7))
        return rows.added

    # --- what differs from SQLite --------------------------------------------------------------

    async def _prune_deliveries(self, tx: Tx, older_than: float, batch: int) -> int:
        sql = dedup.PRUNE_DELIVERIES.format(prunable=self.sql.prunable_deliveries)
        rows = await tx.fetch(sql, older_than, batch)
        return int(rows[0][0])

    async def extend_leases(self, leases: Sequence[Lease], until: float) -> list[int]:
        """Move leases still held as written to `until`; returns the ids extended (a row
        finished meanwhile, or claimed by another replica after a stall, is left alone)."""
        if not leases:
            return []
        self._check_open()
        ids, held = [lease[0] for lease in leases], [lease[1] for lease in leases]
        rows = await self._write(
            lambda conn: conn.fetch(_EXTEND_LEASES, until, ids, held), transaction=False
        )
        return [int(r[0]) for r in rows]

    async def return_leases(self, leases: Sequence[Lease]) -> int:
        """Give rows back to the queue unsent, if still held as written; returns how many."""
        if not leases:
            return 0
        self._check_open()
        ids, held = [lease[0] for lease in leases], [lease[1] for lease in leases]
        status = await self._write(
            lambda conn: conn.execute(_RETURN_LEASES, ids, held), transaction=False
        )
        return _rowcount(status)

    async def release_leases(self) -> int:
        """On boot: clear leases that have run out; returns how many.

        Unlike SQLite's, this never frees a live lease: on a shared database it may belong to
        another replica that is sending the row right now. A crashed replica's rows come back
        when their lease ends (`claim` treats `leased_until <= now` as free); clearing the
        expired ones changes nothing for `claim`, it only counts what a crash left behind.
        """
        self._check_open()
        status = await self._write(
            lambda conn: conn.execute(_RELEASE_EXPIRED, time.time()), transaction=False
        )
        return _rowcount(status)

    async def requeue(self, query: DeliveryQuery, now: float | None = None) -> int:
        """Put dead or failed deliveries matching `query` back in the queue, due now (never
        one that would be sent twice: see postgres/dedup.py's REPLAY)."""
        self._check_open()
        at = time.time() if now is None else now
        bind = SQL.dialect.params(at)
        candidates_sql = dedup.REPLAY_CANDIDATES.format(where=where(query, bind))

        async def run(conn: Any) -> int:
            candidates = await conn.fetch(candidates_sql, *bind.values)
            if not candidates:
                return 0
            by_key = {(c[2], c[3], c[4]): c for c in candidates}
            keys = sorted(by_key)  # the order live_holders locks in
            ids = [by_key[k]["id"] for k in keys]
            await conn.fetch(dedup.DEDUP_CLAIM, *dedup.key_columns(keys), ids, [at] * len(keys))
            status = await conn.execute(
                dedup.REPLAY, at, at - DEDUP_WINDOW_S, ids, [by_key[k]["status"] for k in keys]
            )
            return _rowcount(status)

        return await self._write(run)


def _rowcount(status: str) -> int:
    """The row count of a command tag such as 'UPDATE 3'."""
    return int(status.rsplit(" ", 1)[-1])
