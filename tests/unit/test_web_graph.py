"""The web page's workflow graph layout, `why` words and dashboard workflow links (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from circlet.core.model import Build, Project, VcsType, Why
from circlet.core.workflow import GraphJob, JobState, JobType, WorkflowGraph, WorkflowStatus
from circlet.http.web.graphview import depths, workflow_view
from circlet.http.web.views import WHY_WORDS, why_word, workflow_link

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
PROJECT = Project(id=7, vcs_type=VcsType.GITHUB, username="acme", reponame="flow", repo_url="/tmp/flow")
WID = "5034460f-c7c4-4c43-9457-de07e2029e7b"


@pytest.mark.parametrize(
    ("requires", "expected"),
    [
        pytest.param({}, {}, id="empty"),
        pytest.param({"a": ()}, {"a": 0}, id="one"),
        pytest.param({"a": (), "b": ("a",), "c": ("b",)}, {"a": 0, "b": 1, "c": 2}, id="chain"),
        pytest.param(
            {"a": (), "b": (), "c": ("a",), "d": ("a", "c"), "e": ("b",)},
            {"a": 0, "b": 0, "c": 1, "d": 2, "e": 1},
            id="deepest-requirement-wins",
        ),
        pytest.param({"a": ("gone",), "b": ("a",)}, {"a": 0, "b": 1}, id="unknown-requirement-ignored"),
        pytest.param({"a": ("b",), "b": ("a",)}, {"a": 1, "b": 0}, id="cycle-terminates"),
    ],
)
def test_depths(requires: dict[str, tuple[str, ...]], expected: dict[str, int]) -> None:
    assert depths(requires) == expected


def _graph(status: WorkflowStatus, *jobs: GraphJob, stopped: datetime | None = None) -> WorkflowGraph:
    return WorkflowGraph(
        workflow_id=WID,
        name="ship",
        status=status,
        jobs=jobs,
        pipeline_number=3,
        created_at=NOW - timedelta(seconds=75),
        stopped_at=stopped,
    )


def _job(
    name: str, state: JobState, *requires: str, num: int | None = None, approval: bool = False
) -> GraphJob:
    return GraphJob(
        name=name,
        type=JobType.APPROVAL if approval else JobType.BUILD,
        requires=requires,
        state=state,
        build_num=num,
    )


def test_workflow_view_lays_jobs_out_by_depth() -> None:
    graph = _graph(
        WorkflowStatus.ON_HOLD,
        _job("build", JobState.SUCCESS, num=4),
        _job("lint", JobState.SUCCESS, num=5),
        _job("hold", JobState.ON_HOLD, "build", "lint", approval=True),
        _job("deploy", JobState.BLOCKED, "hold"),
    )
    view = workflow_view(graph, PROJECT, NOW, current_build=4)
    assert [[j.name for j in column] for column in view.columns] == [["build", "lint"], ["hold"], ["deploy"]]
    assert view.url == f"/gh/acme/flow/workflows/{WID}"
    build, lint, hold, deploy = view.jobs
    assert build.url == "/gh/acme/flow/4" and build.current and not lint.current
    assert hold.approvable and hold.url is None and hold.tone == "hold" and hold.label == "on hold"
    assert not deploy.approvable and deploy.tone == "wait"
    assert view.active and view.on_hold and view.took == "1m 15s" and view.status == "on_hold"


@pytest.mark.parametrize(
    ("status", "states", "active", "tone"),
    [
        (WorkflowStatus.RUNNING, (JobState.RUNNING,), True, "run"),
        (WorkflowStatus.FAILING, (JobState.FAILED, JobState.RUNNING), True, "bad"),
        (WorkflowStatus.ON_HOLD, (JobState.ON_HOLD,), True, "hold"),
        (WorkflowStatus.SUCCESS, (JobState.SUCCESS,), False, "ok"),
        (WorkflowStatus.FAILED, (JobState.FAILED, JobState.NOT_RUN), False, "bad"),
        (WorkflowStatus.CANCELED, (JobState.CANCELED,), False, "off"),
        (WorkflowStatus.NOT_RUN, (JobState.NOT_RUN,), False, "off"),
        (WorkflowStatus.ERROR, (), False, "bad"),
    ],
)
def test_workflow_view_is_active_until_finished(
    status: WorkflowStatus, states: tuple[JobState, ...], active: bool, tone: str
) -> None:
    jobs = [_job(f"j{n}", state, num=n + 1) for n, state in enumerate(states)]
    stopped = None if active else NOW - timedelta(seconds=5)
    view = workflow_view(_graph(status, *jobs, stopped=stopped), PROJECT, NOW)
    assert view.active is active and view.tone == tone
    assert view.took == ("1m 15s" if active else "1m 10s")


def test_the_signature_follows_what_the_graph_shows() -> None:
    before = workflow_view(_graph(WorkflowStatus.ON_HOLD, _job("hold", JobState.ON_HOLD)), PROJECT, NOW)
    same = workflow_view(
        _graph(WorkflowStatus.ON_HOLD, _job("hold", JobState.ON_HOLD)), PROJECT, NOW + timedelta(hours=1)
    )
    after = workflow_view(_graph(WorkflowStatus.RUNNING, _job("hold", JobState.SUCCESS)), PROJECT, NOW)
    started = workflow_view(
        _graph(WorkflowStatus.ON_HOLD, _job("hold", JobState.ON_HOLD, num=9)), PROJECT, NOW
    )
    assert before.sig == same.sig
    assert len({before.sig, after.sig, started.sig}) == 3


@pytest.mark.parametrize(
    ("why", "word"),
    [
        (Why.PUSH, "push"),
        (Why.GITHUB, "push"),
        (Why.BITBUCKET, "push"),
        (Why.API, "API trigger"),
        (Why.TRIGGER, "manual trigger"),
        (Why.RETRY, "retry"),
        (Why.SSH, "retry with SSH"),
        (Why.AUTO_RETRY, "automatic retry"),
        (Why.SCHEDULE, "schedule"),
        (Why.EDIT, "settings change"),
        (Why.FIRST_BUILD, "first build"),
        (Why.LOCAL, "local build"),
    ],
)
def test_why_words(why: Why, word: str) -> None:
    assert why_word(why.value) == word


def test_every_why_has_a_word_and_unknown_ones_read_as_words() -> None:
    assert {w.value for w in Why} <= set(WHY_WORDS)
    assert why_word("some_new-reason") == "some new reason"


@pytest.mark.parametrize(
    ("extra", "shown"),
    [
        (
            {"workflows": {"workflow_id": WID, "workflow_name": "ship", "job_name": "deploy"}},
            ("ship", "deploy"),
        ),
        ({"workflows": {"workflow_id": WID, "workflow_name": "ship"}}, ("ship", "test")),
        ({}, None),
        ({"workflows": None}, None),
        ({"workflows": {"workflow_name": "ship"}}, None),
        ({"workflows": {"workflow_id": 3, "workflow_name": "ship"}}, None),
    ],
)
def test_workflow_link(extra: dict[str, object], shown: tuple[str, str] | None) -> None:
    found = workflow_link(PROJECT, Build(project_id=7, build_num=2, job_name="test", extra=extra))
    if shown is None:
        assert found is None
    else:
        assert found is not None and (found.name, found.job) == shown
        assert found.url == f"/gh/acme/flow/workflows/{WID}"
