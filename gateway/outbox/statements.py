"""The statements both backends run, written once (`?N` placeholders, `{...}` where a dialect
differs: see `dialect.Dialect`). `Statements(dialect)` renders them for one backend.

Timestamps are epoch seconds (REAL, DOUBLE PRECISION), so either backend returns the same
numbers. Sets of states come from `Status`, never typed out.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from gateway.outbox.dialect import BLOCKS_DEDUP_SQL, PENDING_SQL, Dialect, Params
from gateway.outbox.records import MATCH_KEY_BITS, DeliveryQuery, Status
from gateway.outbox.where import too_old, where

# Lease up to ?4 due rows, oldest due first. On PostgreSQL, rows another replica is claiming
# right now are passed over, not waited for; one it claimed and committed is re-checked against
# the WHERE and is no longer due.
_CLAIM: Final = f"""
UPDATE deliveries SET leased_until = ?1
WHERE id IN (
    SELECT id FROM deliveries
    WHERE destination = ?2 AND status IN {PENDING_SQL}
      AND next_attempt_at <= ?3 AND leased_until <= ?3
    ORDER BY next_attempt_at, id
    LIMIT ?4{{skip_locked}})
RETURNING id, payload, attempts, event_time, first_attempt_at, leased_until
"""

# One row per outcome (executemany): the lease is released, the first attempt time kept.
_FINISH: Final = """
UPDATE deliveries SET
    status = ?1, attempts = ?2, next_attempt_at = ?3, http_status = ?4, message = ?5,
    latency_ms = ?6, first_attempt_at = COALESCE(first_attempt_at, ?7), updated_at = ?8,
    leased_until = 0, payload = CASE WHEN ?9 THEN NULL ELSE payload END
WHERE id = ?10
"""

# Retention: final rows created before ?1, in batches of ?2 (replicas prune at the same time:
# on PostgreSQL each takes its own batch).
_PRUNABLE_DELIVERIES: Final = f"""
SELECT id FROM deliveries
WHERE created_at < ?1 AND status NOT IN {PENDING_SQL}
LIMIT ?2{{skip_locked}}
"""
_PRUNE_EVENTS: Final = """
DELETE FROM events WHERE id IN (
    SELECT e.id FROM events AS e
    WHERE e.received_at < ?1
      AND NOT EXISTS (SELECT 1 FROM deliveries AS d WHERE d.event_row = e.id)
    LIMIT ?2{skip_locked})
"""
_PRUNE_TOUCHES: Final = """
DELETE FROM touches WHERE id IN (
    SELECT id FROM touches WHERE received_at < ?1 LIMIT ?2{skip_locked})
"""

_NEXT_DUE: Final = f"""
SELECT MIN(next_attempt_at) FROM deliveries
WHERE destination = ?1 AND status IN {PENDING_SQL}
"""

_QUEUE_STATS: Final = f"""
SELECT destination, COUNT(*), MIN(created_at) FROM deliveries
WHERE status IN {PENDING_SQL}
GROUP BY destination
"""

_KEY_SUMS: Final = ", ".join(f"SUM((e.match_keys >> {bit}) & 1)" for bit in range(MATCH_KEY_BITS))
"""One count per match-key bit (pipeline.MATCH_KEYS order)."""


def _count(status: Status) -> str:
    return f"COUNT(*) FILTER (WHERE d.status = '{status}')"


# Per destination and event name, for events received in [?1, ?2): in, sent, duplicate,
# dropped_consent, dropped_rule, dead, pending, deduplicable, one count per match-key bit.
_WINDOW: Final = f"""
SELECT d.destination, d.event_name, COUNT(*),
       {_count(Status.SENT)}, {_count(Status.DUPLICATE)},
       {_count(Status.DROPPED_CONSENT)}, {_count(Status.DROPPED_RULE)}, {_count(Status.DEAD)},
       COUNT(*) FILTER (WHERE d.status IN {PENDING_SQL}),
       COUNT(*) FILTER (WHERE e.dedupable),
       {_KEY_SUMS}
FROM events AS e JOIN deliveries AS d ON d.event_row = e.id
WHERE e.received_at >= ?1 AND e.received_at < ?2
GROUP BY d.destination, d.event_name
ORDER BY d.destination{{collate}}, d.event_name{{collate}}
"""

_VALUES: Final = f"""
SELECT d.destination, d.event_name, e.currency, {{value_sum}}
FROM events AS e JOIN deliveries AS d ON d.event_row = e.id
WHERE e.received_at >= ?1 AND e.received_at < ?2 AND e.value IS NOT NULL
  AND d.status = '{Status.SENT}'
GROUP BY d.destination, d.event_name, e.currency
"""

# docs/operations.md §6, per name the server API sent in [?1, ?2): each event ID once per side
# (its first copy), the pairs whose two copies came within ?3 seconds, and the median of their
# lags (the middle one or two of the sorted pairs, averaged). Sources other than `server` are
# the pixels.
_OVERLAP: Final = """
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
SELECT event_name, 'backend', COUNT(*), CAST(NULL AS DOUBLE PRECISION) FROM s GROUP BY event_name
UNION ALL SELECT event_name, 'browser', COUNT(*), CAST(NULL AS DOUBLE PRECISION) FROM b
    GROUP BY event_name
UNION ALL SELECT event_name, 'both', n, AVG(lag) FROM r
    WHERE i IN ((n + 1) / 2, (n + 2) / 2) GROUP BY event_name, n
"""

_HOURLY: Final = """
SELECT {hour}, d.destination, d.status, COUNT(*)
FROM events AS e JOIN deliveries AS d ON d.event_row = e.id
WHERE e.received_at >= ?1 AND e.received_at < ?2
GROUP BY 1, 2, 3
ORDER BY 1
"""

# docs/operations.md §6. Conversions: every copy of the event in the window, first copy first
# (the caller counts each event ID once).
_CONVERSIONS: Final = """
SELECT event_id, value, currency FROM events
WHERE event_name = ?1 AND received_at >= ?2 AND received_at < ?3
ORDER BY received_at, id
"""
# Credits: each conversion (its first copy's time) with the visitor keys any of its copies
# left, matched to touches of those keys within the window before it; the last touch
# (?5 = -1) or the first (?5 = 1) wins.
_CREDITS: Final = """
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
_TOUCHES: Final = """
SELECT channel, campaign, COUNT(DISTINCT event_row) FROM touches
WHERE channel IS NOT NULL AND received_at >= ?1 AND received_at < ?2
GROUP BY channel, campaign
"""

_DELIVERIES: Final = """
SELECT d.id, d.event_id, d.event_name, d.destination, d.status, d.attempts, d.http_status,
       d.message, d.latency_ms, d.created_at, d.updated_at, d.next_attempt_at,
       d.duplicate_of, e.source, d.payload
FROM deliveries AS d JOIN events AS e ON e.id = d.event_row
{where}
ORDER BY d.id DESC
LIMIT {limit}
"""


def later_copy(cutoff: str) -> str:
    """True for a row another delivery of its key has taken: one that is live and arrived, or
    was last sent, attempted or replayed, after `cutoff` (the dedup rule, seen from a replay)."""
    return (
        "EXISTS (SELECT 1 FROM deliveries AS o WHERE o.destination = d.destination"
        " AND o.event_name = d.event_name AND o.event_id = d.event_id AND o.id <> d.id"
        f" AND (o.created_at > {cutoff} OR o.updated_at > {cutoff})"
        f" AND o.status IN {BLOCKS_DEDUP_SQL})"
    )


class Statements:
    """The shared statements in one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        fragments = {
            "skip_locked": dialect.skip_locked,
            "collate": dialect.collate,
            "value_sum": dialect.value_sum,
            "hour": dialect.hour,
        }

        def render(template: str) -> str:
            return dialect.sql(template.format(**fragments))

        self.claim = render(_CLAIM)
        self.finish = render(_FINISH)
        self.prunable_deliveries = render(_PRUNABLE_DELIVERIES)
        self.prune_events = render(_PRUNE_EVENTS)
        self.prune_touches = render(_PRUNE_TOUCHES)
        self.next_due = render(_NEXT_DUE)
        self.queue_stats = render(_QUEUE_STATS)
        self.window = render(_WINDOW)
        self.values = render(_VALUES)
        self.overlap = render(_OVERLAP)
        self.hourly = render(_HOURLY)
        self.conversions = render(_CONVERSIONS)
        self.credits = render(_CREDITS)
        self.touches = render(_TOUCHES)

    def deliveries(self, query: DeliveryQuery) -> Params:
        """The delivery log's rows for `query`: the statement is `.sql` of the result."""
        bind = self.dialect.params()
        clause = where(query, bind)
        bind.sql = _DELIVERIES.format(where=clause, limit=bind(query.limit))
        return bind

    def replay_leftovers(self, query: DeliveryQuery, at: float, cutoff: float) -> Params:
        """Each row `query` matches, by why a replay would leave it (or `candidate`)."""
        bind = self.dialect.params(at, cutoff)
        old = too_old(query, bind)
        clause = where(dataclasses.replace(query, oldest=()), bind)
        bind.sql = (
            f"SELECT CASE WHEN {old} THEN 'too_old'"
            " WHEN d.payload IS NULL THEN 'no_payload'"
            f" WHEN d.leased_until > {self.dialect.style}1 THEN 'in_flight'"
            f" WHEN {later_copy(f'{self.dialect.style}2')} THEN 'later_copy'"
            " ELSE 'candidate' END AS reason, COUNT(*) AS n"
            f" FROM deliveries AS d {clause} GROUP BY 1"
        )
        return bind
