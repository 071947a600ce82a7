"""RFC 3339 formatting and parsing (:mod:`vkec2.domain.times`), the fleet's one text form of a time."""

from __future__ import annotations

import datetime

from vkec2.domain.times import parse_rfc3339, rfc3339

T = 1714564800.123456  # 2024-05-01T12:00:00.123456Z


def test_whole_seconds_milliseconds_and_microseconds() -> None:
    assert rfc3339(T) == "2024-05-01T12:00:00Z"
    assert rfc3339(T, digits=3) == "2024-05-01T12:00:00.123Z"
    assert rfc3339(T, digits=6) == "2024-05-01T12:00:00.123456Z"
    assert rfc3339(1714564800.9996, digits=3) == "2024-05-01T12:00:00.999Z"  # truncated, not rounded


def test_datetimes_are_written_in_utc_and_a_naive_one_is_utc() -> None:
    naive = datetime.datetime(2024, 5, 1, 12, 0, 0)
    aware = datetime.datetime(2024, 5, 1, 14, 0, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert rfc3339(naive) == rfc3339(aware) == "2024-05-01T12:00:00Z"


def test_parse_reads_back_what_rfc3339_writes_and_offsets() -> None:
    assert parse_rfc3339(rfc3339(T, digits=6)) == T
    assert parse_rfc3339("2024-05-01T14:00:00+02:00") == parse_rfc3339("2024-05-01T12:00:00Z")
    assert parse_rfc3339("2024-05-01T12:00:00") == parse_rfc3339("2024-05-01T12:00:00Z")
    assert parse_rfc3339("") is None
    assert parse_rfc3339("yesterday") is None
