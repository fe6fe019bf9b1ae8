"""The log lines' timestamp: the text structlog's `TimeStamper(fmt="iso", utc=True)` wrote."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog

from gateway.observe.logs import IsoStamper

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def structlog_text(nanos: int) -> str:
    """What structlog writes for that moment: `datetime.now` rounds the clock down to the
    microsecond, then `isoformat` with `+00:00` made `Z`."""
    return (EPOCH + timedelta(microseconds=nanos // 1000)).isoformat().replace("+00:00", "Z")


def test_the_same_text_as_structlog_for_fixed_moments() -> None:
    moments = [
        1_796_633_700_000_000_000,  # a whole second: no fraction, as isoformat writes it
        1_796_633_700_000_000_999,  # under a microsecond past it: still none
        1_796_633_700_000_001_000,
        1_796_633_700_123_456_789,
        1_796_633_700_999_999_999,  # the last microsecond of a second
        1_796_633_701_000_000_000,  # the next second: a new date and time of day
        1_798_761_599_999_999_000,  # the last microsecond of a year
        1_798_761_600_000_000_500,  # and the new year's first
        951_782_400_000_000_000,  # 29 February 2000
    ]
    clock = iter(moments)
    stamp = IsoStamper(clock=lambda: next(clock))
    for nanos in moments:
        assert stamp(None, "info", {})["timestamp"] == structlog_text(nanos)


def test_the_same_moment_as_structlog_on_the_real_clock() -> None:
    theirs = structlog.processors.TimeStamper(fmt="iso", utc=True)
    ours = IsoStamper()
    for _ in range(1000):
        before = theirs(None, "info", {})["timestamp"]
        mine = ours(None, "info", {})["timestamp"]
        after = theirs(None, "info", {})["timestamp"]
        assert mine.endswith("Z") and len(mine) in (20, 27)
        read = datetime.fromisoformat
        assert read(before) <= read(mine) <= read(after)
