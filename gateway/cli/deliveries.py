"""`deliveries` lists delivery-log rows; `replay` re-queues dead (or failed) ones."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import orjson

from gateway.app import build_destinations
from gateway.cli.inputs import delivery_query, known_destination, open_existing
from gateway.config import Config
from gateway.outbox import REPLAY_REASONS
from gateway.terminal import printable
from gateway.times import iso


async def show(cfg: Config, args: argparse.Namespace) -> int:
    """Print the selected rows, newest first (`--json`: one object a line)."""
    query = delivery_query(args, args.status, max(1, args.limit))
    store = await open_existing(cfg)
    if store is None:
        return 1
    try:
        if not await known_destination(store, cfg, query.destination):
            return 2
        rows = await store.deliveries(query)
    finally:
        await store.close()
    out = sys.stdout
    for row in rows:
        payload = orjson.loads(row.payload) if row.payload else None
        record = {
            "id": row.id,
            "event_id": row.event_id,
            "event_name": row.event_name,
            "source": row.source,
            "destination": row.destination,
            "status": row.status,
            "attempts": row.attempts,
            "http_status": row.http_status,
            "message": row.message,
            "latency_ms": round(row.latency_ms, 2) if row.latency_ms is not None else None,
            "duplicate_of": row.duplicate_of,
            "created_at": iso(row.created_at),
            "updated_at": iso(row.updated_at),
            "next_attempt_at": iso(row.next_attempt_at)
            if row.status in ("queued", "failed")
            else None,
        }
        show_payload = payload is not None and (args.payload or row.status == "sent")
        if args.json:
            if show_payload:
                record["payload"] = payload
            out.write(orjson.dumps(record).decode() + "\n")
            continue
        out.write(
            printable(
                f"{record['updated_at']}  {row.destination:<12} {row.status:<15} "
                f"{row.event_name:<18} {row.event_id}  attempts={row.attempts}"
                f"{f'  http={row.http_status}' if row.http_status else ''}"
                f"{f'  {row.message}' if row.message else ''}"
            )
            + "\n"
        )
        if show_payload:
            out.write("    " + printable(orjson.dumps(payload).decode()) + "\n")
    return 0


async def replay(cfg: Config, args: argparse.Namespace) -> int:
    """Re-queue the selected rows and say what was left, and why."""
    query = delivery_query(args, args.status or ["dead"], 0)
    store = await open_existing(cfg)
    if store is None:
        return 1
    now = time.time()
    # A row past its platform's age limit would only be refused again, whole batch and all.
    oldest = tuple(
        (name, int(now - dest.max_age_s))
        for name, dest in build_destinations(cfg).items()
        if dest.max_age_s is not None
    )
    query = dataclasses.replace(query, oldest=oldest)
    try:
        if not await known_destination(store, cfg, query.destination):
            return 2
        left = await store.replay_leftovers(query, now)
        count = await store.requeue(query, now)
    finally:
        await store.close()
    print(f"re-queued {count} deliveries")
    if (older := left.pop("candidate", 0) - count) > 0:
        left["older_copy"] = older
    if total := sum(left.values()):
        print(f"left {total}:")
        for reason, text in REPLAY_REASONS.items():
            if left.get(reason):
                print(f"  {left[reason]} {text}")
    return 0
