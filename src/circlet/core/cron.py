"""POSIX cron expressions for scheduled workflows (spec config.md 5.6). Pure.

`parse("0 3 * * 1-5")` reads the five fields `minute hour day-of-month month day-of-week`;
`matches(expr, t)` says whether a UTC minute is one of the expression's, `next_after(expr, t)`
gives the first one strictly after `t`. Times are UTC: an aware datetime is converted, a naive
one is taken as UTC; seconds are ignored (a schedule names minutes).

DECISIONS (the spec's, written down):
- Fields: minute 0-59, hour 0-23, day of month 1-31, month 1-12, day of week 0-7 (0 and 7 are
  Sunday). Each field is `*` or a comma list of `N`, `A-B`, `*/S`, `A-B/S` (CircleCI rejects
  ranges and steps; POSIX has ranges; circlet accepts both, as every cron does).
- Names (`MON`, `JAN`), `?`, `L`, `W`, `#`, `@daily` and six-field expressions are refused
  with a message saying what to write instead.
- Day of month and day of week: when both are restricted (neither starts with `*`), a day
  matches if either matches (POSIX); when one starts with `*`, only the other counts.
- An expression that can never fire (`0 0 30 2 *`) is an error, not a schedule that never runs.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from circlet.core.errors import ConfigError, Problem

_FIELDS = (  # name, lowest, highest
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_SEARCH_DAYS = 366 * 29  # every (day of month, month, weekday) combination recurs within 28 years


@dataclass(frozen=True, kw_only=True)
class CronExpr:
    """A parsed cron expression: the values each field allows (day of week 0-6, Sunday = 0)."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]  # day of month
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_star: bool  # the day-of-month field starts with `*`
    weekdays_star: bool  # the day-of-week field starts with `*`

    def day_matches(self, day: datetime) -> bool:
        """Whether a date is one of the expression's days (both day fields, POSIX's rule)."""
        if day.month not in self.months:
            return False
        by_date = day.day in self.days
        by_weekday = (day.isoweekday() % 7) in self.weekdays
        if self.days_star or self.weekdays_star:
            return by_date and by_weekday
        return by_date or by_weekday


def parse(text: str, *, path: str = "cron") -> CronExpr:
    """Parse a five-field cron expression; ConfigError (every problem, each at `path`) if bad."""
    problems: list[str] = []
    parts = text.split() if isinstance(text, str) else []
    if not isinstance(text, str):
        problems.append(f'a cron expression is a string like "0 3 * * *", not {text!r}')
    elif text.strip().startswith("@"):
        problems.append(f'{text.strip()!r}: write the five fields instead (@daily is "0 0 * * *")')
    elif len(parts) != 5:
        problems.append(
            f"{text!r} has {len(parts)} fields: a cron expression has five, "
            "`minute hour day-of-month month day-of-week` (UTC)"
        )
    if problems:
        raise ConfigError([Problem(message=m, path=path) for m in problems])
    values: list[frozenset[int]] = []
    for (name, low, high), part in zip(_FIELDS, parts, strict=True):
        found = _field(part, name, low, high, problems)
        values.append(found)
    if problems:
        raise ConfigError([Problem(message=f"{text!r}: {m}", path=path) for m in problems])
    expr = CronExpr(
        text=" ".join(parts),
        minutes=values[0],
        hours=values[1],
        days=values[2],
        months=values[3],
        weekdays=frozenset(v % 7 for v in values[4]),
        days_star=parts[2].startswith("*"),
        weekdays_star=parts[4].startswith("*"),
    )
    if expr.weekdays_star and not _date_exists(expr):
        raise ConfigError(
            [Problem(message=f"{text!r} never fires: no month chosen has such a day", path=path)]
        )
    return expr


def _field(part: str, name: str, low: int, high: int, problems: list[str]) -> frozenset[int]:
    out: set[int] = set()
    for item in part.split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                problems.append(f"{name}: the step of {item!r} must be a whole number of at least 1")
                continue
            step = int(step_text)
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            if not (a.isdigit() and b.isdigit()):
                problems.append(_bad(name, item, low, high))
                continue
            first, last = int(a), int(b)
            if first > last:
                problems.append(f"{name}: the range {base!r} goes backwards")
                continue
        elif base.isdigit():
            if slash:
                problems.append(
                    f"{name}: {item!r}: a step goes after `*` or a range (`{base}-{high}/{step}`)"
                )
                continue
            first = last = int(base)
        else:
            problems.append(_bad(name, item, low, high))
            continue
        if first < low or last > high:
            problems.append(f"{name}: {base!r} is out of range {low}-{high}")
            continue
        out.update(range(first, last + 1, step))
    return frozenset(out)


def _bad(name: str, item: str, low: int, high: int) -> str:
    hint = ""
    if any(c in item for c in "?#") or item.rstrip("LW").isdigit() or item == "L":
        hint = " (`?`, `L`, `W` and `#` are not POSIX cron: use `*` or numbers)"
    elif any(c.isalpha() for c in item):
        hint = " (names are not accepted: use numbers" + (", Sunday = 0)" if name == "day of week" else ")")
    return f"{name}: {item!r} is not `*`, a number {low}-{high}, a range `A-B` or a step `/N`{hint}"


def _date_exists(expr: CronExpr) -> bool:
    """Whether some chosen month has some chosen day of month (February counts 29 days)."""
    return any(
        day <= (29 if month == 2 else calendar.monthrange(2001, month)[1])
        for month in expr.months
        for day in expr.days
    )


def _utc_minute(t: datetime) -> datetime:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).replace(second=0, microsecond=0)


def _expr(expr: CronExpr | str) -> CronExpr:
    return parse(expr) if isinstance(expr, str) else expr


def matches(expr: CronExpr | str, t: datetime) -> bool:
    """Whether the UTC minute of `t` is one of the expression's (seconds ignored)."""
    e = _expr(expr)
    m = _utc_minute(t)
    return m.minute in e.minutes and m.hour in e.hours and e.day_matches(m)


def next_after(expr: CronExpr | str, t: datetime) -> datetime:
    """The first minute strictly after `t` (UTC, aware) at which the expression fires."""
    e = _expr(expr)
    start = _utc_minute(t) + timedelta(minutes=1)
    hours, minutes = sorted(e.hours), sorted(e.minutes)
    day = start.replace(hour=0, minute=0)
    for offset in range(_SEARCH_DAYS):
        current = day + timedelta(days=offset)
        if not e.day_matches(current):
            continue
        for hour in hours:
            for minute in minutes:
                found = current.replace(hour=hour, minute=minute)
                if found >= start:
                    return found
    raise ValueError(f"{e.text!r} never fires")  # parse refuses such expressions
