"""One preview session: the traces it shows, newest last, and the sequence of their changes."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Final, Generic, Protocol, TypeVar

TRACES_PER_SESSION: Final = 200


class Numbered(Protocol):
    """What a session needs of a trace: its number in the session, and its last change's."""

    id: int
    seq: int


T = TypeVar("T", bound=Numbered)


class Session(Generic[T]):
    """One preview session: its traces, newest last, and the sequence of their changes."""

    __slots__ = ("_changed", "expires_at", "id", "last_trace", "live", "seq", "traces")

    def __init__(self, session_id: str, expires_at: float) -> None:
        self.id = session_id
        self.expires_at = expires_at
        self.traces: deque[T] = deque()
        self.seq = 0
        self.last_trace = 0
        self.live = True
        """False once the session has ended (expired, or pushed out by a newer one)."""
        self._changed = asyncio.Event()

    def publish(self, trace: T) -> list[T]:
        """Show the trace from now on, numbered; the oldest traces it pushes out, if any (a
        session that has ended takes nothing)."""
        if not self.live:
            return []  # the session ended while the hit was taken
        self.last_trace += 1
        trace.id = self.last_trace
        self.traces.append(trace)
        pushed_out = []
        while len(self.traces) > TRACES_PER_SESSION:
            pushed_out.append(self.traces.popleft())
        self.bump(trace)
        return pushed_out

    def bump(self, trace: T) -> None:
        """The trace changed: give it the next seq and wake the long polls."""
        self.seq += 1
        trace.seq = self.seq
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def since(self, after: int) -> list[T]:
        """Traces changed after `after`, in the order of their changes."""
        return sorted((t for t in self.traces if t.seq > after), key=lambda t: t.seq)

    async def wait(self, after: int, timeout_s: float) -> list[T]:
        """`since(after)`, waiting up to `timeout_s` while it is empty."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.since(after)
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return []
