"""The longest event-loop stall under one hostile request, with and without the per-request bounds.

    python bench/hostile.py

Runs the gateway in this process on 127.0.0.1 (SQLite in a temporary directory, every browser
source to a `dry_run` destination) with a task ticking every millisecond on its loop, sends one
hostile request from another thread, and prints the longest gap between ticks (how long every
other request would have waited) and how many log lines the request wrote. Each case runs with
the bounds as shipped and with them lifted (the constants raised past the request's size, which
is the code before they existed), alternating, and medians are printed.

- a 1 MiB multipart `sendBeacon` body with ~17,000 parts to `/tr/` (no authentication needed);
- a TikTok pixel POST with 40,000 properties;
- a GA4 POST of 1,000 lines, each with 100 parameters.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import REPO, free_port

ROUNDS = 3
LIFTED = 10**9


def multipart() -> tuple[str, bytes, str]:
    boundary = "x"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="p{i}"\r\n\r\nv\r\n'
        for i in range(17_000)
    ]
    head = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in (("id", "1234567890"), ("ev", "PageView"), ("eid", "m-1"))
    ]
    body = ("".join(head + parts) + f"--{boundary}--\r\n").encode()
    return "/tr/", body, f"multipart/form-data; boundary={boundary}"


def tiktok() -> tuple[str, bytes, str]:
    import orjson

    properties = {f"p{i}": "v" for i in range(40_000)}
    body = orjson.dumps(
        {
            "event": "ViewContent",
            "event_id": "t-1",
            "context": {"pixel": {"code": "C1ABCDEFGHIJ"}, "page": {"url": "https://s.example/"}},
            "properties": properties,
        }
    )
    return "/api/v2/pixel", body, "application/json"


def ga4() -> tuple[str, bytes, str]:
    line = "en=page_view&" + "&".join(f"ep.p{i}=v" for i in range(100))
    body = "\n".join(f"{line}&_et={n}" for n in range(1000)).encode()
    query = "/g/collect?v=2&tid=G-ABC123&cid=1.2&dl=https%3A%2F%2Fs.example%2F"
    return query, body, "text/plain;charset=UTF-8"


CASES: dict[str, Callable[[], tuple[str, bytes, str]]] = {
    "multipart /tr/, 17,000 parts, 1 MiB": multipart,
    "TikTok POST, 40,000 properties": tiktok,
    "GA4 POST, 1,000 lines x 100 params": ga4,
}


def bounds(lifted: bool) -> None:
    """Set every per-request bound as shipped, or lift them all."""
    for module, name, shipped in BOUNDS:
        setattr(module, name, LIFTED if lifted else shipped)


BOUNDS: list[tuple[Any, str, int]] = []


async def measure(port: int, path: str, body: bytes, ctype: str, lines: list[int]) -> float:
    gaps: list[float] = []
    done = False

    async def tick() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    def send() -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", data=body, headers={"Content-Type": ctype}
        )
        with urllib.request.urlopen(request, timeout=120) as answer:
            answer.read()

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.05)
    gaps.clear()
    lines[0] = 0
    await asyncio.to_thread(send)
    await asyncio.sleep(0.05)
    done = True
    await ticker
    return max(gaps)


async def run() -> None:
    import structlog
    from aiohttp import web

    from gateway import config as config_module
    from gateway.app import create_app

    lines = [0]

    def count(logger: object, method: str, event: dict[str, Any]) -> dict[str, Any]:
        lines[0] += 1
        raise structlog.DropEvent

    structlog.configure(processors=[count], cache_logger_on_first_use=False)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config_module.parse(
            f"storage: {{path: {Path(tmp) / 'gw.sqlite3'}}}\n"
            "destinations: {audit: {type: dry_run}}\n"
            "sources:\n  meta_pixel: {send_to: [audit]}\n  ga4: {send_to: [audit]}\n"
            "  tiktok_pixel: {send_to: [audit]}\n",
            "bench",
            {},
        )
        runner = web.AppRunner(create_app(cfg), access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            results: dict[tuple[str, bool], list[tuple[float, int]]] = {}
            for name, build in CASES.items():
                path, body, ctype = build()
                for _ in range(ROUNDS):
                    for lifted in (True, False):  # A B A B
                        bounds(lifted)
                        stall = await measure(port, path, body, ctype, lines)
                        results.setdefault((name, lifted), []).append((stall, lines[0]))
            bounds(False)
        finally:
            await runner.cleanup()
    print(f"longest loop stall, median of {ROUNDS} (log lines written by the request)")
    for name in CASES:
        row = [f"{name:<38}"]
        for lifted, label in ((True, "bounds lifted"), (False, "as shipped")):
            runs = results[(name, lifted)]
            stall = statistics.median(s for s, _ in runs) * 1000
            logged = statistics.median(n for _, n in runs)
            row.append(f"{label} {stall:7.1f} ms ({logged:>6.0f} lines)")
        print("  ".join(row))


def main() -> None:
    from gateway.sources import forms, ga4, tiktok_pixel

    for module, name in (
        (forms, "MAX_FIELDS"),
        (tiktok_pixel, "MAX_PROPERTIES"),
        (ga4, "MAX_EVENTS"),
        (ga4, "MAX_PARAMS"),
    ):
        BOUNDS.append((module, name, getattr(module, name)))
    asyncio.run(run())


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
