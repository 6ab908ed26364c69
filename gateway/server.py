"""`tag-gateway serve`: run the app until SIGTERM, then drain and exit 0."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Final

import structlog
from aiohttp import web
from aiohttp.web_runner import GracefulExit

from gateway import logs
from gateway.app import create_app
from gateway.config import EMBEDDED, Config, Listen
from gateway.guard import ConnectionGuard
from gateway.ops.listener import ops_port
from gateway.outbox import StoreLocked

log = structlog.get_logger("gateway.server")

GC_THRESHOLDS: Final = (10_000, 10, 10)
"""Young-generation collections every 10,000 allocations instead of 700 (see _settle_gc).
(20_000, 20, 100) served ~5 % more hits but let reference cycles (a failed batch's exception,
its frames and their rows) pile up: 85 MB instead of 67 MB with 1,000,000 events queued and
the upstream down."""


def serve(config: Config, host: str | None, port: int | None, log_format: str) -> int:
    """Serve until SIGTERM or SIGINT; aiohttp then stops accepting and runs the cleanups
    (workers finish in-flight batches, the writer commits what is queued)."""
    logs.configure("console" if log_format == "console" else "json")
    problem = _storage_problem(config)
    if problem:
        return _refuse(problem)
    bind_host = host or config.listen.host
    bind_port = port or config.listen.port
    if config.origin == EMBEDDED:
        log.warning(
            "config.embedded_default",
            note="dry_run only; pass --config or set TAG_GATEWAY_CONFIG for real destinations",
        )
    log.info(
        "serve.start",
        host=bind_host,
        port=bind_port,
        config=config.origin,
        storage="postgresql" if config.storage.url else config.storage.path,
        destinations=sorted(config.destinations),
        sources=sorted(config.sources),
    )
    # No uvloop on purpose: measured with bench/hits.py it was slower here, before the writer
    # stopped using aiosqlite (1,070-1,130 vs 1,630-1,800 hits/s) and after (1,521-1,591 vs
    # 1,674-2,168).
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = create_app(config)
    app.on_startup.append(_settle_gc)
    ops = config.listen.ops
    ops_sockets = []
    if ops is not None and ops_port(config) is not None:
        ops_host = ops.host or config.listen.host
        try:
            ops_sockets.append(socket.create_server((ops_host, ops.port), backlog=128))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            return _refuse(f"cannot listen on {ops_host}:{ops.port}: address already in use")
    main = loop.create_task(_run(app, bind_host, bind_port, config.listen, ops_sockets))
    try:
        loop.run_until_complete(main)
    except (GracefulExit, KeyboardInterrupt):
        pass
    except StoreLocked as exc:
        return _refuse(str(exc))
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            return _refuse(f"cannot listen on {bind_host}:{bind_port}: address already in use")
        # Storage that opened and then failed (its write lock held elsewhere, a full disk):
        # exit 1 so a restart policy fires, rather than hang on a thread that is still alive.
        log.error("serve.failed", error=type(exc).__name__, detail=str(exc)[:200])
        return 1
    finally:
        _close_loop(loop, main)
    log.info("serve.stop")
    return 0


def _refuse(reason: str) -> int:
    """What an operator must fix before `serve` can start: one line, no traceback."""
    print(f"tag-gateway: {reason}", file=sys.stderr, flush=True)
    return 1


def _storage_problem(config: Config) -> str | None:
    """Why the SQLite folder cannot take writes, in one line (a root-owned or read-only volume
    would otherwise end in sqlite3's traceback, "unable to open database file")."""
    if config.storage.url:
        return None
    path = Path(config.storage.path).absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # SQLite's WAL needs to create files beside the database, not just to write it.
        with tempfile.TemporaryFile(dir=path.parent):
            pass
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        return (
            f"storage folder {path.parent} is not writable by uid {os.getuid()} "
            f"({exc.strerror}): give that user write access to it (in a container, to /data)"
        )
    return None


async def _run(
    app: web.Application, host: str, port: int, listen: Listen, socks: list[socket.socket]
) -> None:
    """What `web.run_app` does, with every accepted connection going through a
    ConnectionGuard (aiohttp has no header timeout and no connection cap of its own). The
    operator's sockets get a guard of their own, so a flood on the public port cannot crowd
    them out."""
    runner = web.AppRunner(
        app,
        handle_signals=True,
        access_log=None,
        shutdown_timeout=2.0,
        keepalive_timeout=listen.keepalive_timeout_s,
    )
    await runner.setup()
    servers: list[asyncio.Server] = []
    try:
        assert runner.server is not None
        loop = asyncio.get_running_loop()
        guard = ConnectionGuard(runner.server, listen.max_connections, listen.header_timeout_s)
        servers.append(
            await loop.create_server(guard.factory(), host, port, reuse_address=True, backlog=128)
        )
        for sock in socks:
            ops = ConnectionGuard(runner.server, 64, listen.header_timeout_s)
            servers.append(await loop.create_server(ops.factory(), sock=sock, backlog=128))
        await asyncio.Event().wait()  # until SIGTERM or SIGINT (GracefulExit)
    finally:
        for server in servers:
            server.close()
        await runner.cleanup()


def _close_loop(loop: asyncio.AbstractEventLoop, main: asyncio.Task[None]) -> None:
    """As run_app leaves it: the main task's cleanup run (the app's cleanups drain the
    workers and the store), then whatever is left cancelled and the loop closed."""
    if not main.done():
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(main)
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


async def _settle_gc(app: web.Application) -> None:
    """Once started, move everything alive into the permanent generation and collect less often.

    A hit allocates a few hundred short-lived objects, almost all freed by reference counting;
    with the default thresholds the collector still ran every few hits, and every few hundred
    hits a full pass walked the whole heap (aiohttp, pydantic, the config). Figures: README,
    Performance."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
