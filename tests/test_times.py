"""The one duration grammar of the config and the command line (gateway/times.py)."""

from __future__ import annotations

import pytest

from gateway.times import parse_duration, parse_time

NOW = 1_795_000_000.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("4h", 14400), ("7d", 604800), ("2", 2), (" 1.5H ", 5400)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "1w", "h", "-1s", "1 hour", "4h30m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_parse_duration_at_least() -> None:
    assert parse_duration("1s", at_least=1) == 1
    with pytest.raises(ValueError, match=r"too short: '0\.5s' \(at least 1s\)"):
        parse_duration("0.5s", at_least=1)


def test_parse_time_takes_a_duration_back_from_now_or_an_iso_time() -> None:
    assert parse_time("15m", NOW) == NOW - 900
    assert parse_time("2h", NOW) == NOW - 7200
    assert parse_time("2026-11-27T10:00:00Z", NOW) == 1_795_773_600.0
    # A bare number is not a duration here: ISO 8601 writes a date as `20261127` too.
    assert parse_time("20261127", NOW) == 1_795_737_600.0
    with pytest.raises(ValueError, match="not a time"):
        parse_time("2", NOW)
