"""A fake outbox, a fake destination and a loop with a virtual clock, for unit tests of the
pipeline and the delivery worker.

They are small real classes, not mocks: the outbox keeps rows in a dict by the same rules as
the real backends (what is due, what a lease token guards, what `finish` writes), and the
destination is a real `Destination` whose `prepare`, `build_requests` and `classify` a test
scripts. Both record what was asked of them, so a test can say what the worker did.
"""

from __future__ import annotations

import asyncio
import builtins
import selectors
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from gateway.destinations.base import (
    Answer,
    Destination,
    Item,
    OutRequest,
    Rejected,
    Result,
    Verdict,
)
from gateway.event import JSON, Event
from gateway.outbox import (
    PENDING,
    Added,
    Claimed,
    Finished,
    Lease,
    NewEvent,
    Status,
    WriteHealth,
)
from gateway.settings import DestinationSettings


@dataclass
class Row:
    """One delivery row as the fake outbox holds it."""

    id: int
    destination: str
    status: Status
    payload: bytes | None
    event_id: str = "e"
    event_name: str = "purchase"
    event_time: int = 0
    attempts: int = 0
    next_attempt_at: float = 0.0
    leased_until: float = 0.0
    first_attempt_at: float | None = None
    http_status: int | None = None
    message: str | None = None


@dataclass
class FakeOutbox:
    """The outbox interface the pipeline and the worker use, in memory.

    Dedup, retention, replay and the report's reads belong to the outbox's own behaviour suite
    (tests/outbox/); this fake stores every queued delivery as queued.
    """

    rows: dict[int, Row] = field(default_factory=dict)
    events: list[NewEvent] = field(default_factory=list)
    claims: list[tuple[str, int, list[int]]] = field(default_factory=list)
    """Each claim: destination, limit, the ids it leased."""
    finished: list[list[Finished]] = field(default_factory=list)
    """Each `finish` call's outcomes, in the order they were written."""
    extensions: list[tuple[list[Lease], float, list[int]]] = field(default_factory=list)
    """Each `extend_leases` call: the leases asked for, the new lease, the ids extended."""
    returned: list[list[Lease]] = field(default_factory=list)
    finish_delay_s: float = 0.0
    """How long each `finish` takes; like the real outbox's one writer, one at a time."""
    fail_next_claims: int = 0
    """The next this many claims raise, as a lost database connection would."""
    visitor_secret: bytes = b"k" * 32
    write_health: WriteHealth = field(default_factory=WriteHealth)
    on_queued: Callable[[Iterable[str]], None] = lambda destinations: None
    _next_id: int = 1
    _writer: asyncio.Lock = field(default_factory=asyncio.Lock)

    def put(self, destination: str, payload: JSON = None, **columns: Any) -> int:
        """A queued row, due now unless `columns` say otherwise; its id."""
        row_id = self._next_id
        self._next_id += 1
        raw = columns.pop("raw", orjson.dumps(payload) if payload is not None else None)
        self.rows[row_id] = Row(row_id, destination, columns.pop("status", Status.QUEUED), raw)
        for name, value in columns.items():
            setattr(self.rows[row_id], name, value)
        return row_id

    def status(self, row_id: int) -> Status:
        """The row's status now."""
        return self.rows[row_id].status

    async def close(self) -> None:
        """Nothing to finish."""

    async def ping(self) -> None:
        """Always takes writes."""

    async def add(self, events: Sequence[NewEvent]) -> list[Added]:
        """Store events' delivery rows; `on_queued` hears of the destinations given work."""
        return self._add(events)

    def add_soon(self, events: Sequence[NewEvent]) -> asyncio.Future[list[Added]]:
        """`add` as the browser path calls it: a future, here settled at once."""
        future: asyncio.Future[list[Added]] = asyncio.get_running_loop().create_future()
        future.set_result(self._add(events))
        return future

    def _add(self, events: Sequence[NewEvent]) -> list[Added]:
        added: list[Added] = []
        touched: set[str] = set()
        for event in events:
            self.events.append(event)
            statuses: list[tuple[str, str]] = []
            ids: list[tuple[int, int | None]] = []
            for d in event.deliveries:
                row_id = self.put(
                    d.destination,
                    raw=d.payload,
                    status=d.status,
                    event_id=event.event_id,
                    event_name=d.event_name or event.event_name,
                    event_time=event.event_time,
                    next_attempt_at=event.received_at,
                    message=d.message,
                )
                statuses.append((d.destination, str(d.status)))
                ids.append((row_id, None))
                if d.status is Status.QUEUED:
                    touched.add(d.destination)
            queued = sum(1 for _, s in statuses if s == Status.QUEUED)
            added.append(Added(len(self.events), queued, 0, tuple(statuses), tuple(ids)))
        if touched:
            self.on_queued(touched)
        return added

    async def claim(
        self, destination: str, limit: int, lease_s: float, now: float | None = None
    ) -> list[Claimed]:
        """Lease up to `limit` due, unleased rows of one destination, oldest due first."""
        if self.fail_next_claims:
            self.fail_next_claims -= 1
            raise ConnectionError("the database went away")
        at = time.time() if now is None else now
        due = sorted(
            (
                r
                for r in self.rows.values()
                if r.destination == destination
                and r.status in PENDING
                and r.next_attempt_at <= at
                and r.leased_until <= at
            ),
            key=lambda r: (r.next_attempt_at, r.id),
        )[:limit]
        for r in due:
            r.leased_until = at + lease_s
        self.claims.append((destination, limit, [r.id for r in due]))
        return [
            Claimed(r.id, r.payload, r.attempts, r.event_time, r.first_attempt_at, r.leased_until)
            for r in sorted(due, key=lambda r: r.id)
        ]

    async def finish(self, outcomes: Sequence[Finished], now: float | None = None) -> None:
        """Write outcomes back and release their leases."""
        if not outcomes:
            return
        async with self._writer:
            await asyncio.sleep(self.finish_delay_s)
            self._finish(outcomes)

    def _finish(self, outcomes: Sequence[Finished]) -> None:
        self.finished.append(list(outcomes))
        for o in outcomes:
            r = self.rows[o.id]
            r.status, r.attempts, r.next_attempt_at = o.status, o.attempts, o.next_attempt_at
            r.http_status, r.message, r.leased_until = o.http_status, o.message, 0.0
            r.first_attempt_at = r.first_attempt_at or o.first_attempt_at
            if o.erase_payload:
                r.payload = None

    async def extend_leases(self, leases: Sequence[Lease], until: float) -> list[int]:
        """Move the leases still pending and held as written to `until`; the ids moved."""
        extended = []
        for row_id, held in leases:
            r = self.rows[row_id]
            if r.leased_until == held and r.status in PENDING:
                r.leased_until = until
                extended.append(row_id)
        self.extensions.append((list(leases), until, extended))
        return extended

    async def return_leases(self, leases: Sequence[Lease]) -> int:
        """Give rows still held as written back to the queue, due at once; how many."""
        self.returned.append(list(leases))
        count = 0
        for row_id, held in leases:
            r = self.rows[row_id]
            if r.leased_until == held and r.status in PENDING:
                r.leased_until = 0.0
                count += 1
        return count

    async def release_leases(self) -> int:
        """Every lease back to the queue."""
        held = [r for r in self.rows.values() if r.leased_until > 0]
        for r in held:
            r.leased_until = 0.0
        return len(held)

    async def next_due(self, destination: str) -> float | None:
        """When the earliest pending row of a destination is due."""
        due = [
            r.next_attempt_at
            for r in self.rows.values()
            if r.destination == destination and r.status in PENDING
        ]
        return min(due) if due else None


Classify = Callable[[OutRequest, Answer], Result]
Prepare = Callable[[Event], JSON | Rejected]


def by_status(request: OutRequest, answer: Answer) -> Result:
    """The fake platform's codes: 2xx sent, 401 the token, 5xx or no answer retry, else dead."""
    if answer.status is not None and 200 <= answer.status < 300:
        return Result(Verdict.SENT, "ok")
    if answer.status == 401:
        return Result(Verdict.RETRY, "token expired", auth=True)
    if answer.status is None or answer.status >= 500:
        return Result(Verdict.RETRY, answer.error or f"HTTP {answer.status}")
    return Result(Verdict.DEAD, f"HTTP {answer.status}")


def event_payload(event: Event) -> JSON:
    """What the fake destination stores of an event: enough for tests to read back."""
    return {
        "id": event.event_id,
        "name": event.event_name,
        "email": event.user.email,
        "ip": event.user.client_ip,
        "limited": event.limited,
        "extra": dict(event.custom.extra),
    }


class FakeSettings(DestinationSettings):
    """The fake destination's keys: only the common ones."""

    type: str = "fake"


class FakeDestination(Destination):
    """A real destination whose answers a test scripts.

    `prepare` stores `event_payload(event)` unless a `prepare` is given; `build_requests` puts
    `per_request` items in each request to `url`; `classify` defaults to `by_status`. Every
    request it is asked to classify is kept in `classified`.
    """

    type: ClassVar[str] = "fake"
    settings_model: ClassVar[builtins.type[DestinationSettings]] = FakeSettings

    def __init__(
        self,
        name: str = "fake",
        settings: DestinationSettings | None = None,
        *,
        url: str = "http://127.0.0.1:9/",
        pixel: str | None = None,
        per_request: int | None = None,
        classify: Classify = by_status,
        prepare: Prepare = event_payload,
        **class_traits: Any,
    ) -> None:
        super().__init__(name, settings or FakeSettings())
        self.url = url
        self.pixel = pixel
        self.per_request = per_request
        self._classify = classify
        self._prepare = prepare
        self.prepared: list[Event] = []
        self.classified: list[tuple[OutRequest, Answer, Result]] = []
        # max_age_s, sends, can_limit, keeps_payload, default_requires...: per test.
        for trait, value in class_traits.items():
            if not hasattr(Destination, trait):
                raise AttributeError(trait)
            setattr(self, trait, value)

    @property
    def own_id(self) -> str | None:
        """The pixel this destination serves, if any."""
        return self.pixel

    def hit_id(self, event: Event) -> str | None:
        """The Meta pixel a hit was for (a stand-in for any tag's own ID), when this
        destination serves a pixel; a destination without one routes by nothing."""
        if self.pixel is None or event.meta is None:
            return None
        return event.meta.pixel_id

    def prepare(self, event: Event) -> JSON | Rejected:
        """The scripted payload; the event as it came is kept in `prepared`."""
        self.prepared.append(event)
        return self._prepare(event)

    def build_requests(self, items: Sequence[Item]) -> list[OutRequest]:
        """`per_request` items a request (all of them when None)."""
        size = self.per_request or len(items)
        return [
            OutRequest(
                "POST",
                self.url,
                items[i : i + size],
                {"content-type": "application/json"},
                b"[" + b",".join(item.raw for item in items[i : i + size]) + b"]",
            )
            for i in range(0, len(items), size)
        ]

    def classify(self, request: OutRequest, answer: Answer) -> Result:
        """The scripted verdict, recorded."""
        result = self._classify(request, answer)
        self.classified.append((request, answer, result))
        return result

    def sent_ids(self) -> list[list[int]]:
        """The delivery ids of each request classified, in order."""
        return [[item.delivery_id for item in request.items] for request, _, _ in self.classified]


class _JumpingSelector(selectors.DefaultSelector):
    """A selector that, when nothing is ready and a timer is next, jumps the clock to it."""

    offset = 0.0

    def select(self, timeout: float | None = None) -> list[Any]:
        ready: list[Any] = super().select(0)
        if ready or timeout is None:
            # Nothing scheduled at all: only I/O can wake the loop, so wait for it really.
            return ready or super().select(timeout)
        self.offset += max(timeout, 0.0)
        return ready


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose sleeps take no time: when every task waits on a timer, the clock
    jumps to the next one. For tests of loops that tick every ten seconds (lease keeping).

    Only `loop.time()` is virtual; `time.time()` still reads the wall clock. Use it with no
    real I/O: a socket's answer that takes a moment would be outrun by the jumps.
    """

    def __init__(self) -> None:
        self._jumping = _JumpingSelector()
        super().__init__(self._jumping)

    def time(self) -> float:
        """The monotonic clock plus every jump so far."""
        return super().time() + self._jumping.offset
