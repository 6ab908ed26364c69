"""GA4 delivery rate when every event is a different visitor's, at 100 ms platform latency.

    python bench/ga4.py [--latency-ms 100] [--rounds 2]

A GA4 request carries one visitor, so 25 visitors' events are 25 requests. Preloads queued GA4
events, each its own visitor, starts the gateway (core 0) against a fake GA4 on 127.0.0.1 that
answers 204 after `--latency-ms` (core 1), and prints events/s until every one is sent. Two
settings alternate, A B A B, in one run:

- `concurrency: 2`: what the gateway did before requests went out side by side (two batches in
  flight, one request at a time in each), the baseline;
- the default (`concurrency` unset: 64 for GA4).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import orjson
from common import cpu_note, free_port, gateway_cmd, start, stop, wait_http

FAKE_GA4 = textwrap.dedent(
    """
    import asyncio, sys
    from aiohttp import web
    DELAY = float(sys.argv[2])
    async def collect(request):
        await request.read()
        await asyncio.sleep(DELAY)
        return web.Response(status=204)
    async def health(request):
        return web.Response(text="ok")
    app = web.Application()
    app.router.add_post("/mp/collect", collect)
    app.router.add_get("/healthz", health)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
    """
)


def preload(db: Path, rows: int) -> None:
    """`rows` queued GA4 deliveries, each a different visitor's page view."""
    from gateway.outbox import SQLITE_SCHEMA as SCHEMA

    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    now = time.time()
    micros = int(now) * 1_000_000
    for i in range(1, rows + 1):
        payload = orjson.dumps(
            {
                "client_id": f"{1000 + i}.{i}",
                "timestamp_micros": micros,
                "event": {
                    "name": "page_view",
                    "params": {"page_location": "https://shop.example/", "event_id": f"e{i}"},
                },
            }
        )
        conn.execute(
            "INSERT INTO events (id, event_id, event_name, source, event_time, received_at,"
            " dedupable, match_keys) VALUES (?, ?, 'page_view', 'ga4', ?, ?, 1, 0)",
            (i, f"e{i}", int(now), now),
        )
        conn.execute(
            "INSERT INTO deliveries (id, event_row, event_id, event_name, destination, status,"
            " event_time, next_attempt_at, created_at, updated_at, payload)"
            " VALUES (?, ?, ?, 'page_view', 'ga4', 'queued', ?, ?, ?, ?, ?)",
            (i, i, f"e{i}", int(now), now, now, now, payload),
        )
    conn.commit()
    conn.close()


def run(tmp: Path, name: str, events: int, ga4_url: str, concurrency: str) -> float:
    port = free_port()
    db = tmp / f"{name}.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    preload(db, events)
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(
        f"""
listen: {{host: 127.0.0.1, port: {port}}}
storage: {{path: {db}}}
destinations:
  ga4:
    type: ga4_mp
    measurement_id: G-BENCH1
    api_secret: BENCH
    endpoint: {ga4_url}
    batch: {{max_wait_ms: 0}}
{concurrency}
sources:
  server: {{send_to: [ga4], api_keys: [test-api-key-0001]}}
"""
    )
    gw = start(gateway_cmd(cfg), cpu=0, log=tmp / f"{name}.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        started = time.monotonic()
        while True:
            with sqlite3.connect(db, timeout=10) as conn:
                (done,) = conn.execute(
                    "SELECT COUNT(*) FROM deliveries WHERE status = 'sent'"
                ).fetchone()
            if done >= events or time.monotonic() - started > 300:
                break
            time.sleep(0.1)
        elapsed = time.monotonic() - started
    finally:
        stop(gw)
    return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-ms", type=float, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"machine: {cpu_note()}; gateway on core 0, fake GA4 on core 1")
    print(f"fake GA4 answers after {args.latency_ms:.0f} ms; every event a different visitor")
    settings = [
        ("concurrency: 2 (before: 2 batches, 1 request each)", "    concurrency: 2", 300),
        ("default (64 requests side by side)", "", 4000),
    ]
    rates: dict[str, list[float]] = {label: [] for label, _, _ in settings}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        fake = tmp / "fake_ga4.py"
        fake.write_text(FAKE_GA4)
        ga4_port = free_port()
        ga4 = start([sys.executable, str(fake), str(ga4_port), str(args.latency_ms / 1000)], cpu=1)
        try:
            wait_http(f"http://127.0.0.1:{ga4_port}/healthz")
            for round_no in range(args.rounds):
                for i, (label, extra, events) in enumerate(settings):
                    rate = run(
                        tmp, f"r{round_no}-{i}", events, f"http://127.0.0.1:{ga4_port}", extra
                    )
                    rates[label].append(rate)
                    print(
                        f"  round {round_no + 1}: {label}: {events:,} events, {rate:,.0f} events/s"
                    )
        finally:
            stop(ga4)
    print("medians:")
    for label, values in rates.items():
        print(f"  {label}: {statistics.median(values):,.0f} events/s")


if __name__ == "__main__":
    main()
