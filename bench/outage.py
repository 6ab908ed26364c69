"""A storage outage under load: browser hits held in memory, then written when it is back.

    .venv/bin/python bench/outage.py [--hits 20000] [--rounds 2]

Per round, alternating: 20,000 Meta pixel hits with the storage healthy (the baseline), then
20,000 with the store's RLIMIT_FSIZE lowered to its WAL's size (every write that grows a file
fails, as on a full disk). Printed: hits/s and answers of each, the buffer's events and bytes
and the process's RSS at the end of the outage, and how long the held hits took to be written
once the limit was lifted (and that all of them were).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from common import REPO, cpu_note, free_port, gateway_cmd, rss_mb, start, stop, wait_http


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


async def send(base: str, prefix: str, count: int) -> tuple[float, dict[int, int]]:
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker(session: aiohttp.ClientSession) -> None:
        while (i := await queue.get()) is not None:
            ts = int(time.time() * 1000)
            url = (
                f"{base}/tr/?id=1234567890&ev=Purchase&eid={prefix}-{i}&ts={ts}"
                "&dl=https%3A%2F%2Fshop.example%2Fthanks&cd[value]=129.90&cd[currency]=EUR"
                "&cd[content_ids]=%5B%22sku-1%22%5D&fbp=fb.1.1700000000000.123456789"
            )
            async with session.get(url, headers={"User-Agent": "Mozilla/5.0"}) as r:
                await r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1

    started = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(50)]
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
    return time.monotonic() - started, statuses


async def round_trip(args: argparse.Namespace, outage: bool, n: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        db = Path(tmp) / "gw.sqlite3"
        cfg = Path(tmp) / "gw.yaml"
        cfg.write_text(
            f"""
listen: {{host: 127.0.0.1, port: {port}}}
storage: {{path: {db}}}
destinations:
  meta: {{type: meta_capi, pixel_id: "1234567890", access_token: t,
          endpoint: "http://127.0.0.1:9", requires: []}}
sources:
  meta_pixel: {{send_to: [meta]}}
"""
        )
        gw = start(gateway_cmd(cfg), cpu=0)  # stderr to /dev/null: RLIMIT_FSIZE spares it
        base = f"http://127.0.0.1:{port}"
        try:
            await asyncio.to_thread(wait_http, f"{base}/readyz")
            await send(base, "warm", 200)
            rss_before, _ = rss_mb(gw.pid)
            if outage:
                limit = db.with_name(db.name + "-wal").stat().st_size
                resource.prlimit(gw.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            seconds, statuses = await send(base, f"r{n}", args.hits)
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/metrics") as r:
                    text = await r.text()
                async with session.get(f"{base}/readyz") as r:
                    ready = r.status
                rss_after, _ = rss_mb(gw.pid)
                line = (
                    f"{'outage ' if outage else 'healthy'} round {n}: {args.hits / seconds:,.0f}"
                    f" hits/s, answers {statuses}, /readyz {ready},"
                    f" RSS {rss_before:.0f} -> {rss_after:.0f} MB"
                )
                if outage:
                    held = metric(text, "tag_gateway_outage_buffer_events")
                    size = metric(text, "tag_gateway_outage_buffer_bytes")
                    dropped = metric(text, "tag_gateway_outage_dropped_total")
                    resource.prlimit(
                        gw.pid,
                        resource.RLIMIT_FSIZE,
                        (resource.RLIM_INFINITY, resource.RLIM_INFINITY),
                    )
                    lifted = time.monotonic()
                    while True:
                        async with session.get(f"{base}/metrics") as r:
                            if metric(await r.text(), "tag_gateway_outage_buffer_events") == 0:
                                break
                        await asyncio.sleep(0.05)
                    drained = time.monotonic() - lifted
                    with sqlite3.connect(db) as conn:
                        stored = conn.execute(
                            "SELECT COUNT(*) FROM events WHERE event_id LIKE ?", (f"r{n}-%",)
                        ).fetchone()[0]
                    line += (
                        f"; held {held:,.0f} events, {size / 1_048_576:.1f} MiB counted"
                        f" ({size / max(held, 1):,.0f} B/event), dropped {dropped:,.0f};"
                        f" written {drained:.2f} s after the limit was lifted;"
                        f" stored {stored:,} of {args.hits:,}"
                    )
                return line
        finally:
            stop(gw)


async def main_async(args: argparse.Namespace) -> None:
    print(f"outage: {cpu_note()}; {args.hits:,} hits a run, 50 connections, gateway on core 0")
    for n in range(1, args.rounds + 1):
        for outage in (False, True):
            print(await round_trip(args, outage, n), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(main_async(parser.parse_args()))
