from datetime import UTC, date, datetime, time

import pytest

from frontdesk.core.clock import Clock, FrozenClock


def test_hospital_date_is_computed_in_its_time_zone() -> None:
    # 2026-11-27 16:30 UTC is already the 28th in Shanghai.
    clock = FrozenClock(datetime(2026, 11, 27, 16, 30, tzinfo=UTC))
    assert clock.today() == date(2026, 11, 28)
    assert clock.now() == datetime(2026, 11, 27, 16, 30, tzinfo=UTC)


def test_day_bounds_are_local_midnights_in_utc() -> None:
    clock = Clock("Asia/Shanghai")
    start, end = clock.day_bounds(date(2026, 11, 27))
    assert start == datetime(2026, 11, 26, 16, 0, tzinfo=UTC)
    assert end == datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
    assert clock.at_local(date(2026, 11, 27), time(7, 0)) == datetime(
        2026, 11, 26, 23, 0, tzinfo=UTC
    )


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        FrozenClock(datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="aware"):
        Clock(now=lambda: datetime(2026, 1, 1)).now()  # noqa: DTZ001


def test_frozen_clock_advances() -> None:
    clock = FrozenClock(datetime(2026, 11, 27, 1, 0, tzinfo=UTC))
    clock.advance(minutes=90)
    assert clock.local_now().time() == time(10, 30)
