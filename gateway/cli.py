"""The `tag-gateway` command line (docs/operations.md §3)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import orjson

from gateway import config as config_module
from gateway.config import Config, ConfigError
from gateway.outbox import Storage
from gateway.terminal import printable
from gateway.times import iso, parse_time


def _load(path: str | None) -> Config:
    try:
        return config_module.load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(1) from exc


_STATUSES: Final = (
    "queued",
    "sent",
    "failed",
    "dead",
    "duplicate",
    "dropped_consent",
    "dropped_rule",
)
"""The delivery statuses (store.Status), spelt here so argparse lists them in its error."""


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
    deliveries.add_argument("--status", action="append", choices=_STATUSES, default=[])
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
    attribution = command(
        "attribution", "conversions, value, CPA and ROAS per channel and campaign in one window"
    )
    attribution.add_argument("--since", default="30d")
    attribution.add_argument("--until")
    attribution.add_argument("--window", default="7d", help="the lookback (default 7d)")
    attribution.add_argument("--model", choices=("last_click", "first_click"), default="last_click")
    attribution.add_argument("--event", default="purchase", help="the conversion's event name")
    attribution.add_argument(
        "--spend", metavar="FILE", help="CSV: date,channel,campaign,spend,currency"
    )
    attribution.add_argument("--json", action="store_true")
    health = command("healthcheck", "exit 0 if the local gateway answers /healthz with 200")
    health.add_argument("--port", type=int, help="the port serve was given (else the config's)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    if args.command != "serve":
        import logging

        from gateway import logs

        # A command prints its output on stdout and nothing else: only a warning or an error
        # (the store failed) reaches stderr, never the store's bookkeeping (`store.closed`).
        logs.configure("console", logging.WARNING)
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
    if args.command == "attribution":
        return _attribution(_load(args.config), args)
    if args.command == "healthcheck":
        return healthcheck(_load(args.config), args.port)
    return 2


def healthcheck(cfg: Config, port: int | None) -> int:
    """The container's HEALTHCHECK: it follows the config's port, where a fixed URL in the
    Dockerfile would probe 8080 whatever the gateway listens on."""
    import urllib.request

    host = cfg.listen.host
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    url = f"http://{host}:{port or cfg.listen.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            return 0 if answer.status == 200 else 1
    except OSError as exc:  # URLError and HTTPError (not 200) included
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


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
    ops = cfg.listen.ops
    ops_label = f"   ops: {ops.host or cfg.listen.host}:{ops.port}" if ops else ""
    print(
        f"listen: {cfg.listen.host}:{cfg.listen.port}{ops_label}   storage: {_storage_label(cfg)}"
    )
    buffer = cfg.storage.outage_buffer
    print(
        f"outage buffer: {buffer.max_events} events / {buffer.max_bytes / 1_048_576:g} MiB"
        f"   retention: {cfg.storage.retention_days} days   synchronous: {cfg.storage.synchronous}"
    )
    # Every destination with the settings it runs with, defaults included: a shop must see
    # that meta_capi waits for ad_storage and ad_user_data without having written it.
    print("destinations:")
    for name, dest in app_module.build_destinations(cfg).items():
        settings = dest.settings
        print(f"  {name}: {dest.describe()}")
        requires = dest.requires_text()
        events = ", ".join(settings.events) if settings.events is not None else "all"
        print(
            f"    requires {requires} (on_denied: {settings.on_denied}); events: {events};"
            f" batch {dest.batch_size}, {settings.retry.describe()},"
            f" timeout {settings.timeout_ms} ms"
        )
    print("sources:")
    for name, source_settings in cfg.sources.items():
        source = sources.TYPES[name](source_settings)
        paths = sorted({path for _, path in source.routes()})
        targets = ", ".join(source_settings.send_to) or "(nowhere)"
        print(f"  {name}: {' '.join(paths)} -> {targets}")
    print("rules:" + ("" if cfg.rules else " none"))
    for rule in cfg.rules:
        print(f"  {rule.index + 1}. {_rule_label(rule)}")
    cookie = cfg.cookies
    print(
        f"cookies: _fbp/_fbc/_ttp/ttclid on {cookie.domain} for {cookie.max_age_days} days"
        if cookie
        else "cookies: none set"
    )
    print("scripts:" + ("" if cfg.scripts else " none"))
    for script in cfg.scripts:
        print(f"  {script.path} <- {script.upstream} (ttl {script.ttl})")
    print("admin: /admin (token set)" if cfg.admin else "admin: off (no admin.token)")
    consent = cfg.consent
    tcf = f"on (cookie {consent.tcf_cookie})" if consent.tcf and consent.tcf_cookie else None
    print(
        f"consent: default {consent.default}, honor_gpc {'on' if consent.honor_gpc else 'off'},"
        f" tcf {tcf or ('on' if consent.tcf else 'off')}"
    )
    if not cfg.sources:
        print("warning: no source is configured, so the gateway takes no hits")
    return 0


def _rule_label(rule: Any) -> str:
    """One rule as `check` shows it: its scope, then its action."""
    from gateway.rules import field_rules as r

    scope = f"[{rule.destination}] " if rule.destination else ""
    if rule.events is not None:
        scope += f"[events {', '.join(sorted(rule.events))}] "
    action = rule.action
    if isinstance(action, r.RedactUrlParams):
        text = f"redact_url_params: {', '.join(sorted(action.names))}"
    elif isinstance(action, r.DropFields):
        text = f"drop_fields: {', '.join(str(p) for p in action.paths)}"
    elif isinstance(action, r.SetFields):
        text = "set: " + ", ".join(f"{path}={value}" for path, value in action.values)
    elif isinstance(action, r.RenameEvent):
        text = f"rename_event: {action.old} -> {action.new}"
    else:
        conditions = []
        if action.user_agent is not None:
            conditions.append(f"user agent matches {action.user_agent.pattern}")
        if action.networks is not None:
            conditions.append(f"IP in {', '.join(str(n) for n in action.networks)}")
        if action.event_names is not None:
            conditions.append(f"named {', '.join(sorted(action.event_names))}")
        text = "drop_events: " + " and ".join(conditions)
    return scope + text


def _query(args: argparse.Namespace, statuses: Sequence[str], limit: int) -> object:
    from gateway.outbox import DeliveryQuery

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


async def _open_existing(cfg: Config) -> Storage | None:
    """The configured store, or None when there is none (`_no_store`)."""
    from gateway.outbox import open_outbox

    if await asyncio.to_thread(_no_store, cfg):
        return None
    return await open_outbox(cfg.storage.path, cfg.storage.url, cfg.storage.synchronous)


async def _known_destination(store: Storage, cfg: Config, destination: str | None) -> bool:
    """True unless `destination` is neither configured nor in the log (said on stderr); a
    destination taken out of the config keeps its rows, and they stay readable."""
    from gateway.outbox import DeliveryQuery

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


async def _deliveries(cfg: Config, args: argparse.Namespace) -> int:
    from gateway.outbox import DeliveryQuery

    query = _query(args, args.status, max(1, args.limit))
    assert isinstance(query, DeliveryQuery)
    store = await _open_existing(cfg)
    if store is None:
        return 1
    try:
        if not await _known_destination(store, cfg, query.destination):
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


async def _replay(cfg: Config, args: argparse.Namespace) -> int:
    from gateway.outbox import DeliveryQuery

    query = _query(args, args.status or ["dead"], 0)
    assert isinstance(query, DeliveryQuery)
    store = await _open_existing(cfg)
    if store is None:
        return 1
    import dataclasses
    import time

    from gateway.app import build_destinations
    from gateway.outbox import REPLAY_REASONS

    now = time.time()
    # A row past its platform's age limit would only be refused again, whole batch and all.
    oldest = tuple(
        (name, int(now - dest.max_age_s))
        for name, dest in build_destinations(cfg).items()
        if dest.max_age_s is not None
    )
    query = dataclasses.replace(query, oldest=oldest)
    try:
        if not await _known_destination(store, cfg, query.destination):
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


def _window(args: argparse.Namespace) -> tuple[object, object]:
    import time

    from gateway.report import Window

    try:
        now = time.time()
        window = Window(
            parse_time(args.since, now), parse_time(args.until, now) if args.until else now
        )
        compare = None
        if getattr(args, "compare_to", None):
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

    window, compare = _window(args)
    assert isinstance(window, report.Window)
    assert compare is None or isinstance(compare, report.Window)
    store = await _open_existing(cfg)
    if store is None:
        return 1
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
            f" {min_events} not judged: {printable(lines)}",
            file=sys.stderr,
        )
    for drop in drops:
        text = printable(drop.text())
        print(f"dropped more than {args.fail_on_drop:g}%: {text}", file=sys.stderr)
    return 1 if drops else 0


def _attribution(cfg: Config, args: argparse.Namespace) -> int:
    """Everything the command line gives is checked before the store is opened."""
    from pathlib import Path

    from gateway import attribution

    window, _ = _window(args)
    try:
        attribution.parse_window(args.window)
        spend = attribution.read_spend(Path(args.spend)) if args.spend else None
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return asyncio.run(_attribution_run(cfg, args, window, spend))


async def _attribution_run(
    cfg: Config, args: argparse.Namespace, window: object, spend: object
) -> int:
    from gateway import attribution, report

    assert isinstance(window, report.Window)
    assert spend is None or isinstance(spend, list)
    store = await _open_existing(cfg)
    if store is None:
        return 1
    try:
        result = await attribution.build(
            store,
            window.since,
            window.until,
            window=args.window,
            model=args.model,
            event=args.event,
            spend=spend,
        )
    finally:
        await store.close()
    (attribution.dump if args.json else attribution.render)(result, sys.stdout)
    return 0


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
