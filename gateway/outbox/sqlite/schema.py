"""The SQLite file's schema, as numbered migrations (PostgreSQL's are in postgres/schema.py).

`schema_version` records what was applied. A file written before migrations were numbered has
the tables of version 1 and no `schema_version`: version 1 is all IF NOT EXISTS, so it applies
to such a file as a no-op and is recorded, and later versions apply from there.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Final

import structlog

log = structlog.get_logger("gateway.outbox.sqlite")

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 1: the outbox, the delivery log, the heartbeat, attribution's touches and the secrets.
    (
        """CREATE TABLE IF NOT EXISTS events (
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
        )""",
        "CREATE INDEX IF NOT EXISTS events_received ON events (received_at)",
        """CREATE TABLE IF NOT EXISTS deliveries (
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
        )""",
        # The states of this partial index are written out: an index's WHERE is part of the
        # schema, and must stay as created even if the pending states ever change.
        """CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (destination, next_attempt_at)
            WHERE status IN ('queued', 'failed')""",
        """CREATE INDEX IF NOT EXISTS deliveries_key
            ON deliveries (destination, event_name, event_id)""",
        "CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_row)",
        "CREATE INDEX IF NOT EXISTS deliveries_created ON deliveries (created_at)",
        "CREATE TABLE IF NOT EXISTS heartbeat (id INTEGER PRIMARY KEY, at REAL NOT NULL)",
        # Attribution (docs/operations.md §6): a row per visitor key of a consented event, its
        # channel and campaign when the event is a touch. `visitor` is an HMAC, never the key.
        """CREATE TABLE IF NOT EXISTS touches (
            id INTEGER PRIMARY KEY,
            event_row INTEGER NOT NULL,
            event_id TEXT NOT NULL,
            event_name TEXT NOT NULL,
            received_at REAL NOT NULL,
            visitor TEXT NOT NULL,
            channel TEXT,
            campaign TEXT
        )""",
        """CREATE INDEX IF NOT EXISTS touches_visitor ON touches (visitor, received_at)
            WHERE channel IS NOT NULL""",
        "CREATE INDEX IF NOT EXISTS touches_received ON touches (received_at)",
        "CREATE TABLE IF NOT EXISTS store_secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
    ),
)
"""Schema migrations, applied in order; version N is MIGRATIONS[N - 1]. Append, never edit."""

SCHEMA: Final = ";\n".join(s for m in MIGRATIONS for s in m) + ";\n"
"""Every migration as one script, for tools that fill a file directly (bench/); opening the
file afterwards records the versions (every statement of version 1 is IF NOT EXISTS)."""

_VERSIONS: Final = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied_at REAL NOT NULL
)"""


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this file lacks, in one write transaction; its schema version.

    BEGIN IMMEDIATE first, so two processes opening the file at once apply them once: the
    second waits for the write lock (the caller retries while it is busy), then finds them
    applied. Nothing is changed before it, so a retry redoes nothing."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_VERSIONS)
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        current = int(row[0])
        if current > len(MIGRATIONS):
            # A newer release migrated; migrations only add, so this one can still run.
            log.warning("store.schema_newer", version=current, known=len(MIGRATIONS))
        for version in range(current + 1, len(MIGRATIONS) + 1):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (version, time.time()),
            )
            current = version
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return current
