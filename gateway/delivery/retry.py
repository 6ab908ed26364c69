"""When a row is tried again, and when it is given up: backoff, the retry budget, the platform's
age limit. Pure functions of the row, the answer and the clock; the worker does the I/O."""

from __future__ import annotations

import random
from typing import Final

from gateway.destinations.base import Destination, Result, Verdict
from gateway.outbox import Claimed, Finished, Status

AGE_MARGIN_S: Final = 60.0
"""The last try of an event comes this long before the platform's age limit (clocks differ)."""


def backoff_s(
    attempt: int,
    base_ms: int,
    max_ms: int,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Delay before the next try: `base_ms` doubled with each attempt up to `max_ms`, of which
    a random half to all (equal jitter: the wait grows with every attempt, and a crowd of rows
    that failed together spreads out), never sooner than the platform's `Retry-After`.
    """
    cap = min(max_ms, base_ms * 2 ** min(max(0, attempt - 1), 62)) / 1000
    delay = (rng or random).uniform(cap / 2, cap)
    return max(delay, retry_after_s or 0.0)


def answered(
    dest: Destination,
    row: Claimed,
    result: Result,
    http_status: int | None,
    latency_ms: float,
    now: float,
    paused_until: float | None = None,
) -> Finished:
    """What one answer makes of a row: sent, tried again when, or dead and why.

    A refused credential is not the event's fault: the row waits queued until `paused_until`
    (the worker's next probe) and the try does not count. A transient failure is retried after
    `backoff_s` while the retry budget and the platform's age limit allow, with one last try
    where the backoff would overshoot them.
    """
    retry = dest.settings.retry
    attempts = row.attempts + 1
    first_attempt_at = row.first_attempt_at or now
    status = Status.DEAD
    next_at = now
    message = result.message
    if result.auth:
        # Not the event's fault: it waits, queued, and the try does not count as an attempt.
        return Finished(
            id=row.id,
            status=Status.QUEUED,
            attempts=row.attempts,
            next_attempt_at=paused_until or now,
            http_status=http_status,
            message=f"waiting for working credentials: {message}",
            latency_ms=latency_ms,
            first_attempt_at=row.first_attempt_at or now,
            erase_payload=False,
        )
    if result.verdict is Verdict.SENT:
        status = Status.SENT
    elif result.verdict is Verdict.RETRY:
        next_at = now + backoff_s(attempts, retry.base_ms, retry.max_ms, result.retry_after_s)
        budget_ends = first_attempt_at + retry.give_up_after
        age_ends = (
            float("inf")
            if dest.max_age_s is None
            else row.event_time + dest.max_age_s - AGE_MARGIN_S
        )
        last_try = min(budget_ends, age_ends)
        if retry.max_attempts is not None and attempts >= retry.max_attempts:
            message = f"gave up after {attempts} attempts: {message}"
        elif next_at <= last_try:
            status = Status.FAILED
        elif now < last_try and now + (result.retry_after_s or 0.0) <= last_try:
            # The backoff would overshoot the budget: one last try when it ends.
            status, next_at = Status.FAILED, last_try
        elif age_ends <= budget_ends:
            message = f"would pass the platform's age limit before the next try: {message}"
        else:
            spent = _span(now - first_attempt_at)
            message = f"gave up after {spent} and {attempts} attempts: {message}"
    return Finished(
        id=row.id,
        status=status,
        attempts=attempts,
        next_attempt_at=next_at,
        http_status=http_status,
        message=message,
        latency_ms=latency_ms,
        first_attempt_at=first_attempt_at,
        # A dead row keeps its payload so an operator can fix the cause and replay it;
        # retention prunes it. A sent one has no use for it.
        erase_payload=status is Status.SENT and not dest.keeps_payload,
    )


def unsent(dest: Destination, row: Claimed, status: Status, message: str, now: float) -> Finished:
    """A row settled without an attempt (too old, no payload): `status` with `message`."""
    return Finished(
        id=row.id,
        status=status,
        attempts=row.attempts,
        next_attempt_at=now,
        http_status=None,
        message=message,
        latency_ms=None,
        first_attempt_at=row.first_attempt_at or now,
        erase_payload=not dest.keeps_payload,
    )


def _span(seconds: float) -> str:
    """`4h0m`, `12m30s`, `45s`: a retry span for the log."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"
