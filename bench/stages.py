"""Where one Meta pixel hit's CPU goes, stage by stage, in one process on one core.

    python bench/stages.py [--hits 20000] [--repeats 7] [--build REV]

The gateway of bench/hits.py (one dry_run destination, a temporary SQLite file) is opened as
`serve` opens it, then bench/hits.py's hit is taken through each stage of the browser handler
in turn, `--hits` times per repeat: the request read into a `Hit`, the Meta parser, the request's
consent signals, and the pipeline's rows (personal-data gate, consent, rules, the dry_run
payload). Prints each stage's median µs per hit over the repeats. The store, the metrics and
the log line are left out: bench/hits.py measures those in the running server, where every
stage costs more than it does here (other work shares the caches), so compare builds here
within one run, and confirm a lever there.

--build REV times revision REV's package instead of this tree's (bench/hits.py exports it).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import REPO
from hits import QUERY, export_revision, gateway_config


def stages(hits: int) -> tuple[dict[str, Callable[[], object]], Callable[[], None]]:
    """Each stage as a thunk over inputs prepared once (imports from the package on sys.path)."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request
    from multidict import CIMultiDict

    from gateway import config as config_module
    from gateway.app import create_app
    from gateway.ingest.request import hit_of
    from gateway.ingest.signals import with_request_signals
    from gateway.sources import TYPES
    from gateway.typedefs import CONFIG, PIPELINE

    tmp = Path(tempfile.mkdtemp(prefix="stages-"))
    config = config_module.load(str(gateway_config(tmp, 1)))
    app = create_app(config)
    loop = asyncio.new_event_loop()

    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    pipeline = app[PIPELINE]
    source = TYPES["meta_pixel"](config.sources["meta_pixel"])
    send_to = source.settings.send_to
    headers = CIMultiDict(
        {
            "User-Agent": "Mozilla/5.0 bench",
            "Cookie": "_fbp=fb.1.1795000000000.1524724929324944; _ga=GA1.1.1234567890.1795000000",
            "Referer": "https://shop.example/products/wool-socks",
        }
    )

    def fresh() -> list[web.Request]:  # aiohttp caches a request's query and cookies
        return [
            make_mocked_request("GET", f"/tr?{QUERY}&eid=b-{i}", headers=headers)
            for i in range(hits)
        ]

    requests = fresh()
    received = time.time()
    built = [hit_of(r, b"", received, app[CONFIG]) for r in requests]
    parsed = [source.parse(h).events for h in built]
    signalled = [
        with_request_signals(p, h, config.consent) for p, h in zip(parsed, built, strict=True)
    ]

    def run(fn: Callable[[int], object]) -> Callable[[], object]:
        return lambda: [fn(i) for i in range(hits)]

    def read_requests() -> object:
        taken = requests[:]
        requests[:] = fresh()
        start = time.perf_counter()
        for r in taken:
            hit_of(r, b"", received, app[CONFIG])
        return time.perf_counter() - start

    def close() -> None:
        loop.run_until_complete(runner.cleanup())
        loop.close()

    return {
        "hit_of": read_requests,
        "parse": run(lambda i: source.parse(built[i])),
        "signals": run(lambda i: with_request_signals(parsed[i], built[i], config.consent)),
        "prepare": run(lambda i: pipeline.prepare(signalled[i], send_to)),
    }, close


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hits", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--build", metavar="REV")
    args = parser.parse_args()
    root = REPO
    label = "this tree"
    if args.build:
        root, label = export_revision(args.build, Path(tempfile.mkdtemp(prefix="stages-rev-")))
    sys.path.insert(0, str(root))
    thunks, close = stages(args.hits)
    timings: dict[str, list[float]] = {name: [] for name in thunks}
    for _ in range(args.repeats):
        for name, thunk in thunks.items():  # stage after stage, round after round
            start = time.perf_counter()
            took = thunk()  # a float when the stage timed itself (its setup left out)
            elapsed = took if isinstance(took, float) else time.perf_counter() - start
            timings[name].append(elapsed / args.hits * 1e6)
    print(f"{label}: µs per hit, median of {args.repeats} x {args.hits} hits")
    total = 0.0
    for name, values in timings.items():
        median = statistics.median(values)
        total += median
        print(f"  {name:<10} {median:7.1f}   (min {min(values):.1f}, max {max(values):.1f})")
    print(f"  {'sum':<10} {total:7.1f}")
    close()


if __name__ == "__main__":
    main()
