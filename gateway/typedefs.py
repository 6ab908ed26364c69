"""The app's shared state: one typed `web.AppKey` per thing its handlers and contexts share.

Keys only, as in aiohttp-demos' polls: `app.py` sets the first four when it builds the app,
`contexts.py` the others once their resource is open (a handler that runs before start-up
finished uses `app.get`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from aiohttp import web

from gateway.backlog import Backlog
from gateway.config import Config
from gateway.delivery import Worker
from gateway.destinations.base import Destination
from gateway.metrics import Metrics
from gateway.ops.queues import QueueCache
from gateway.outbox import Storage
from gateway.pipeline import Pipeline
from gateway.scripts import ScriptProxy

CONFIG: Final = web.AppKey("config", Config)
METRICS: Final = web.AppKey("metrics", Metrics)
DESTINATIONS: Final = web.AppKey("destinations", Mapping[str, Destination])
QUEUE_CACHE: Final = web.AppKey("queue_cache", QueueCache)
STORE: Final = web.AppKey("store", Storage)
PIPELINE: Final = web.AppKey("pipeline", Pipeline)
BACKLOG: Final = web.AppKey("backlog", Backlog)
WORKERS: Final = web.AppKey("workers", dict[str, Worker])
SCRIPTS: Final = web.AppKey("scripts", ScriptProxy)
