"""What every destination is: a pure payload builder, a request builder and a response classifier.

The delivery worker (`gateway/delivery.py`) owns the HTTP, the batching and the retries; a
destination only knows its vendor's formats. `prepare` runs on arrival, in memory: what it returns
is what gets stored, so it is where personal data is normalized and hashed.
"""

from __future__ import annotations

import builtins
import email.utils
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from decimal import Decimal
from enum import StrEnum
from typing import ClassVar, Final

import orjson

from gateway.event import JSON, Content, Event, json_number
from gateway.identifiers import Identifier
from gateway.personal_data.match_keys import Rules
from gateway.settings import DestinationSettings


class Verdict(StrEnum):
    """What an answer means for the events a request carried."""

    SENT = "sent"
    RETRY = "retry"  # transient: try again later
    DEAD = "dead"  # final: never try again
    SPLIT = "split"  # the whole batch was refused for one bad event: split it and resend


@dataclass(frozen=True, slots=True)
class Rejected:
    """`prepare` refused the event: it can never be delivered to this destination."""

    reason: str
    skipped: bool = False
    """True when nothing is wrong with the event but this platform cannot take it (GA4 without
    a client ID): the row is `dropped_rule` rather than `dead`."""


class Item:
    """One queued delivery handed to a destination: its row id and stored payload.

    The payload is kept as the stored JSON bytes and decoded only if a destination reads it:
    Meta and TikTok splice the bytes straight into their request bodies.
    """

    __slots__ = ("_payload", "_raw", "delivery_id")

    def __init__(self, delivery_id: int, payload: JSON = None, raw: bytes | None = None) -> None:
        self.delivery_id = delivery_id
        self._payload = payload
        self._raw = raw

    @property
    def payload(self) -> JSON:
        """The payload as JSON values."""
        if self._payload is None and self._raw is not None:
            self._payload = orjson.loads(self._raw)
        return self._payload

    @property
    def raw(self) -> bytes:
        """The payload as JSON bytes."""
        if self._raw is None:
            self._raw = orjson.dumps(self._payload)
        return self._raw

    def __repr__(self) -> str:
        return f"Item({self.delivery_id})"


@dataclass(frozen=True, slots=True)
class OutRequest:
    """One HTTP request a destination wants made, and which items it carries."""

    method: str
    url: str
    items: Sequence[Item]
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back: an HTTP answer, or None with an error for timeouts and socket errors."""

    status: int | None
    body: bytes
    headers: Mapping[str, str]
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Result:
    """The verdict on one request (applies to all its items)."""

    verdict: Verdict
    message: str
    retry_after_s: float | None = None
    auth: bool = False
    """The platform refused the credentials (an invalid or expired token), not an event: the
    destination waits, its events queued, until a probe finds the token working again."""


class Destination(ABC):
    """A platform the gateway delivers to. Subclasses know one vendor's API and nothing else."""

    type: ClassVar[str]
    vendor: ClassVar[str | None] = None
    identifiers: ClassVar[tuple[Identifier, ...]] = ()
    """The vendor's first-party IDs this platform matches on (`fbp`, `epik`): the canonical
    event carries them in `User.ids`, and the cookie plan, `limited` and the server API read
    them from the registry."""
    click_params: ClassVar[frozenset[str]] = frozenset()
    """The landing URL's parameters that name a click on this platform's ads (`fbclid`):
    `on_denied: limited` removes them from page URLs."""
    match_rules: ClassVar[Rules] = {}
    """How this platform normalizes each canonical user field before hashing (its table of
    `personal_data.match_keys` rules); a field not in it is never sent."""
    settings_model: ClassVar[builtins.type[DestinationSettings]]
    max_batch: ClassVar[int] = 1000
    """The platform's own per-request event limit."""
    max_age_s: ClassVar[int | None] = None
    """Events older than this are never sent (the platform would refuse them)."""
    default_requires: ClassVar[tuple[str, ...]] = ()
    """Consent purposes this platform needs when the config says nothing (docs/consent.md §7)."""
    can_limit: ClassVar[bool] = True
    """False where `on_denied: limited` cannot apply: the event is dropped instead."""
    sends: ClassVar[bool] = True
    """False for destinations that record instead of making requests (`dry_run`)."""
    keeps_payload: ClassVar[bool] = False
    """True when the stored payload is the record itself (`dry_run`) and outlives delivery."""
    test_mode: ClassVar[str | None] = None
    """How `validate` reaches the platform's test mode (`test_requests`), as `validate` says it:
    `TEST_EVENT_CODE` for the normal endpoint with the configured `test_event_code`, else the
    endpoint that records nothing (`?test=true`); None: none."""
    match_keys: ClassVar[frozenset[str] | None] = None
    """The report's match keys (`pipeline.MATCH_KEYS`) this platform matches on; None: all.
    `report --fail-on-drop` judges only these."""
    default_concurrency: ClassVar[int] = 8
    """Requests on the wire at once unless `concurrency:` says otherwise: the halves of a
    batch split to isolate bad events go out side by side."""

    def __init__(self, name: str, settings: DestinationSettings) -> None:
        self.name = name
        self.settings = settings

    @property
    def requires(self) -> tuple[str, ...]:
        """The purposes that must be granted for this destination to get an event whole."""
        configured = self.settings.requires
        return self.default_requires if configured is None else configured

    def requires_text(self) -> str:
        """What `requires` says, as `check` prints it."""
        return ", ".join(self.requires) or "nothing"

    def requires_for(self, event: Event) -> tuple[str, ...]:
        """The purposes this event needs granted here (`dry_run` asks the format it previews)."""
        return self.requires

    @property
    def concurrency(self) -> int:
        """Requests this destination may have on the wire at once."""
        configured = self.settings.concurrency
        return self.default_concurrency if configured is None else configured

    @property
    def batch_size(self) -> int:
        """Events per request: the configured size, never above the platform's limit."""
        configured = self.settings.batch.max_events
        return min(configured, self.max_batch) if configured else self.max_batch

    @classmethod
    def preview(cls, event: Event) -> JSON | None:
        """This vendor's per-event payload with default options, for `dry_run`; None if none."""
        return None

    @property
    def own_id(self) -> str | None:
        """The pixel, stream or pixel code this destination is (None: it serves no one ID)."""
        return None

    def hit_id(self, event: Event) -> str | None:
        """The ID a hit from this platform's own tag was for, None for any other event. Such a
        hit goes only to the destination whose `own_id` it names (several pixels, one each);
        events from other tags and the server API are not this platform's to route."""
        return None

    def accepts(self, event: Event) -> bool:
        """Whether this destination wants the event at all (beyond routing and `events:`)."""
        return True

    @abstractmethod
    def prepare(self, event: Event) -> JSON | Rejected:
        """The stored per-event payload: normalized, hashed, vendor-shaped. Pure."""

    @abstractmethod
    def build_requests(self, items: Sequence[Item]) -> list[OutRequest]:
        """Requests carrying these items (each within the platform's limits). Pure."""

    @abstractmethod
    def classify(self, request: OutRequest, answer: Answer) -> Result:
        """The verdict on one answer, by the platform's own codes first. Pure."""

    def test_skipped(self) -> str | None:
        """Why `validate` sends this destination nothing, or None when it can check it."""
        if self.test_mode is None:
            return f"{self.type} has no test mode"
        if self.test_mode == TEST_EVENT_CODE and not self._test_event_code():
            return "no test_event_code configured (samples would count as real events)"
        return None

    def test_how(self) -> str:
        """Where `validate`'s samples go, as it prints it (`with test_event_code TEST1`)."""
        if self.test_mode == TEST_EVENT_CODE:
            return f"with test_event_code {self._test_event_code()}"
        return f"to its test mode ({self.test_mode})"

    def test_requests(self, items: Sequence[Item]) -> list[OutRequest]:
        """Requests carrying these items to the platform's `test_mode`, for `validate`."""
        if self.test_mode == TEST_EVENT_CODE:
            return self.build_requests(items)  # the settings' test_event_code is in them
        raise NotImplementedError(f"{self.type} has no test mode")

    def test_findings(self, request: OutRequest, answer: Answer) -> tuple[list[str], list[str]]:
        """What `validate` says of the test mode's answer: (details, problems)."""
        result = self.classify(request, answer)
        if result.verdict is Verdict.SENT:
            return [f"accepted: {result.message}"], []
        if result.verdict is Verdict.RETRY:
            return [], [f"failed (a delivery would retry): {result.message}"]
        return [], [f"refused: {result.message}"]

    def _test_event_code(self) -> str | None:
        code: str | None = getattr(self.settings, "test_event_code", None)
        return code

    def describe(self) -> str:
        """A one-line, secret-free summary for `tag-gateway check`."""
        return self.type


TEST_EVENT_CODE: Final = "test_event_code"
"""The `test_mode` of a platform whose normal endpoint shows events sent with a configured
`test_event_code` in its test view instead of counting them (Meta, TikTok, Reddit)."""

MAX_RETRY_AFTER_S = 3600.0
"""The longest Retry-After honoured; past it the next try comes after an hour."""


def line_items(contents: Sequence[Content], keys: Mapping[str, str]) -> list[dict[str, JSON]]:
    """The canonical contents in a platform's keys (`keys`: `Content` field → the platform's
    key, in the order to write them, as `coerce.contents_from` reads them), unset fields left
    out, prices as JSON numbers."""
    rows: list[dict[str, JSON]] = []
    for item in contents:
        row: dict[str, JSON] = {}
        for name, key in keys.items():
            value = getattr(item, name)
            if isinstance(value, Decimal):
                value = json_number(value)
            if value is not None:
                row[key] = value
        rows.append(row)
    return rows


def shown_url(url: str) -> str:
    """A URL fit to print: any `user:password@` (an outbound proxy's, say) left out."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path}"


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """`Retry-After` in seconds from now: the delay form or an HTTP date (RFC 9110 §10.2.3),
    at most `MAX_RETRY_AFTER_S`; None when absent or unreadable."""
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if raw is None:
        return None
    try:
        seconds = float(raw.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # a date without a zone is read as GMT, as HTTP dates are
            when = when.replace(tzinfo=UTC)
        seconds = max(0.0, when.timestamp() - (time.time() if now is None else now))
    # `1e999` is infinity, and a year is as good as never: a row must always come due again.
    return min(seconds, MAX_RETRY_AFTER_S) if 0 <= seconds < float("inf") else None


def not_the_answer(answer: Answer, platform: str) -> Result:
    """A 2xx whose body is not the platform's success answer (a captive proxy's login page, a
    broken load balancer's empty or cut-off body): nothing says the events arrived, so retry."""
    snippet = answer.body[:120].decode("utf-8", "replace").strip() or "empty body"
    return Result(Verdict.RETRY, f"HTTP {answer.status} without {platform}'s answer: {snippet}")


def classify_by_status(answer: Answer, message: str | None = None) -> Result:
    """The fallback when a platform gives no code of its own (docs/operations.md §5).

    408, 429, 5xx, timeouts and connection errors are transient; other 4xx are final.
    """
    status = answer.status
    text = (
        message
        or answer.error
        or answer.body[:300].decode("utf-8", "replace").strip()
        or f"HTTP {status}"
    )
    if status is None:
        return Result(Verdict.RETRY, text or "no answer")
    if 200 <= status < 300:
        return Result(Verdict.SENT, text)
    if status in (408, 429) or status >= 500:
        return Result(Verdict.RETRY, text, retry_after_seconds(answer.headers))
    return Result(Verdict.DEAD, text)


TOKEN_REFUSED: Final = frozenset({401, 403})
"""HTTP statuses that blame the token, never an event: the destination waits for a working one."""


def classify_refusal(
    answer: Answer, status: int, text: str, batch_size: int, bad_event: frozenset[int]
) -> Result:
    """A refusal of a platform that speaks by HTTP status: the token's (the destination waits),
    one bad event's (it spoils its whole request: isolate it), else as `classify_by_status`."""
    if status in TOKEN_REFUSED:
        return Result(Verdict.RETRY, text, auth=True)
    if status in bad_event:
        return Result(Verdict.SPLIT if batch_size > 1 else Verdict.DEAD, text)
    by_status = classify_by_status(answer)
    return Result(by_status.verdict, text, by_status.retry_after_s)
