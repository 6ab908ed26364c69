"""structlog, configured once at start-up: JSON lines (orjson) or a console view for people."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Final, Literal

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError

LogFormat = Literal["json", "console"]


class _BadRequests(logging.Filter):
    """aiohttp logs a request it cannot parse (a request line over 8 KiB, a header without a
    colon) as an error with a traceback whose message quotes the request: a page URL with a
    visitor's email address in it, over a dozen lines of stderr. One structured line with the
    error's name instead; anything else aiohttp logs passes as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            structlog.get_logger("gateway.http").info(
                "http.bad_request", error=type(exc).__name__, status=exc.code
            )
            return False
        return True


_BAD_REQUESTS: Final = _BadRequests()


class _Lines(structlog.BytesLogger):
    """JSON lines to stderr; a line that cannot be written is dropped, never raised into the
    hit that logged it. Redirected to a file, stderr fails with the disk it is on: the storage
    outage the gateway must ride out would otherwise break every request as it logs."""

    def msg(self, message: bytes) -> None:
        with contextlib.suppress(OSError):
            super().msg(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def configure(fmt: LogFormat = "json", level: int = logging.INFO) -> None:
    """Set up structlog for the process. Call once, before serving."""
    server_log = logging.getLogger("aiohttp.server")
    if _BAD_REQUESTS not in server_log.filters:
        server_log.addFilter(_BAD_REQUESTS)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "console":
        structlog.configure(
            processors=[*shared, structlog.dev.ConsoleRenderer(colors=False)],
            wrapper_class=structlog.make_filtering_bound_logger(level),
            # Whatever stderr is when a line is written (not when logging was configured).
            logger_factory=lambda *args: structlog.PrintLogger(sys.stderr),
            cache_logger_on_first_use=False,
        )
        return
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *args: _Lines(sys.stderr.buffer),
        cache_logger_on_first_use=True,
    )
