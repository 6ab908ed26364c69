"""`report` (volumes, dedup, drops, match keys beside a comparison window) and `attribution`
(conversions, value, CPA and ROAS per channel and campaign)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from gateway import app as app_module
from gateway import attribution as attribution_module
from gateway import report as report_module
from gateway.attribution import Spend
from gateway.cli.inputs import open_existing
from gateway.config import Config
from gateway.report import Window
from gateway.terminal import printable
from gateway.times import parse_time


def _window(args: argparse.Namespace) -> tuple[Window, Window | None]:
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


async def report(cfg: Config, args: argparse.Namespace) -> int:
    """Print the report; with `--fail-on-drop`, exit 1 when a line dropped more than that."""
    window, compare = _window(args)
    store = await open_existing(cfg)
    if store is None:
        return 1
    try:
        built = await report_module.build(store, window, compare)
    finally:
        await store.close()
    if args.json:
        # The document stays JSON; the one-line warnings go beside it.
        for line in report_module.warnings(built):
            print(line, file=sys.stderr)
    if args.fail_on_drop is None:
        (report_module.dump if args.json else report_module.render)(built, sys.stdout)
        return 0
    uses = {name: d.match_keys for name, d in app_module.build_destinations(cfg).items()}
    min_events = report_module.MIN_EVENTS if args.min_events is None else max(0, args.min_events)
    drops = built.drops(args.fail_on_drop, min_events, uses)
    if args.json:
        report_module.dump(built, sys.stdout, drops)
    else:
        report_module.render(built, sys.stdout)
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


def attribution(cfg: Config, args: argparse.Namespace) -> int:
    """Everything the command line gives is checked before the store is opened."""
    window, _ = _window(args)
    try:
        attribution_module.parse_window(args.window)
        spend = attribution_module.read_spend(Path(args.spend)) if args.spend else None
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return asyncio.run(_attribution_run(cfg, args, window, spend))


async def _attribution_run(
    cfg: Config, args: argparse.Namespace, window: Window, spend: list[Spend] | None
) -> int:
    store = await open_existing(cfg)
    if store is None:
        return 1
    try:
        result = await attribution_module.build(
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
    (attribution_module.dump if args.json else attribution_module.render)(result, sys.stdout)
    return 0
