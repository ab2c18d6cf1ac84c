"""FakeClock: the `clock` a test hands to Circlet, the scheduler or the fleet."""

from __future__ import annotations

from datetime import datetime, timedelta


class FakeClock:
    """A clock the test sets and moves. Each read advances it by `step` first (zero: reads
    repeat the time; a millisecond: every stamp differs, so "newest" is well defined);
    `tick(seconds)` moves it on and returns the new time. Tests may also assign `now`."""

    def __init__(self, now: datetime, *, step: timedelta = timedelta(0)) -> None:
        self.now = now
        self.step = step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now

    def tick(self, seconds: float = 1.0) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now
