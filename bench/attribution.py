"""Attribution (contract §11): what touches cost on the hit path, and what the command costs.

    python bench/attribution.py [--duration 10] [--events 1000000] [--rounds 3] [--skip-hits]

1. Hits: the gateway (dry_run, a temporary SQLite file, core 0) under wrk (core 1, 1 thread,
   50 connections), alternating A B C A B C in one run:
   - A: Meta pixel page views with an `fbp` but no click ID: they leave no attribution row;
   - B: the same page views landing from a Meta click (`fbclid`, `utm_campaign` in the URL)
     with an `fbp`: one touch row each, in the same group commit.
   - C: B's page views on a second gateway with touches switched off (`attribution.touches`
     answering nothing): B beside C is the touch's own cost, A beside C the click URL's.
   Three rounds; prints each run and the medians.
   Then, in one process, the CPU of `store.add` per hit without and with its touch row.
2. The command: N events (90 % page views from a click, 10 % purchases) and N touch rows
   (one per page view, one visitor key per purchase; 200,000 visitors) in a fresh store over
   30 days, then `attribution.build` for the 30 days (7-day window, last click) beside
   `report.build` over the same store, alternating, medians.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, cpu_note, free_port, gateway_cmd, start, stop, wait_http
from hits import PIXEL_LUA, QUERY, gateway_config, row, wrk

sys.path.insert(0, str(REPO))

from gateway import attribution, report
from gateway.outbox import SQLITE_SCHEMA as SCHEMA
from gateway.outbox import SqliteOutbox as Store

PAIRS = 3
PLAIN = QUERY
CLICK = QUERY.replace(
    "%3Fcolor%3Dblue", "%3Fcolor%3Dblue%26fbclid%3DIwAR2x%26utm_campaign%3Dspring"
)


# The gateway with touches switched off (for C): the same process, `attribution.touches`
# answering nothing.
NO_TOUCHES = (
    "import sys; import gateway.attribution as a; a.touches = lambda event, secret: ();"
    " from gateway.cli import main; sys.exit(main(sys.argv[1:]))"
)


def hits(duration: int) -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        scripts = {}
        for name, query in (("A", PLAIN), ("B", CLICK), ("C", CLICK)):
            scripts[name] = tmp / f"{name}.lua"
            scripts[name].write_text(PIXEL_LUA.replace("%s", query))
        ports = {"A": free_port(), "C": free_port()}
        gateways = {
            "A": start(gateway_cmd(gateway_config(tmp, ports["A"])), cpu=0, log=tmp / "a.log")
        }
        off = tmp / "off"
        off.mkdir()
        cmd = [
            sys.executable,
            "-c",
            NO_TOUCHES,
            "serve",
            "--config",
            str(gateway_config(off, ports["C"])),
        ]
        gateways["C"] = start(cmd, cpu=0, log=tmp / "c.log")
        ports["B"] = ports["A"]
        for port in ports.values():
            wait_http(f"http://127.0.0.1:{port}/healthz")
        results: dict[str, list[tuple[float, float, float]]] = {"A": [], "B": [], "C": []}
        try:
            for _ in range(PAIRS):
                for name in ("A", "B", "C"):
                    url = f"http://127.0.0.1:{ports[name]}"
                    results[name].append(wrk(url, scripts[name], duration))
        finally:
            for gw in gateways.values():
                stop(gw)
        conn = sqlite3.connect(tmp / "bench.sqlite3")
        (touches,) = conn.execute("SELECT COUNT(*) FROM touches").fetchone()
        conn.close()
        print(f"{'':<44} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}  vs A")
        for i in range(PAIRS):
            print(row(f"A page views, no touch (run {i + 1})", results["A"][i], None))
            print(row(f"B page views from a click (run {i + 1})", results["B"][i], results["A"][i]))
            print(row(f"C B's hits, touches off (run {i + 1})", results["C"][i], results["A"][i]))
        a, b, c = (statistics.median(r[0] for r in results[n]) for n in ("A", "B", "C"))
        print(f"medians: A {a:,.0f}, B {b:,.0f}, C {c:,.0f} req/s; B/C {b / c:.2f}x (the touch)")
        print(f"touch rows written during B: {touches:,}")


async def store_cost(blocks: int = 6, adds: int = 2000) -> None:
    """CPU per `store.add` of one hit (one event, one delivery), without and with a touch row,
    alternating blocks in one store."""
    from gateway.outbox import NewDelivery, NewEvent, NewTouch, Status

    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(str(Path(tmp) / "cost.sqlite3"), "normal")
        cpu: dict[str, list[float]] = {"without": [], "with": []}
        n = 0
        for _ in range(blocks):
            for name in ("without", "with"):
                touch = (NewTouch(f"v{n}", "meta", "spring"),) if name == "with" else ()
                started = time.process_time()
                for _ in range(adds):
                    n += 1
                    at = time.time()
                    await store.add(
                        [
                            NewEvent(
                                f"e-{n}",
                                "page_view",
                                "meta_pixel",
                                int(at),
                                at,
                                True,
                                8,
                                [NewDelivery("audit", Status.SENT)],
                                touches=touch,
                            )
                        ]
                    )
                cpu[name].append((time.process_time() - started) / adds * 1e6)
        await store.close()
    a, b = statistics.median(cpu["without"]), statistics.median(cpu["with"])
    print(
        f"store.add of one hit, CPU: {a:.0f} us without a touch, {b:.0f} us with (+{b - a:.0f} us)"
    )


def fill(db: Path, events: int, now: float) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.executescript(SCHEMA)
    rng = random.Random(7)
    channels = [("meta", "spring"), ("google", "brand"), ("tiktok", "retarget"), ("email", "news")]
    event_rows, touch_rows = [], []
    # Row ids in order of arrival, as the gateway writes them.
    times = sorted(now - 30 * 86400 * rng.random() for _ in range(events))
    for i, at in enumerate(times, start=1):
        visitor = f"v{rng.randrange(200_000)}"
        if i % 10:
            channel, campaign = channels[i % len(channels)]
            event_rows.append((i, f"pv-{i}", "page_view", "meta_pixel", at, None))
            touch_rows.append((i, f"pv-{i}", "page_view", at, visitor, channel, campaign))
        else:
            event_rows.append((i, f"ord-{i}", "purchase", "server", at, "25.00"))
            touch_rows.append((i, f"ord-{i}", "purchase", at, visitor, None, None))
    conn.executemany(
        "INSERT INTO events (id, event_id, event_name, source, event_time, received_at,"
        " dedupable, match_keys, value, currency, consent)"
        " VALUES (?1, ?2, ?3, ?4, CAST(?5 AS INTEGER), ?5, 1, 8, ?6, 'EUR', NULL)",
        event_rows,
    )
    conn.executemany(
        "INSERT INTO touches (event_row, event_id, event_name, received_at, visitor, channel,"
        " campaign) VALUES (?, ?, ?, ?, ?, ?, ?)",
        touch_rows,
    )
    conn.commit()
    conn.close()


async def cost(db: Path, rounds: int, now: float) -> None:
    store = await Store.open(str(db))
    since = now - 30 * 86400
    timings: dict[str, list[float]] = {"report": [], "attribution": []}
    result = await attribution.build(store, since, now + 1)  # warm the page cache
    for _ in range(rounds):
        for name in ("report", "attribution"):
            started = time.perf_counter()
            if name == "report":
                await report.build(store, report.Window(since, now + 1))
            else:
                result = await attribution.build(store, since, now + 1)
            timings[name].append(time.perf_counter() - started)
    await store.close()
    print(
        f"conversions {result.conversions:,}: attributed"
        f" {result.conversions - result.unattributed.conversions:,},"
        f" unattributed {result.unattributed.conversions:,}"
    )
    for name, runs in timings.items():
        shown = ", ".join(f"{t:.2f}" for t in runs)
        print(f"{name:<12} over 30 days: median {statistics.median(runs):.2f} s  ({shown})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-hits", action="store_true")
    args = parser.parse_args()
    print(cpu_note())
    if not args.skip_hits:
        hits(args.duration)
    asyncio.run(store_cost())
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "attribution.sqlite3"
        now = time.time()
        started = time.monotonic()
        fill(db, args.events, now)
        print(
            f"{args.events:,} events and {args.events:,} touch rows written in"
            f" {time.monotonic() - started:.0f} s"
        )
        asyncio.run(cost(db, args.rounds, now))


if __name__ == "__main__":
    main()
