"""structlog, configured once at start-up: JSON lines (orjson) or a console view for people."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import sys
import time
from typing import Final, Literal

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError

LogFormat = Literal["json", "console"]
REPEAT_EVERY_S: Final = 10.0
"""The same standard-library log line (logger, message, error type) at most once this often."""
_MAX_KINDS: Final = 1024


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
    outage the gateway must ride out would otherwise break every request as it logs.

    On the event loop, the lines of one loop iteration go out in one write at its end rather
    than one write (a system call) each: a hit's line cost more in that call than in being
    rendered. Off the loop (the CLI, a thread) a line is written at once."""

    def msg(self, message: bytes) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            with contextlib.suppress(OSError):
                super().msg(message)
            return
        pending = _PENDING
        if pending.stream is not None and (
            pending.loop is not loop or pending.stream._file is not self._file
        ):
            # Another file, or a loop that stopped before its flush ran: out with those first.
            pending.flush()
        pending.lines.append(message + b"\n")
        if pending.stream is None:
            pending.stream, pending.loop = self, loop
            loop.call_soon(pending.flush)

    def write_now(self, data: bytes) -> None:
        # ValueError: stderr already closed, when the last lines go out at exit.
        with self._lock, contextlib.suppress(OSError, ValueError):
            self._write(data)
            self._flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _Pending:
    """The lines logged on the loop since its last iteration, for `_Lines`."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.stream: _Lines | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def flush(self) -> None:
        stream, lines = self.stream, self.lines
        self.stream, self.lines, self.loop = None, [], None
        if stream is not None and lines:
            stream.write_now(b"".join(lines))


_PENDING: Final = _Pending()
# A loop stopped before its last call_soon ran (a shutdown) still gets its last lines out.
atexit.register(_PENDING.flush)


class _Clock:
    """The ISO 8601 text of the current second, made once a second."""

    second = -1
    text = ""


def _timestamp(
    logger: structlog.typing.WrappedLogger, method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """`timestamp`, as structlog's `TimeStamper(fmt="iso", utc=True)` writes it."""
    event_dict["timestamp"] = iso_utc(time.time_ns())
    return event_dict


def iso_utc(ns: int) -> str:
    """`datetime.fromtimestamp(ns / 1e9, UTC).isoformat()` with `Z` (microseconds, none when
    zero), the date and time formatted once a second rather than once a line: isoformat was a
    tenth of the CPU of a hit's log line."""
    second, fraction = divmod(ns // 1000, 1_000_000)
    if second != _Clock.second:
        _Clock.second, _Clock.text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_Clock.text}.{fraction:06d}Z" if fraction else f"{_Clock.text}Z"


def configure(fmt: LogFormat = "json", level: int = logging.INFO) -> None:
    """Set up structlog for the process, and route the standard library's other records
    (asyncio's, aiohttp's) through it. Call once, before serving."""
    server_log = logging.getLogger("aiohttp.server")
    if _BAD_REQUESTS not in server_log.filters:
        server_log.addFilter(_BAD_REQUESTS)
    _bridge_stdlib()
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _timestamp,
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


class _StdlibBridge(logging.Handler):
    """Standard-library records as one structlog line each, rate-limited per kind.

    asyncio logs every failed accept (`Too many open files`) with a traceback, and aiohttp
    anything but a bad request (`_BadRequests`) the same way: unbounded, multi-line, not JSON. A
    record keeps its logger name, its message template's first line and its error's type;
    never the template's arguments (aiohttp's carry the peer's IP address), the error's text
    (it quotes the request's bytes) or the traceback. A kind seen within REPEAT_EVERY_S is
    counted, and the count goes out with its next line (`repeated`)."""

    def __init__(self, every_s: float = REPEAT_EVERY_S) -> None:
        super().__init__()
        self._every_s = every_s
        self._seen: dict[tuple[str, str, str | None], tuple[float, int]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        message = str(record.msg).split("\n", 1)[0][:200]
        key = (record.name, message, type(exc).__name__ if exc is not None else None)
        now = time.monotonic()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self._every_s:
            self._seen[key] = (last[0], last[1] + 1)
            return
        if len(self._seen) >= _MAX_KINDS:
            self._seen.clear()
        self._seen[key] = (now, 0)
        fields: dict[str, object] = {"logger": record.name, "message": message}
        if exc is not None:
            fields["error"] = type(exc).__name__
            if isinstance(exc, OSError) and exc.errno is not None:
                fields["errno"] = exc.errno
        if last is not None and last[1]:
            fields["repeated"] = last[1]
        try:
            structlog.get_logger("gateway.stdlib").log(record.levelno, "log", **fields)
        except Exception:
            self.handleError(record)


def _bridge_stdlib() -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StdlibBridge)]:
        root.removeHandler(handler)
    root.addHandler(_StdlibBridge())
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
