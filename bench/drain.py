"""Outbox drain: how fast queued events reach a platform, and what memory that takes.

    python bench/drain.py [--events 100000] [--million]

Preloads N queued Meta events into a fresh store, starts the gateway (core 0) against a fake
Meta on 127.0.0.1 that answers at once (core 1), and prints events/s drained and the gateway's
peak RSS. Then preloads 1,000,000 events with the upstream down (a closed port) and prints the
gateway's RSS while they wait. With --million the drain itself uses 1,000,000 events.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from common import REPO, cpu_note, free_port, gateway_cmd, preload, rss_mb, start, stop, wait_http

FAKE_META = textwrap.dedent(
    """
    import sys
    import orjson
    from aiohttp import web
    async def events(request):
        body = orjson.loads(await request.read())
        return web.json_response({"events_received": len(body["data"])})
    async def health(request):
        return web.Response(text="ok")
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/{version}/{pixel}/events", events)
    app.router.add_get("/healthz", health)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
    """
)

PAYLOAD = (
    b'{"event_name":"PageView","event_time":%d,"event_id":"pre","action_source":"website",'
    b'"user_data":{"em":"62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f",'
    b'"client_ip_address":"203.0.113.7","client_user_agent":"Mozilla/5.0 (X11; Linux x86_64)",'
    b'"fbp":"fb.1.1795000000000.1524724929324944"},'
    b'"event_source_url":"https://shop.example/products/wool-socks",'
    b'"custom_data":{"value":19.9,"currency":"EUR","content_ids":["264"]}}'
)


def config(tmp: Path, name: str, port: int, endpoint: str) -> Path:
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(
        f"""
listen: {{host: 127.0.0.1, port: {port}}}
storage: {{path: {tmp / (name + ".sqlite3")}}}
destinations:
  meta:
    type: meta_capi
    pixel_id: "1234567890"
    access_token: BENCH
    endpoint: {endpoint}
    batch: {{max_events: 1000, max_wait_ms: 0}}
    timeout_ms: 1000
sources:
  meta_pixel: {{send_to: [meta]}}
"""
    )
    return cfg


def sent(db: Path) -> int:
    with sqlite3.connect(db, timeout=10) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM deliveries WHERE status = 'sent'").fetchone()
    return int(n)


def drain(tmp: Path, events: int, meta_url: str) -> None:
    port = free_port()
    cfg = config(tmp, "drain", port, meta_url)
    db = tmp / "drain.sqlite3"
    took = preload(db, events, "meta", "queued", PAYLOAD % int(time.time()))
    print(f"preloaded {events:,} queued events in {took:.1f}s")
    gw = start(gateway_cmd(cfg), cpu=0, log=tmp / "drain.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        started = time.monotonic()
        peak = 0.0
        while True:
            peak = max(peak, rss_mb(gw.pid)[1])
            done = sent(db)
            if done >= events:
                break
            if time.monotonic() - started > 600:
                print(f"gave up: {done:,} of {events:,} sent after 600 s")
                break
            time.sleep(0.25)
        elapsed = time.monotonic() - started
        print(
            f"drain: {events:,} events in {elapsed:.1f}s = {events / elapsed:,.0f} events/s"
            f" (1,000-event batches); gateway peak RSS {peak:.0f} MB"
        )
    finally:
        stop(gw)


def idle_with_upstream_down(tmp: Path, events: int) -> None:
    port, closed = free_port(), free_port()
    cfg = config(tmp, "down", port, f"http://127.0.0.1:{closed}")
    db = tmp / "down.sqlite3"
    took = preload(db, events, "meta", "queued", PAYLOAD % int(time.time()))
    print(f"preloaded {events:,} queued events in {took:.1f}s (upstream down)")
    gw = start(gateway_cmd(cfg), cpu=0, log=tmp / "down.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        samples = []
        for _ in range(40):  # 20 s of retries against a closed port
            samples.append(rss_mb(gw.pid))
            time.sleep(0.5)
        current, peak = samples[-1]
        print(
            f"upstream down, {events:,} queued: gateway RSS {current:.0f} MB after 20 s"
            f" (peak {peak:.0f} MB)"
        )
    finally:
        stop(gw)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--million", action="store_true")
    args = parser.parse_args()
    print(f"machine: {cpu_note()}; gateway on core 0, fake Meta on core 1")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        fake = tmp / "fake_meta.py"
        fake.write_text(FAKE_META)
        meta_port = free_port()
        meta = start([sys.executable, str(fake), str(meta_port)], cpu=1)
        try:
            wait_http(f"http://127.0.0.1:{meta_port}/healthz")
            drain(tmp, 1_000_000 if args.million else args.events, f"http://127.0.0.1:{meta_port}")
        finally:
            stop(meta)
        idle_with_upstream_down(tmp, 1_000_000)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
