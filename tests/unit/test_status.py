"""The lifecycle/outcome/status rules, table-driven."""

from __future__ import annotations

import pytest

from circlet.core.model import ActionStatus as A
from circlet.core.model import Lifecycle as L
from circlet.core.model import Outcome as O
from circlet.core.status import (
    TransitionError,
    can_move,
    check_move,
    decide_outcome,
    derive_status,
    failed_flag,
    is_passing,
    outcome_from_actions,
)

STATUS_CASES = [
    pytest.param(L.NOT_RUNNING, None, None, False, "not_running", id="waiting-for-slot"),
    pytest.param(L.QUEUED, None, None, False, "queued", id="queued"),
    pytest.param(L.SCHEDULED, None, None, False, "scheduled", id="scheduled"),
    pytest.param(L.RUNNING, None, None, False, "running", id="running"),
    pytest.param(L.QUEUED, O.CANCELED, None, False, "canceled", id="canceled-before-start-keeps-lifecycle"),
    pytest.param(L.FINISHED, O.CANCELED, O.FAILED, False, "canceled", id="canceled-wins-over-fixed"),
    pytest.param(L.NOT_RUN, None, None, False, "not_run", id="not-run"),
    pytest.param(L.FINISHED, O.SUCCESS, None, False, "success", id="first-success"),
    pytest.param(L.FINISHED, O.SUCCESS, O.SUCCESS, False, "success", id="success-after-success"),
    pytest.param(L.FINISHED, O.SUCCESS, O.FAILED, False, "fixed", id="fixed-after-failed"),
    pytest.param(L.FINISHED, O.SUCCESS, O.TIMEDOUT, False, "fixed", id="fixed-after-timedout"),
    pytest.param(L.FINISHED, O.SUCCESS, O.NO_TESTS, False, "fixed", id="fixed-after-no-tests"),
    pytest.param(L.FINISHED, O.SUCCESS, O.INFRASTRUCTURE_FAIL, False, "fixed", id="fixed-after-infra"),
    pytest.param(L.FINISHED, O.FAILED, O.FAILED, False, "failed", id="failed-twice"),
    pytest.param(L.FINISHED, O.TIMEDOUT, None, False, "timedout", id="timedout"),
    pytest.param(L.FINISHED, O.NO_TESTS, None, False, "no_tests", id="no-tests"),
    pytest.param(L.FINISHED, O.INFRASTRUCTURE_FAIL, None, False, "infrastructure_fail", id="infra"),
    pytest.param(L.FINISHED, O.INFRASTRUCTURE_FAIL, None, True, "retried", id="infra-auto-retried"),
    pytest.param(L.FINISHED, O.FAILED, None, True, "failed", id="auto-retry-only-marks-infra"),
]


@pytest.mark.parametrize(("lifecycle", "outcome", "previous", "auto_retried", "expected"), STATUS_CASES)
def test_derive_status(
    lifecycle: L, outcome: O | None, previous: O | None, auto_retried: bool, expected: str
) -> None:
    assert derive_status(lifecycle, outcome, previous_outcome=previous, auto_retried=auto_retried) == expected


OUTCOME_CASES = [
    pytest.param({}, O.SUCCESS, id="nothing-wrong"),
    pytest.param({"failed": True}, O.FAILED, id="failed"),
    pytest.param({"failed": True, "timedout": True}, O.TIMEDOUT, id="timeout-beats-failure"),
    pytest.param(
        {"timedout": True, "infrastructure_fail": True}, O.INFRASTRUCTURE_FAIL, id="infra-beats-timeout"
    ),
    pytest.param({"canceled": True, "infrastructure_fail": True}, O.CANCELED, id="cancel-beats-all"),
    pytest.param({"no_tests": True}, O.NO_TESTS, id="no-tests"),
    pytest.param({"no_tests": True, "failed": True}, O.FAILED, id="failure-beats-no-tests"),
]


@pytest.mark.parametrize(("facts", "expected"), OUTCOME_CASES)
def test_decide_outcome(facts: dict[str, bool], expected: O) -> None:
    assert decide_outcome(**facts) is expected


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        pytest.param([A.SUCCESS, A.SUCCESS], O.SUCCESS, id="all-green"),
        pytest.param([A.SUCCESS, A.FAILED, A.SUCCESS], O.FAILED, id="one-failed"),
        pytest.param([A.FAILED, A.TIMEDOUT], O.TIMEDOUT, id="timeout"),
        pytest.param([A.SUCCESS, A.CANCELED], O.CANCELED, id="canceled"),
        pytest.param([A.INFRASTRUCTURE_FAIL], O.INFRASTRUCTURE_FAIL, id="infra"),
        pytest.param([], O.SUCCESS, id="no-actions"),
    ],
)
def test_outcome_from_actions(statuses: list[A], expected: O) -> None:
    assert outcome_from_actions(statuses) is expected


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        pytest.param(L.NOT_RUNNING, L.QUEUED, True, id="slot-found"),
        pytest.param(L.QUEUED, L.RUNNING, True, id="picked-up"),
        pytest.param(L.RUNNING, L.FINISHED, True, id="done"),
        pytest.param(L.NOT_RUNNING, L.NOT_RUN, True, id="skipped"),
        pytest.param(L.RUNNING, L.QUEUED, False, id="never-back"),
        pytest.param(L.FINISHED, L.RUNNING, False, id="finished-is-final"),
        pytest.param(L.NOT_RUN, L.QUEUED, False, id="not-run-is-final"),
        pytest.param(L.RUNNING, L.RUNNING, True, id="same-is-fine"),
    ],
)
def test_transitions(current: L, new: L, allowed: bool) -> None:
    assert can_move(current, new) is allowed
    if not allowed:
        with pytest.raises(TransitionError):
            check_move(current, new)


@pytest.mark.parametrize(
    ("outcome", "flag"),
    [
        (O.FAILED, True),
        (O.TIMEDOUT, True),
        (O.INFRASTRUCTURE_FAIL, True),
        (O.SUCCESS, None),
        (O.CANCELED, None),
        (O.NO_TESTS, None),
        (None, None),
    ],
)
def test_failed_flag_is_true_or_null(outcome: O | None, flag: bool | None) -> None:
    assert failed_flag(outcome) is flag


def test_passing_statuses() -> None:
    assert is_passing("success") and is_passing("fixed")
    assert not is_passing("failed") and not is_passing("running")
