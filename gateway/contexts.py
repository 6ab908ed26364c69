"""The resources the app opens before it serves and closes after: aiohttp cleanup contexts.

Each opens before its `yield` and drains and closes after it; aiohttp runs them in the order
`app.py` appends them and closes them in reverse, so the workers stop before the backlog
writes what it holds, and the backlog before the store closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Final

import aiohttp
import structlog
from aiohttp import web

from gateway.backlog import Backlog
from gateway.delivery import Worker
from gateway.outbox import open_outbox
from gateway.pipeline import Pipeline
from gateway.preview import pages as preview_pages
from gateway.scripts import ScriptProxy
from gateway.typedefs import (
    BACKLOG,
    CONFIG,
    DESTINATIONS,
    METRICS,
    PIPELINE,
    SCRIPTS,
    STORE,
    WORKERS,
)

log = structlog.get_logger("gateway.contexts")

SHUTDOWN_GRACE_S: Final = 5.0
"""On SIGTERM, every destination's in-flight deliveries get this long together, writing back
included. With aiohttp's 2 s for open requests before it, a stop takes at most ~7 s: inside
Docker's default 10 s."""


async def storage_context(app: web.Application) -> AsyncIterator[None]:
    """The store (leases a crash left behind released) and the pipeline that writes to it."""
    storage = app[CONFIG].storage
    store = await open_outbox(storage.path, storage.url, storage.synchronous, exclusive=True)
    try:
        released = await store.release_leases()
    except BaseException:
        # Close what opened (aiosqlite's thread would keep a failed process alive).
        await store.close()
        raise
    if released:
        log.info("store.recovered_in_flight", deliveries=released)
    app[STORE] = store
    config = app[CONFIG]
    app[PIPELINE] = Pipeline(store, app[DESTINATIONS], config.consent, config.rules, app[METRICS])
    if (preview := app.get(preview_pages.PREVIEW)) is not None:
        app[PIPELINE].on_stored = preview.stored
    yield
    await store.close()


async def backlog_context(app: web.Application) -> AsyncIterator[None]:
    """Hits held through a storage outage; written (or logged as lost) before the store
    closes, after the workers stopped (cleanups run in reverse)."""
    limits = app[CONFIG].storage.outage_buffer
    backlog = Backlog(app[PIPELINE].commit_soon, app[METRICS], limits.max_events, limits.max_bytes)
    backlog.start()
    app[BACKLOG] = backlog
    yield
    await backlog.close()


async def delivery_context(app: web.Application) -> AsyncIterator[None]:
    """One worker per destination over one outbound session, woken when rows are queued."""
    store = app[STORE]
    async with aiohttp.ClientSession(
        headers={"User-Agent": "tag-gateway"}, raise_for_status=False
    ) as session:
        workers = {
            name: Worker(dest, store, session, app[METRICS], app.get(preview_pages.PREVIEW))
            for name, dest in app[DESTINATIONS].items()
        }
        app[WORKERS] = workers

        def wake(names: Iterable[str]) -> None:
            for name in names:
                if worker := workers.get(name):
                    worker.wake()

        store.on_queued = wake
        for worker in workers.values():
            worker.start()
        yield
        # All at once: one grace for the whole gateway, however many destinations are slow.
        await asyncio.gather(*(w.stop(SHUTDOWN_GRACE_S) for w in workers.values()))


async def scripts_context(app: web.Application) -> AsyncIterator[None]:
    """The first-party script proxy and its own outbound session."""
    async with aiohttp.ClientSession(headers={"User-Agent": "tag-gateway"}) as session:
        app[SCRIPTS] = ScriptProxy(app[CONFIG].scripts, session)
        yield
        await app[SCRIPTS].close()
