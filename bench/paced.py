"""An open-loop load at a fixed rate, latency taken from each request's *scheduled* send time.

    python bench/paced.py --port 8080 --rate 1000 --duration 10 [--path /tr?...]

wrk is a closed loop: when the server stalls, wrk stops sending and the stall shows up as one
slow request instead of the hundreds that would have queued behind it (coordinated omission).
wrk2 fixes that, but Debian has no package. This client sends request i at start + i/rate
whatever the server does; a request that finds every connection busy waits in a queue, and its
latency still runs from when it was due. Prints one JSON line: sent, answered, errors, the
latency percentiles in ms, and how late the client itself sent (its own lag, so a client too
slow for the rate shows instead of hiding in the figures).

The loop runs on `select()` rather than epoll: epoll's timeouts round up to whole
milliseconds, three intervals at 3,000 req/s, where select's are microseconds. The scheduler
sleeps between sends rather than spinning, because a sleeping process is woken promptly when
other work shares its core and a spinning one is made to wait its turn. Pin this client to its
own core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import selectors
import time
from collections import deque
from collections.abc import Callable


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time."""

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.due = 0.0
        self.want: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, request: bytes, due: float) -> None:
        assert self.transport is not None
        self.due = due
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.want is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            status = int(self.buffer[9:12])
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            self.want = end + 4 + length
            self.status = status
        if len(self.buffer) >= self.want:
            self.buffer = self.buffer[self.want :]
            self.want = None
            self.client.answered(self, self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.lost(self)


class _Client:
    def __init__(self, request: Callable[[int], bytes], warmup_until: float) -> None:
        self.request = request
        self.idle: deque[_Connection] = deque()
        self.waiting: deque[tuple[float, int]] = deque()
        self.latencies: list[float] = []
        self.lags: list[float] = []
        self.errors = 0
        self.outstanding = 0
        self.warmup_until = warmup_until
        self.all_sent = False
        self.drained = asyncio.Event()

    def dispatch(self, due: float, n: int, now: float) -> None:
        self.outstanding += 1
        if due >= self.warmup_until:
            self.lags.append(now - due)
        if self.idle:
            self._send(self.idle.popleft(), due, n)
        else:
            self.waiting.append((due, n))

    def _send(self, conn: _Connection, due: float, n: int) -> None:
        conn.send(self.request(n), due)

    def answered(self, conn: _Connection, status: int) -> None:
        now = time.perf_counter()
        self.outstanding -= 1
        if conn.due >= self.warmup_until:
            if status >= 400:
                self.errors += 1
            self.latencies.append(now - conn.due)
        if self.waiting:
            self._send(conn, *self.waiting.popleft())
        else:
            self.idle.append(conn)
        if self.all_sent and not self.outstanding:
            self.drained.set()

    def lost(self, conn: _Connection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))] * 1000


async def run(
    host: str,
    port: int,
    rate: float,
    duration: float,
    request: Callable[[int], bytes],
    connections: int = 50,
    warmup: float = 1.0,
) -> dict[str, float]:
    """Send at `rate` for `warmup + duration` seconds; figures cover the last `duration`."""
    loop = asyncio.get_running_loop()
    start = time.perf_counter() + 0.2
    client = _Client(request, start + warmup)
    for _ in range(connections):
        _, conn = await loop.create_connection(lambda: _Connection(client), host, port)
        client.idle.append(conn)
    total = int(rate * (warmup + duration))
    sent = 0
    while sent < total:
        now = time.perf_counter()
        while sent < total and start + sent / rate <= now:
            client.dispatch(start + sent / rate, sent, now)
            sent += 1
        if sent < total:
            await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
    client.all_sent = True
    if client.outstanding:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.drained.wait(), 10)
    unanswered = client.outstanding
    for conn in list(client.idle):
        if conn.transport is not None:
            conn.transport.close()
    measured = len(client.latencies) + unanswered
    return {
        "rate": rate,
        "sent": int(rate * duration),
        "answered": len(client.latencies),
        "unanswered": unanswered,
        "errors": client.errors,
        "p50_ms": _percentile(client.latencies, 50),
        "p90_ms": _percentile(client.latencies, 90),
        "p99_ms": _percentile(client.latencies, 99) if not unanswered else float("inf"),
        "p999_ms": _percentile(client.latencies, 99.9) if not unanswered else float("inf"),
        "max_ms": max(client.latencies, default=float("nan")) * 1000,
        "client_lag_p99_ms": _percentile(client.lags, 99),
        "measured": measured,
    }


def get_request(host: str, port: int, path: str) -> Callable[[int], bytes]:
    """GET `path` plus a unique `eid` per request (so no hit is a duplicate of another)."""
    sep = "&" if "?" in path else "?"
    head = f"GET {path}{sep}eid=p-".encode()
    tail = (f" HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: Mozilla/5.0 bench\r\n\r\n").encode()
    stamp = time.time_ns()
    return lambda n: head + f"{stamp}-{n}".encode() + tail


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--path", default="/tr?id=1&ev=PageView")
    args = parser.parse_args()
    request = get_request(args.host, args.port, args.path)
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    figures = loop.run_until_complete(
        run(args.host, args.port, args.rate, args.duration, request, args.connections)
    )
    loop.close()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
