"""How SQLite finds who holds a dedup key, and replays without breaking the rule.

SQLite has one writer, so a key's holder is simply its first live delivery row: no other
transaction can insert a copy between the look-up and the insert (PostgreSQL needs a table of
keys for that, see postgres/dedup.py).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any, Final

from gateway.outbox.dialect import BLOCKS_DEDUP_SQL, Params, Style
from gateway.outbox.plan import Key
from gateway.outbox.records import DEDUP_WINDOW_S, DeliveryQuery, Status
from gateway.outbox.statements import later_copy
from gateway.outbox.where import where

_KEYS_PER_QUERY: Final = 300


def live_holders(conn: sqlite3.Connection, keys: Sequence[Key]) -> dict[Key, int]:
    """The first live delivery of each key seen within the dedup window."""
    found: dict[Key, int] = {}
    cutoff = time.time() - DEDUP_WINDOW_S
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        chunk = keys[start : start + _KEYS_PER_QUERY]
        values = ",".join("(?, ?, ?)" for _ in chunk)
        params: list[Any] = [v for k in chunk for v in k]
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
            f" AND d.status IN {BLOCKS_DEDUP_SQL}) FROM k"
        )
        for dest, name, event_id, first in conn.execute(sql, params):
            if first is not None:
                found[(dest, name, event_id)] = first
    return found


def requeue_statement(query: DeliveryQuery, at: float) -> Params:
    """One UPDATE that re-queues, of each key's rows matching `query`, the newest, unless it
    is in flight or a later copy has taken its key (`statements.later_copy`)."""
    bind = Params(Style.SQLITE, at, at - DEDUP_WINDOW_S)
    clause = where(query, bind)
    bind.sql = (
        f"UPDATE deliveries SET status = '{Status.QUEUED}', next_attempt_at = ?1,"
        " leased_until = 0, updated_at = ?1, message = 'replayed: ' || COALESCE(message, '')"
        " WHERE id IN (SELECT MAX(d.id) FROM deliveries AS d"
        f" {clause} AND d.payload IS NOT NULL AND d.leased_until <= ?1"
        f" AND NOT {later_copy('?2')}"
        " GROUP BY d.destination, d.event_name, d.event_id)"
    )
    return bind
