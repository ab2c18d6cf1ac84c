"""Lifecycle, outcome and status rules, written as tables plus small pure functions.

docs/statuses.md draws the same rules with a sentence per edge.
"""

from __future__ import annotations

from collections.abc import Iterable

from circlet.core.model import ActionStatus, Lifecycle, Outcome

# Which lifecycle may follow which. A build never goes back.
TRANSITIONS: dict[Lifecycle, frozenset[Lifecycle]] = {
    Lifecycle.NOT_RUNNING: frozenset(
        {Lifecycle.QUEUED, Lifecycle.RUNNING, Lifecycle.FINISHED, Lifecycle.NOT_RUN}
    ),
    Lifecycle.QUEUED: frozenset({Lifecycle.SCHEDULED, Lifecycle.RUNNING, Lifecycle.FINISHED}),
    Lifecycle.SCHEDULED: frozenset({Lifecycle.RUNNING, Lifecycle.FINISHED}),
    Lifecycle.RUNNING: frozenset({Lifecycle.FINISHED}),
    Lifecycle.FINISHED: frozenset(),
    Lifecycle.NOT_RUN: frozenset(),
}

# Outcomes of a previous build that turn a success into `fixed`.
BROKEN_OUTCOMES = frozenset({Outcome.FAILED, Outcome.TIMEDOUT, Outcome.NO_TESTS, Outcome.INFRASTRUCTURE_FAIL})

# Outcomes that count as "failed" for the `failed` list filter and the `failed` flag.
FAILED_FILTER_OUTCOMES = BROKEN_OUTCOMES
FAILED_FLAG_OUTCOMES = frozenset({Outcome.FAILED, Outcome.TIMEDOUT, Outcome.INFRASTRUCTURE_FAIL})

# A job's outcome from what happened, first matching row wins (config.md section 11).
# Each row: (canceled, infrastructure_fail, timedout, failed, no_tests) -> outcome.
_OUTCOME_PRECEDENCE: tuple[tuple[str, Outcome], ...] = (
    ("canceled", Outcome.CANCELED),
    ("infrastructure_fail", Outcome.INFRASTRUCTURE_FAIL),
    ("timedout", Outcome.TIMEDOUT),
    ("failed", Outcome.FAILED),
    ("no_tests", Outcome.NO_TESTS),
)

# An action's status -> the job-level fact it contributes.
_ACTION_FACT: dict[ActionStatus, str | None] = {
    ActionStatus.SUCCESS: None,
    ActionStatus.RUNNING: None,
    ActionStatus.FAILED: "failed",
    ActionStatus.TIMEDOUT: "timedout",
    ActionStatus.CANCELED: "canceled",
    ActionStatus.INFRASTRUCTURE_FAIL: "infrastructure_fail",
}


class TransitionError(ValueError):
    """A lifecycle change the rules do not allow."""


def can_move(current: Lifecycle, new: Lifecycle) -> bool:
    return new == current or new in TRANSITIONS[current]


def check_move(current: Lifecycle, new: Lifecycle) -> None:
    if not can_move(current, new):
        raise TransitionError(f"a build cannot go from {current} to {new}")


def decide_outcome(
    *,
    canceled: bool = False,
    infrastructure_fail: bool = False,
    timedout: bool = False,
    failed: bool = False,
    no_tests: bool = False,
) -> Outcome:
    """The outcome of a finished job; the first true fact in precedence order wins."""
    facts = {
        "canceled": canceled,
        "infrastructure_fail": infrastructure_fail,
        "timedout": timedout,
        "failed": failed,
        "no_tests": no_tests,
    }
    for fact, outcome in _OUTCOME_PRECEDENCE:
        if facts[fact]:
            return outcome
    return Outcome.SUCCESS


def outcome_from_actions(statuses: Iterable[ActionStatus], *, no_tests: bool = False) -> Outcome:
    """The outcome implied by the foreground actions' statuses (background ones excluded by the caller)."""
    facts: dict[str, bool] = {}
    for status in statuses:
        fact = _ACTION_FACT[status]
        if fact:
            facts[fact] = True
    return decide_outcome(no_tests=no_tests, **facts)


def derive_status(
    lifecycle: Lifecycle,
    outcome: Outcome | None,
    *,
    previous_outcome: Outcome | None = None,
    auto_retried: bool = False,
) -> str:
    """The v1.1 `status` of a build (api-v1.1.md section 6.3).

    `previous_outcome` is the outcome of the previous finished build of the same job on the same
    branch (canceled and not-run builds skipped by the caller); `auto_retried` says whether
    circlet retried this build automatically.
    """
    if outcome is Outcome.CANCELED:
        return "canceled"
    if lifecycle is Lifecycle.NOT_RUN:
        return "not_run"
    if lifecycle is not Lifecycle.FINISHED or outcome is None:
        return lifecycle.value
    if outcome is Outcome.SUCCESS:
        return "fixed" if previous_outcome in BROKEN_OUTCOMES else "success"
    if outcome is Outcome.INFRASTRUCTURE_FAIL and auto_retried:
        return "retried"
    return outcome.value


def failed_flag(outcome: Outcome | None) -> bool | None:
    """The seed's `failed`: true or null."""
    return True if outcome in FAILED_FLAG_OUTCOMES else None


def is_passing(status: str) -> bool:
    """`success` and `fixed` both mean the build passed."""
    return status in ("success", "fixed")
