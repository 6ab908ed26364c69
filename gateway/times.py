"""Times on the command line: ISO 8601 timestamps or durations back from now
(docs/operations.md §3)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Final

_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: float | None = None) -> float:
    """`2026-11-27T10:00:00Z` or `90s` / `15m` / `2h` / `7d` (back from now) as epoch seconds."""
    value = text.strip()
    match = _DURATION.fullmatch(value)
    if match:
        return (time.time() if now is None else now) - float(match[1]) * _UNIT[match[2]]
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not a time: {text!r} (use 2026-11-27T10:00:00Z or 15m, 2h, 7d)") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_duration(text: str) -> float:
    """`90s` / `15m` / `4h` / `7d` as seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a duration: {text!r} (use 90s, 15m, 4h or 7d)")
    return float(match[1]) * _UNIT[match[2]]


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 UTC timestamp with milliseconds."""
    if epoch is None:
        return None
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
