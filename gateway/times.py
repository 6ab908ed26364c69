"""Times and durations as people write them: in the config (`4h`, `90s`) and on the command line
(ISO 8601 timestamps or durations back from now, docs/operations.md §3)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Final

_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNIT_S: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> tuple[float, str] | None:
    """The seconds and the unit as written (`""` for bare seconds), or None."""
    match = _DURATION.fullmatch(text.strip().lower())
    return None if match is None else (float(match[1]) * _UNIT_S[match[2]], match[2])


def parse_duration(text: str, *, at_least: float = 0.0) -> float:
    """`90s`, `15m`, `4h`, `7d` or bare seconds, as seconds; ValueError saying why, also below
    `at_least` seconds."""
    parsed = _duration(text)
    if parsed is None:
        raise ValueError(f"not a duration: {text!r} (use 90s, 15m, 4h or 7d)")
    seconds = parsed[0]
    if seconds < at_least:
        raise ValueError(f"too short: {text!r} (at least {at_least:g}s)")
    return seconds


def parse_time(text: str, now: float | None = None) -> float:
    """`2026-11-27T10:00:00Z` or `90s` / `15m` / `2h` / `7d` (back from now) as epoch seconds."""
    value = text.strip()
    parsed = _duration(value)
    # Here a duration needs its unit: a bare number may be an ISO 8601 date (`20261127`).
    if parsed is not None and parsed[1]:
        return (time.time() if now is None else now) - parsed[0]
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not a time: {text!r} (use 2026-11-27T10:00:00Z or 15m, 2h, 7d)") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 UTC timestamp with milliseconds."""
    if epoch is None:
        return None
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
