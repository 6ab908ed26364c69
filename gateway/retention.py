"""`storage.retention_days`: finished deliveries older than that are pruned, every few minutes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Final

import structlog
from aiohttp import web

from gateway.typedefs import CONFIG, STORE

log = structlog.get_logger("gateway.retention")

RETENTION_EVERY_S: Final = 300.0


async def retention_context(app: web.Application) -> AsyncIterator[None]:
    """The pruning loop, from start-up until the app stops."""
    task = asyncio.create_task(_prune_forever(app), name="retention")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _prune_forever(app: web.Application) -> None:
    store, days = app[STORE], app[CONFIG].storage.retention_days
    while True:
        try:
            cutoff = time.time() - days * 86400
            pruned = 0
            while (n := await store.prune(cutoff)) > 0:
                pruned += n
                await asyncio.sleep(0.05)  # let hits in between batches
            if pruned:
                log.info("retention.pruned", deliveries=pruned, older_than_days=days)
        except Exception as exc:
            log.error("retention.failed", error=type(exc).__name__)
        await asyncio.sleep(RETENTION_EVERY_S)
