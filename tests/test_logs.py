"""The JSON log line's timestamp: the text structlog's ISO stamper writes, made cheaper."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.logs import iso_utc

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def test_the_timestamp_is_the_iso_text_of_datetime_to_the_microsecond() -> None:
    for ns in (
        1_795_000_000_000_000_000,  # a whole second: no fraction, as isoformat writes it
        1_795_000_000_123_456_789,  # nanoseconds are cut, not rounded
        1_795_000_000_999_999_999,
        1_795_000_001_000_000_999,  # the next second, from the cached one
        1_795_000_000_000_001_000,  # and back: the cache follows the clock both ways
        86_399_999_999_000,
    ):
        expected = (EPOCH + timedelta(microseconds=ns // 1000)).isoformat()
        assert iso_utc(ns) == expected.replace("+00:00", "Z")
