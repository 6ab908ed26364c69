"""A `DeliveryQuery` as a WHERE clause, in either dialect's placeholders."""

from __future__ import annotations

from gateway.outbox.dialect import Params
from gateway.outbox.records import DeliveryQuery


def too_old(query: DeliveryQuery, bind: Params, prefix: str = "d.") -> str:
    """A condition true for the rows `query.oldest` leaves out (`1 = 0` when it has none)."""
    terms = [
        f"({prefix}destination = {bind(destination)} AND {prefix}event_time < {bind(oldest)})"
        for destination, oldest in query.oldest
    ]
    return "(" + " OR ".join(terms) + ")" if terms else "1 = 0"


def where(query: DeliveryQuery, bind: Params, prefix: str = "d.") -> str:
    """`WHERE ...` for every filter of `query` but its limit, binding values to `bind`."""
    clauses = ["1 = 1"]
    if query.oldest:
        clauses.append(f"NOT {too_old(query, bind, prefix)}")
    if query.statuses:
        clauses.append(f"{prefix}status IN ({', '.join(bind(s) for s in query.statuses)})")
    if query.destination is not None:
        clauses.append(f"{prefix}destination = {bind(query.destination)}")
    if query.event_id is not None:
        clauses.append(f"{prefix}event_id = {bind(query.event_id)}")
    if query.since is not None:
        clauses.append(f"{prefix}created_at >= {bind(query.since)}")
    if query.until is not None:
        clauses.append(f"{prefix}created_at < {bind(query.until)}")
    return "WHERE " + " AND ".join(clauses)
