"""Fuzz every endpoint of a real `serve`: 10,000 hostile requests (tests/fuzzing.py) and how
many were answered 5xx or not at all (both must be 0), beside the same number of ordinary pixel
hits sent the same way in the same run.

    .venv/bin/python bench/fuzz.py [--requests 10000] [--seed 1] [--concurrency 16]

Every destination talks to a fake platform on 127.0.0.1 started here; nothing leaves the
machine. The gateway's log is checked for tracebacks and `http.unhandled` lines.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web
from common import REPO, cpu_note, free_port, gateway_cmd, start, stop, wait_http


async def fake_platform() -> tuple[web.AppRunner, str]:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        if request.path.endswith(".js"):
            return web.Response(text="/* vendor script */", content_type="text/javascript")
        return web.json_response({"events_received": 1, "code": 0, "message": "OK"})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def main_async(args: argparse.Namespace) -> int:
    from tests import fuzzing

    runner, platform = await fake_platform()
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        cfg = Path(tmp) / "fuzz.yaml"
        cfg.write_text(fuzzing.config_text(port, platform, str(Path(tmp) / "fuzz.sqlite3")))
        log = Path(tmp) / "gateway.log"
        gw = start(gateway_cmd(cfg), log=log)
        try:
            await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/readyz")
            base = f"http://127.0.0.1:{port}"
            ordinary = (
                fuzzing.Request(
                    "GET",
                    f"/tr?id=1234567890&ev=PageView&eid=b-{i}&ts={int(time.time() * 1000)}",
                    (("User-Agent", "Mozilla/5.0"),),
                )
                for i in range(args.requests)
            )
            baseline = await fuzzing.run(base, ordinary, args.concurrency)
            hostile = await fuzzing.run(
                base, fuzzing.generate(args.seed, args.requests), args.concurrency
            )
            alive = await fuzzing.run(base, iter([fuzzing.Request("GET", "/healthz")]))
        finally:
            stop(gw)
        text = log.read_text(errors="replace")
    await runner.cleanup()

    print(f"fuzz: {cpu_note()}; seed {args.seed}, {args.concurrency} at a time")
    print(f"  baseline (ordinary pixel hits): {fuzzing.summary(baseline)}")
    print(f"  hostile:                        {fuzzing.summary(hostile)}")
    routes = sorted({route for route, _ in hostile.by_route})
    for route in routes:
        counts = {s: n for (r, s), n in hostile.by_route.items() if r == route}
        print(f"    {route:<22} " + ", ".join(f"{s}: {n}" for s, n in sorted(counts.items())))
    tracebacks = text.count("Traceback")
    unhandled = text.count("http.unhandled") + text.count("hit.unhandled")
    print(
        f"  gateway log: {tracebacks} tracebacks, {unhandled} unhandled-error lines;"
        f" /healthz after the run: {dict(alive.statuses)}"
    )
    for line in (hostile.server_errors + hostile.unanswered)[:20]:
        print(f"    ! {line}")
    failures = hostile.five_xx + len(hostile.unanswered) + tracebacks + unhandled
    return 1 if failures or alive.statuses.get(200) != 1 else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
