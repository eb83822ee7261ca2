"""One clock for the whole process, settable in tests.

Times are aware UTC everywhere; the hospital's calendar date is computed in its time zone.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


class Clock:
    def __init__(
        self, tz: ZoneInfo | str = "Asia/Shanghai", now: Callable[[], datetime] | None = None
    ) -> None:
        self.tz = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
        self._now = now

    def now(self) -> datetime:
        """The current instant, aware, in UTC."""
        value = self._now() if self._now is not None else datetime.now(UTC)
        if value.tzinfo is None:
            raise ValueError("the clock must return aware datetimes")
        return value.astimezone(UTC)

    def local_now(self) -> datetime:
        return self.now().astimezone(self.tz)

    def today(self) -> date:
        """The hospital's calendar date now."""
        return self.local_now().date()

    def local_date_of(self, instant: datetime) -> date:
        return to_local(instant, self.tz).date()

    def start_of_day(self, day: date) -> datetime:
        """The UTC instant at which ``day`` begins in the hospital's time zone."""
        return datetime.combine(day, time.min, tzinfo=self.tz).astimezone(UTC)

    def day_bounds(self, day: date) -> tuple[datetime, datetime]:
        """[start, end) of the hospital's calendar day, as UTC instants."""
        return self.start_of_day(day), self.start_of_day(day + timedelta(days=1))

    def at_local(self, day: date, at: time) -> datetime:
        return datetime.combine(day, at, tzinfo=self.tz).astimezone(UTC)


class FrozenClock(Clock):
    """A clock that only moves when told to (tests, simulations)."""

    def __init__(self, at: datetime, tz: ZoneInfo | str = "Asia/Shanghai") -> None:
        if at.tzinfo is None:
            raise ValueError("FrozenClock needs an aware datetime")
        super().__init__(tz)
        self._at = at.astimezone(UTC)
        self._now = lambda: self._at

    def set(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FrozenClock needs an aware datetime")
        self._at = at.astimezone(UTC)

    def advance(self, **delta: float) -> datetime:
        self._at = self._at + timedelta(**delta)
        return self._at


def to_local(instant: datetime, tz: ZoneInfo) -> datetime:
    if instant.tzinfo is None:
        raise ValueError("naive datetime: store and pass aware UTC times")
    return instant.astimezone(tz)


def utcnow() -> datetime:
    return datetime.now(UTC)


# The process clock. The composition root sets it from settings; tests replace it.
_current: Clock = Clock()


def get_clock() -> Clock:
    return _current


def set_clock(clock: Clock) -> Clock:
    """Install ``clock`` as the process clock and return the one it replaces."""
    global _current
    previous, _current = _current, clock
    return previous


def now() -> datetime:
    """The current instant (aware UTC) from the process clock."""
    return _current.now()
