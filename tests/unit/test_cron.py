"""core/cron.py: parsing, matching and the next minute, table-driven (config.md 5.6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from circlet.core import cron
from circlet.core.errors import ConfigError


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "field", "values"),
    [
        pytest.param("* * * * *", "minutes", set(range(60)), id="star"),
        pytest.param("5 * * * *", "minutes", {5}, id="number"),
        pytest.param("1,3,5 * * * *", "minutes", {1, 3, 5}, id="list"),
        pytest.param("10-13 * * * *", "minutes", {10, 11, 12, 13}, id="range"),
        pytest.param("*/15 * * * *", "minutes", {0, 15, 30, 45}, id="star-step"),
        pytest.param("10-30/10 * * * *", "minutes", {10, 20, 30}, id="range-step"),
        pytest.param("0,30-32,*/20 * * * *", "minutes", {0, 20, 30, 31, 32, 40}, id="mixed-list"),
        pytest.param("0 */6 * * *", "hours", {0, 6, 12, 18}, id="hours-step"),
        pytest.param("0 0 1,15 * *", "days", {1, 15}, id="days"),
        pytest.param("0 0 * 2-4 *", "months", {2, 3, 4}, id="months"),
        pytest.param("0 0 * * 7", "weekdays", {0}, id="sunday-7"),
        pytest.param("0 0 * * 5-7", "weekdays", {0, 5, 6}, id="weekday-range-to-7"),
        pytest.param("  0   3 * *   1  ", "minutes", {0}, id="extra-spaces"),
    ],
)
def test_parse_fields(expr: str, field: str, values: set[int]) -> None:
    assert getattr(cron.parse(expr), field) == frozenset(values)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        pytest.param("* * * *", "has 4 fields: a cron expression has five", id="four-fields"),
        pytest.param("0 0 0 * * *", "has 6 fields", id="six-fields-seconds"),
        pytest.param("", "has 0 fields", id="empty"),
        pytest.param("@daily", 'write the five fields instead (@daily is "0 0 * * *")', id="macro"),
        pytest.param("60 * * * *", "minute: '60' is out of range 0-59", id="minute-range"),
        pytest.param("0 24 * * *", "hour: '24' is out of range 0-23", id="hour-range"),
        pytest.param("0 0 0 * *", "day of month: '0' is out of range 1-31", id="day-zero"),
        pytest.param("0 0 * 13 *", "month: '13' is out of range 1-12", id="month-range"),
        pytest.param("0 0 * * 8", "day of week: '8' is out of range 0-7", id="weekday-range"),
        pytest.param("5-1 * * * *", "the range '5-1' goes backwards", id="backwards"),
        pytest.param("*/0 * * * *", "the step of '*/0' must be a whole number of at least 1", id="step-zero"),
        pytest.param("5/10 * * * *", "a step goes after `*` or a range (`5-59/10`)", id="number-step"),
        pytest.param("0 0 * * MON", "names are not accepted: use numbers, Sunday = 0", id="weekday-name"),
        pytest.param("0 0 * JAN *", "names are not accepted: use numbers", id="month-name"),
        pytest.param("0 12 ? * 5", "`?`, `L`, `W` and `#` are not POSIX cron", id="quartz-question"),
        pytest.param("0 0 L * *", "not POSIX cron", id="quartz-last"),
        pytest.param("0 0 30 2 *", "never fires: no month chosen has such a day", id="february-30"),
        pytest.param("1,,2 * * * *", "minute: '' is not `*`", id="empty-item"),
        pytest.param("-1 * * * *", "minute: '-1' is not `*`", id="negative"),
    ],
)
def test_bad_expressions_say_why_at_the_path(expr: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        cron.parse(expr, path="workflows.nightly.triggers[0].schedule.cron")
    problem = err.value.problems[0]
    assert message in problem.message
    assert problem.path == "workflows.nightly.triggers[0].schedule.cron"


def test_every_problem_of_an_expression_is_reported() -> None:
    with pytest.raises(ConfigError) as err:
        cron.parse("61 25 * * *")
    assert len(err.value.problems) == 2


def test_a_non_string_is_refused() -> None:
    with pytest.raises(ConfigError, match="a cron expression is a string"):
        cron.parse(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("expr", "when", "expected"),
    [
        pytest.param("0 3 * * *", "2026-11-28T03:00:00", True, id="exact"),
        pytest.param("0 3 * * *", "2026-11-28T03:00:59", True, id="seconds-ignored"),
        pytest.param("0 3 * * *", "2026-11-28T03:01:00", False, id="next-minute"),
        pytest.param("*/15 9-17 * * 1-5", "2026-11-27T17:45:00", True, id="friday-office-hours"),
        pytest.param("*/15 9-17 * * 1-5", "2026-11-28T10:00:00", False, id="saturday"),
        pytest.param("0 0 13 * 5", "2026-11-13T00:00:00", True, id="dom-or-dow-by-date"),
        pytest.param("0 0 13 * 5", "2026-11-27T00:00:00", True, id="dom-or-dow-by-friday"),
        pytest.param("0 0 13 * 5", "2026-11-26T00:00:00", False, id="dom-or-dow-neither"),
        pytest.param("0 0 */2 * 5", "2026-11-20T00:00:00", False, id="star-dom-means-and"),
        pytest.param("0 0 */2 * 5", "2026-11-13T00:00:00", True, id="star-dom-and-friday"),
        pytest.param("0 0 * * 0", "2026-11-29T00:00:00", True, id="sunday-0"),
        pytest.param("0 0 * * 7", "2026-11-29T00:00:00", True, id="sunday-7"),
        pytest.param("30 23 31 12 *", "2026-12-31T23:30:00", True, id="new-years-eve"),
    ],
)
def test_matches(expr: str, when: str, expected: bool) -> None:
    assert cron.matches(expr, at(when)) is expected


def test_matches_converts_to_utc() -> None:
    paris = timezone(timedelta(hours=1))
    assert cron.matches("0 3 * * *", datetime(2026, 11, 28, 4, 0, tzinfo=paris))
    assert cron.matches("0 3 * * *", datetime(2026, 11, 28, 3, 0))  # naive = UTC


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        pytest.param("0 3 * * *", "2026-11-28T02:59:30", "2026-11-28T03:00:00", id="later-today"),
        pytest.param("0 3 * * *", "2026-11-28T03:00:00", "2026-11-29T03:00:00", id="strictly-after"),
        pytest.param("*/15 * * * *", "2026-11-28T10:07:00", "2026-11-28T10:15:00", id="step"),
        pytest.param("59 23 * * *", "2026-12-31T23:59:00", "2027-01-01T23:59:00", id="year-wrap"),
        pytest.param("0 0 1 * *", "2026-01-31T12:00:00", "2026-02-01T00:00:00", id="month-wrap"),
        pytest.param("0 0 29 2 *", "2026-11-28T00:00:00", "2028-02-29T00:00:00", id="leap-day"),
        pytest.param("0 9 * * 1", "2026-11-28T10:00:00", "2026-11-30T09:00:00", id="next-monday"),
        pytest.param("0 0 31 * *", "2026-04-01T00:00:00", "2026-05-31T00:00:00", id="skip-short-month"),
    ],
)
def test_next_after(expr: str, after: str, expected: str) -> None:
    found = cron.next_after(expr, at(after))
    assert found == at(expected)
    assert cron.matches(expr, found)


@pytest.mark.parametrize("expr", ["*/7 */5 * * *", "0 0 13 * 5", "15 4 1-7 * 1", "0 12 * 6 0"])
def test_next_after_is_the_first_matching_minute(expr: str) -> None:
    start = at("2026-11-28T00:00:00")
    found = cron.next_after(expr, start)
    minute = start + timedelta(minutes=1)
    while minute < found:  # brute force over the gap: nothing earlier matches
        assert not cron.matches(expr, minute), minute
        minute += timedelta(minutes=1)
