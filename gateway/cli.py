"""The `tag-gateway` command line (docs/operations.md §3)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import orjson

from gateway import config as config_module
from gateway.config import Config, ConfigError
from gateway.times import iso, parse_time


def _load(path: str | None) -> Config:
    try:
        return config_module.load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(1) from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tag-gateway", description="First-party server-side tagging gateway."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", help="config file (else $TAG_GATEWAY_CONFIG, else embedded)")
        return p

    serve = command("serve", "run the gateway")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--log-format", choices=("json", "console"), default="json")

    command("check", "validate a config and print what it sets up")

    deliveries = command("deliveries", "list delivery-log rows, newest first")
    deliveries.add_argument("--status", action="append", default=[])
    deliveries.add_argument("--destination")
    deliveries.add_argument("--event-id")
    deliveries.add_argument("--since")
    deliveries.add_argument("--until")
    deliveries.add_argument("--limit", type=int, default=50)
    deliveries.add_argument("--json", action="store_true")
    deliveries.add_argument("--payload", action="store_true", help="show stored payloads")

    replay = command("replay", "re-queue dead (or failed) deliveries")
    replay.add_argument("--status", action="append", choices=("dead", "failed"), default=[])
    replay.add_argument("--destination")
    replay.add_argument("--event-id")
    replay.add_argument("--since")
    replay.add_argument("--until")
    report = command("report", "volumes, dedup, drops and match keys beside a comparison window")
    report.add_argument("--since", default="24h")
    report.add_argument("--until")
    report.add_argument("--compare-to", help="T1..T2 (default: the window just before)")
    report.add_argument("--fail-on-drop", type=float, metavar="PCT")
    report.add_argument(
        "--min-events",
        type=int,
        metavar="N",
        help="judge a line only with at least N events in the earlier window (default 50)",
    )
    report.add_argument("--json", action="store_true")
    command("validate", "send sample events to each destination's test mode")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    if args.command != "serve":
        from gateway import logs

        # Log lines go to stderr; stdout is the command's own output.
        logs.configure("console")
    if args.command == "serve":
        from gateway.server import serve

        return serve(_load(args.config), args.host, args.port, args.log_format)
    if args.command == "check":
        return check(args.config)
    if args.command == "deliveries":
        return asyncio.run(_deliveries(_load(args.config), args))
    if args.command == "replay":
        return asyncio.run(_replay(_load(args.config), args))
    if args.command == "validate":
        from gateway.validate import run_validate

        return asyncio.run(run_validate(_load(args.config), sys.stdout))
    if args.command == "report":
        return asyncio.run(_report(_load(args.config), args))
    return 2


def check(path: str | None) -> int:
    """Validate a config; print a summary, or one line per problem and exit 1."""
    located = config_module.locate(path)
    try:
        cfg = config_module.load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        return 1
    from gateway import app as app_module
    from gateway import sources

    print(f"config: {located or config_module.EMBEDDED}")
    print(f"listen: {cfg.listen.host}:{cfg.listen.port}   storage: {_storage_label(cfg)}")
    print("destinations:")
    for name, dest in app_module.build_destinations(cfg).items():
        extra = []
        if dest.settings.events is not None:
            extra.append(f"events {', '.join(dest.settings.events)}")
        if dest.settings.requires:
            extra.append(
                f"requires {', '.join(dest.settings.requires)} ({dest.settings.on_denied})"
            )
        suffix = f"  [{'; '.join(extra)}]" if extra else ""
        print(f"  {name}: {dest.describe()}{suffix}")
    print("sources:")
    for name, settings in cfg.sources.items():
        source = sources.TYPES[name](settings)
        paths = sorted({path for _, path in source.routes()})
        targets = ", ".join(settings.send_to) or "(nowhere)"
        print(f"  {name}: {' '.join(paths)} -> {targets}")
    return 0


def _query(args: argparse.Namespace, statuses: Sequence[str], limit: int) -> object:
    from gateway.store import DeliveryQuery

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


async def _deliveries(cfg: Config, args: argparse.Namespace) -> int:
    from gateway.storage import open_storage
    from gateway.store import DeliveryQuery

    query = _query(args, args.status, max(1, args.limit))
    assert isinstance(query, DeliveryQuery)
    store = await open_storage(cfg.storage.path, cfg.storage.url, cfg.storage.synchronous)
    try:
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
            "latency_ms": row.latency_ms,
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
            f"{record['updated_at']}  {row.destination:<12} {row.status:<15} "
            f"{row.event_name:<18} {row.event_id}  attempts={row.attempts}"
            f"{f'  http={row.http_status}' if row.http_status else ''}"
            f"{f'  {row.message}' if row.message else ''}\n"
        )
        if show_payload:
            out.write("    " + orjson.dumps(payload).decode() + "\n")
    return 0


async def _replay(cfg: Config, args: argparse.Namespace) -> int:
    import structlog

    from gateway.storage import open_storage
    from gateway.store import DeliveryQuery

    query = _query(args, args.status or ["dead"], 0)
    assert isinstance(query, DeliveryQuery)
    store = await open_storage(cfg.storage.path, cfg.storage.url, cfg.storage.synchronous)
    try:
        count = await store.requeue(query)
    finally:
        await store.close()
    structlog.get_logger("gateway.cli").info(
        "replay", requeued=count, statuses=list(query.statuses), destination=query.destination
    )
    print(f"re-queued {count} deliveries")
    return 0


def _window(args: argparse.Namespace) -> tuple[object, object]:
    import time

    from gateway.report import Window

    try:
        now = time.time()
        window = Window(
            parse_time(args.since, now), parse_time(args.until, now) if args.until else now
        )
        compare = None
        if args.compare_to:
            first, sep, second = args.compare_to.partition("..")
            if not sep:
                raise ValueError("--compare-to takes T1..T2")
            compare = Window(parse_time(first, now), parse_time(second, now))
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(2) from exc
    return window, compare


async def _report(cfg: Config, args: argparse.Namespace) -> int:
    from gateway import report
    from gateway.storage import open_storage

    window, compare = _window(args)
    assert isinstance(window, report.Window)
    assert compare is None or isinstance(compare, report.Window)
    store = await open_storage(cfg.storage.path, cfg.storage.url, cfg.storage.synchronous)
    try:
        built = await report.build(store, window, compare)
    finally:
        await store.close()
    if args.json:
        # The document stays JSON; the one-line warnings go beside it.
        for line in report.warnings(built):
            print(line, file=sys.stderr)
    if args.fail_on_drop is None:
        (report.dump if args.json else report.render)(built, sys.stdout)
        return 0
    from gateway import app as app_module

    uses = {name: d.match_keys for name, d in app_module.build_destinations(cfg).items()}
    min_events = report.MIN_EVENTS if args.min_events is None else max(0, args.min_events)
    drops = built.drops(args.fail_on_drop, min_events, uses)
    if args.json:
        report.dump(built, sys.stdout, drops)
    else:
        report.render(built, sys.stdout)
    below = built.below(min_events)
    if below:
        lines = ", ".join(
            f"{line.destination}/{line.event_name} ({line.then.counts['in']} events)"
            for line in below
        )
        print(
            f"{len(below)} line{'s' if len(below) > 1 else ''} below --min-events"
            f" {min_events} not judged: {lines}",
            file=sys.stderr,
        )
    for drop in drops:
        print(f"dropped more than {args.fail_on_drop:g}%: {drop.text()}", file=sys.stderr)
    return 1 if drops else 0


def _storage_label(cfg: Config) -> str:
    """Where events are kept, without a password."""
    if not cfg.storage.url:
        return cfg.storage.path
    from urllib.parse import urlsplit

    parts = urlsplit(cfg.storage.url)
    user = f"{parts.username}@" if parts.username else ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"
