"""How PostgreSQL finds who holds a dedup key, race-free across replicas, and replays by it.

SQLite has one writer and finds a key's holder among the delivery rows. Here several replicas
insert at once, so each key is a row of `dedup_keys` with a primary key: the key row is the
lock, taken in one order by every replica (sorted keys), ingest and replay alike.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final

from gateway.outbox.dialect import BLOCKS_DEDUP_SQL
from gateway.outbox.plan import Key
from gateway.outbox.records import DEDUP_WINDOW_S, Status
from gateway.outbox.statements import later_copy

_LIVE: Final = BLOCKS_DEDUP_SQL

# Dedup, step 1: take each key that is free; lock each that is not (ON CONFLICT DO UPDATE locks
# the row even where its WHERE is false). The key row is the lock: a replica inserting a key
# another has just inserted waits for that transaction, then sees its committed row.
DEDUP_CLAIM: Final = """
INSERT INTO dedup_keys AS k (destination, event_name, event_id, delivery_id, created_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::float8[])
ON CONFLICT (destination, event_name, event_id) DO UPDATE
    SET delivery_id = excluded.delivery_id, created_at = excluded.created_at
    WHERE FALSE
RETURNING k.destination, k.event_name, k.event_id
"""
# Step 2, for the keys step 1 did not get: does the holder still block? A new statement, so a
# new snapshot that sees every committed holder; the key rows stay locked by step 1. It blocks
# while live and within 48 hours of arriving or of its last send, attempt or replay (plan.py).
DEDUP_HOLDERS: Final = f"""
SELECT k.destination, k.event_name, k.event_id, k.delivery_id,
       COALESCE(d.status IN {_LIVE} AND (d.created_at > $4 OR d.updated_at > $4), FALSE)
FROM unnest($1::text[], $2::text[], $3::text[]) AS q (destination, event_name, event_id)
JOIN dedup_keys AS k USING (destination, event_name, event_id)
LEFT JOIN deliveries AS d ON d.id = k.delivery_id
"""
# Step 3: keys whose holder no longer blocks (dead, dropped, pruned, past its 48 hours) pass to
# this group's first copy.
DEDUP_TAKE_OVER: Final = """
INSERT INTO dedup_keys AS k (destination, event_name, event_id, delivery_id, created_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::float8[])
ON CONFLICT (destination, event_name, event_id) DO UPDATE
    SET delivery_id = excluded.delivery_id, created_at = excluded.created_at
"""

# Replay, as SQLite's requeue, in three statements of one transaction: pick candidates (the
# newest matching row of each key, not in flight); lock their dedup keys with dedup step 1, in
# the ingest's own order, so an ingest of the same key on another replica either committed
# before (and the next statement sees its copy) or waits for this one (and finds the replayed
# row holding the key); then re-queue those still eligible, every condition checked again on
# the row itself. Keys before rows, as the ingest; finish touches rows only.
REPLAY_CANDIDATES: Final = """
SELECT DISTINCT ON (d.destination, d.event_name, d.event_id)
       d.id, d.status, d.destination, d.event_name, d.event_id
FROM deliveries AS d
{where} AND d.payload IS NOT NULL AND d.leased_until <= $1
ORDER BY d.destination, d.event_name, d.event_id, d.id DESC
"""
REPLAY: Final = f"""
WITH replayed AS (
    UPDATE deliveries AS d SET status = '{Status.QUEUED}', next_attempt_at = $1, leased_until = 0,
        updated_at = $1, message = 'replayed: ' || COALESCE(d.message, '')
    FROM unnest($3::bigint[], $4::text[]) AS c (id, status)
    WHERE d.id = c.id AND d.status = c.status AND d.payload IS NOT NULL
      AND d.leased_until <= $1
      AND NOT {later_copy("$2")}
    RETURNING d.destination, d.event_name, d.event_id, d.id
)
UPDATE dedup_keys AS k SET delivery_id = r.id, created_at = $1
FROM replayed AS r
WHERE (k.destination, k.event_name, k.event_id) = (r.destination, r.event_name, r.event_id)
"""

# A pruned row's dedup key goes with it (in SQLite the key is the row itself), which bounds
# dedup_keys.
PRUNE_DELIVERIES: Final = """
WITH gone AS (
    DELETE FROM deliveries WHERE id IN ({prunable})
    RETURNING id
), keys AS (
    DELETE FROM dedup_keys WHERE delivery_id IN (SELECT id FROM gone)
)
SELECT COUNT(*) FROM gone
"""


def key_columns(keys: Sequence[Key]) -> tuple[list[str], list[str], list[str]]:
    """Keys as the three arrays the statements unnest."""
    return [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]


async def live_holders(conn: Any, firsts: dict[Key, tuple[int, float]]) -> dict[Key, int]:
    """For each key an earlier live delivery (from any replica) holds, that delivery; every
    other key passes to this group's first copy, and is locked until COMMIT."""
    if not firsts:
        return {}
    # One lock order for every replica, so two groups sharing keys cannot deadlock.
    keys = sorted(firsts)
    cutoff = time.time() - DEDUP_WINDOW_S
    ours = [firsts[k][0] for k in keys], [firsts[k][1] for k in keys]
    won = {tuple(r) for r in await conn.fetch(DEDUP_CLAIM, *key_columns(keys), *ours)}
    lost = [k for k in keys if k not in won]
    if not lost:
        return {}
    live: dict[Key, int] = {}
    for dest, name, event_id, holder, blocks in await conn.fetch(
        DEDUP_HOLDERS, *key_columns(lost), cutoff
    ):
        if blocks:
            live[(dest, name, event_id)] = int(holder)
    # Holders that are dead, dropped or pruned no longer block.
    free = [k for k in lost if k not in live]
    if free:
        ids, created = [firsts[k][0] for k in free], [firsts[k][1] for k in free]
        await conn.execute(DEDUP_TAKE_OVER, *key_columns(free), ids, created)
    return live
