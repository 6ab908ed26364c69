"""The `tag-gateway` command line (docs/operations.md §3): the parser and the dispatch.

One module per command group: `check`, `deliveries` (list and replay), `reports` (report and
attribution), `healthcheck`; `inputs` reads what they share (the config, the existing store,
times given on the command line).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Final

from gateway.cli.inputs import load_config

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
    # Each command's module is imported only when it runs: `healthcheck` stays quick.
    if args.command == "serve":
        from gateway.server import serve

        return serve(load_config(args.config), args.host, args.port, args.log_format)
    if args.command == "check":
        from gateway.cli.check import check

        return check(args.config)
    if args.command == "deliveries":
        from gateway.cli.deliveries import show

        return asyncio.run(show(load_config(args.config), args))
    if args.command == "replay":
        from gateway.cli.deliveries import replay

        return asyncio.run(replay(load_config(args.config), args))
    if args.command == "validate":
        from gateway.validate import run_validate

        return asyncio.run(run_validate(load_config(args.config), sys.stdout))
    if args.command == "report":
        from gateway.cli.reports import report

        return asyncio.run(report(load_config(args.config), args))
    if args.command == "attribution":
        from gateway.cli.reports import attribution

        return attribution(load_config(args.config), args)
    if args.command == "healthcheck":
        from gateway.cli.healthcheck import healthcheck

        return healthcheck(load_config(args.config), args.port)
    return 2
