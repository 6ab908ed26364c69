"""What the commands share: the config, the store they read, the rows and times they are given."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway import config as config_module
from gateway.config import Config, ConfigError
from gateway.outbox import DeliveryQuery, Storage, open_outbox
from gateway.times import parse_time


def load_config(path: str | None) -> Config:
    """The config, or its problems on stderr and exit 1."""
    try:
        return config_module.load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(1) from exc


def delivery_query(args: argparse.Namespace, statuses: Sequence[str], limit: int) -> DeliveryQuery:
    """The rows `--status`, `--destination`, `--event-id`, `--since`, `--until` select; a bad
    time exits 2 with the reason."""
    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(2) from exc
    return DeliveryQuery(
        statuses=tuple(statuses),
        destination=args.destination,
        event_id=args.event_id,
        since=since,
        until=until,
        limit=limit,
    )


def _no_store(cfg: Config) -> bool:
    """True (said on stderr) when there is no SQLite file where the config says: a read
    command must not leave an empty store behind wherever it was run."""
    path = cfg.storage.path
    if cfg.storage.url or Path(path).is_file():
        return False
    print(
        f"no store at {path} (storage.path in {cfg.origin}); has serve run with it?",
        file=sys.stderr,
    )
    return True


async def open_existing(cfg: Config) -> Storage | None:
    """The configured store, or None when there is none (`_no_store`)."""
    if await asyncio.to_thread(_no_store, cfg):
        return None
    return await open_outbox(cfg.storage.path, cfg.storage.url, cfg.storage.synchronous)


async def known_destination(store: Storage, cfg: Config, destination: str | None) -> bool:
    """True unless `destination` is neither configured nor in the log (said on stderr); a
    destination taken out of the config keeps its rows, and they stay readable."""
    if destination is None or destination in cfg.destinations:
        return True
    if await store.deliveries(DeliveryQuery(destination=destination, limit=1)):
        return True
    configured = ", ".join(cfg.destinations) or "none"
    print(
        f"unknown destination '{destination}': not in the config ({configured})"
        " nor in the delivery log",
        file=sys.stderr,
    )
    return False
