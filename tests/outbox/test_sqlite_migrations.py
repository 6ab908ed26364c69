"""SQLite's numbered migrations, on a file written before they were numbered."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from gateway.outbox import NewDelivery, NewEvent, SqliteOutbox, Status

# The schema as the release before numbered migrations created it (gateway/store.py's SCHEMA),
# copied as it was: the file under test must look exactly like one that release wrote.
OLD_DDL = """
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


def _old_file(path: Path, now: float) -> None:
    """A store file as the old release left it: its schema, one event, one queued delivery."""
    conn = sqlite3.connect(path)
    conn.executescript(OLD_DDL)
    conn.execute(
        "INSERT INTO events (id, event_id, event_name, source, event_time, received_at,"
        " dedupable, match_keys) VALUES (7, 'old-1', 'Purchase', 'meta_pixel', ?, ?, 1, 0)",
        (int(now), now),
    )
    conn.execute(
        "INSERT INTO deliveries (id, event_row, event_id, event_name, destination, status,"
        " event_time, next_attempt_at, created_at, updated_at, payload)"
        " VALUES (11, 7, 'old-1', 'Purchase', 'meta', 'queued', ?, ?, ?, ?, X'7B7D')",
        (int(now), now, now, now),
    )
    conn.commit()
    conn.close()


def _event(event_id: str, now: float) -> NewEvent:
    return NewEvent(
        event_id=event_id,
        event_name="Purchase",
        source="meta_pixel",
        event_time=int(now),
        received_at=now,
        dedupable=True,
        match_keys=0,
        deliveries=[NewDelivery("meta", Status.QUEUED, b"{}")],
    )


async def _versions(outbox: SqliteOutbox) -> list[int]:
    async with outbox.reader.execute("SELECT version FROM schema_version ORDER BY 1") as cur:
        return [int(row[0]) for row in await cur.fetchall()]


async def test_a_file_of_the_old_schema_opens_migrated_and_keeps_working(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    now = time.time()
    _old_file(path, now)
    outbox = await SqliteOutbox.open(str(path))
    try:
        assert await _versions(outbox) == [1]
        # The old row is still due, and still holds its dedup key.
        claimed = await outbox.claim("meta", 10, 30.0, now=now + 1)
        assert [(c.id, c.payload) for c in claimed] == [(11, b"{}")]
        again, new = await outbox.add([_event("old-1", now + 2), _event("new-1", now + 2)])
        assert (again.duplicates, again.deliveries) == (1, ((12, 11),))
        # Ids go on from the old file's.
        assert (again.row, new.row, new.deliveries) == (8, 9, ((13, None),))
    finally:
        await outbox.close()


async def test_opening_a_migrated_file_again_applies_nothing(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    outbox = await SqliteOutbox.open(str(path))
    await outbox.add([_event("e-1", time.time())])
    await outbox.close()
    outbox = await SqliteOutbox.open(str(path))
    try:
        assert await _versions(outbox) == [1]
        assert len(await outbox.claim("meta", 10, 30.0)) == 1
    finally:
        await outbox.close()
