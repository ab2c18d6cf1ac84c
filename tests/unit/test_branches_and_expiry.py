"""2.0 job-level `branches` on pushes (config.md 5.5) and the 90-day approval window (5.8), through
the service on fakes; the clock is the test's."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from textwrap import dedent

import httpx
import pytest

from circlet.core.errors import InvalidRequest
from circlet.core.model import Build, Lifecycle, Outcome, Project, Why
from circlet.core.ports import BuildQuery
from circlet.core.workflow import JobState, WorkflowStatus
from circlet.http.app import create_app
from circlet.http.deps import Services
from circlet.pipelines import Workflows
from circlet.service import Circlet
from circlet.testing import (
    FakeSourceHost,
    InMemoryBuildStore,
    InMemoryLogStore,
    InMemoryProjectSettingsStore,
    RecordingDispatcher,
)
from circlet.testing.clock import FakeClock
from circlet.testing.pipelines import InMemoryPipelineStore
from circlet.wire import Links

URL = "https://git.example/acme/widget.git"
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@dataclass
class Env:
    svc: Circlet
    source: FakeSourceHost
    dispatcher: RecordingDispatcher
    clock: FakeClock
    project: Project

    @property
    def engine(self) -> Workflows:
        assert self.svc.workflows is not None
        return self.svc.workflows

    def builds(self) -> list[Build]:
        found = self.svc.store.list_builds(BuildQuery(project_ids=(self.project.id or 0,), limit=100))
        return sorted(found, key=lambda b: b.build_num)

    def commit(self, text: str, *, branch: str = "main") -> str:
        return self.source.add_commit(URL, branch=branch, files={".circleci/config.yml": text})

    def finish(self, build: Build) -> None:
        self.svc.build_queued(build.id or 0, self.clock.now)
        assert self.svc.build_started(build.id or 0, self.clock.now, "w1")
        self.svc.build_finished(build.id or 0, Outcome.SUCCESS, self.clock.now)


@pytest.fixture
def env() -> Iterator[Env]:
    source = FakeSourceHost()
    source.add_commit(URL, files={"README.md": "hi\n"})
    clock = FakeClock(T0, step=timedelta(milliseconds=1))
    svc = Circlet(
        store=InMemoryBuildStore(),
        logs=InMemoryLogStore(),
        source=source,
        dispatcher=RecordingDispatcher(),
        settings=InMemoryProjectSettingsStore(),
        base_url="https://ci.example.com",
        clock=clock,
        pipelines=InMemoryPipelineStore(),
    )
    project = svc.add_project(vcs_type="github", username="acme", reponame="widget", repo_url=URL)
    assert isinstance(svc.dispatcher, RecordingDispatcher)
    yield Env(svc, source, svc.dispatcher, clock, project)


def job_with(branches: str) -> str:
    return (
        "version: 2\njobs:\n  build:\n    docker: [{image: x}]\n"
        f"    branches: {branches}\n    steps: [{{run: make}}]\n"
    )


# ---------------------------------------------------------------- 2.0 job-level branches


@pytest.mark.parametrize(
    ("branches", "branch", "dont_build"),
    [
        pytest.param("{only: [main]}", "main", None, id="only-match"),
        pytest.param("{only: [main]}", "feature", "branch-not-whitelisted", id="only-miss"),
        pytest.param("{only: main}", "feature", "branch-not-whitelisted", id="only-string"),
        pytest.param("{only: /rel-.*/}", "rel-1", None, id="only-regex"),
        pytest.param("{only: /rel/}", "rel-1", "branch-not-whitelisted", id="regex-is-full-match"),
        pytest.param("{ignore: [/feature-.*/]}", "feature-x", "branch-blacklisted", id="ignore-match"),
        pytest.param("{ignore: [/feature-.*/]}", "main", None, id="ignore-miss"),
        pytest.param("{only: [main], ignore: [dev]}", "feature", None, id="both-only-ignore-counts"),
        pytest.param("{only: [main], ignore: [main]}", "main", "branch-blacklisted", id="both-ignore-wins"),
    ],
)
def test_a_push_of_a_filtered_branch_records_a_build_not_run(
    env: Env, branches: str, branch: str, dont_build: str | None
) -> None:
    env.commit(job_with(branches), branch=branch)
    build = env.svc.trigger_pipeline(env.project, branch=branch, why=Why.PUSH)
    assert build is not None and build.dont_build == dont_build
    if dont_build is None:
        assert build.lifecycle is not Lifecycle.NOT_RUN and len(env.dispatcher.submitted) == 1
    else:
        assert (build.lifecycle, build.outcome, build.job_name) == (Lifecycle.NOT_RUN, None, "build")
        assert env.svc.status_of(build) == "not_run" and build.why is Why.GITHUB
        assert env.dispatcher.submitted == []


def test_api_and_job_triggers_are_not_filtered(env: Env) -> None:
    env.commit(job_with("{only: [main]}"), branch="feature")
    by_api = env.svc.trigger_pipeline(env.project, branch="feature")
    by_job = env.svc.trigger(env.project, branch="feature")
    assert by_api is not None and by_api.dont_build is None and by_job.dont_build is None
    assert len(env.dispatcher.submitted) == 2


def test_a_malformed_branches_key_fails_the_push_with_its_path(env: Env) -> None:
    env.commit(job_with("{onyl: [main], ignore: 5}"), branch="feature")
    build = env.svc.trigger_pipeline(env.project, branch="feature", why=Why.PUSH)
    assert build is not None and build.outcome is Outcome.FAILED
    texts = [m.message for m in build.messages]
    assert any("(jobs.build.branches.onyl): unknown `branches` key 'onyl'" in t for t in texts)
    assert any("(jobs.build.branches.ignore): a branch pattern must be" in t for t in texts)


# ---------------------------------------------------------------- approvals expire


HOLD = dedent(
    """\
    version: 2
    jobs:
      build: {docker: [{image: x}], steps: [{run: make}]}
      deploy: {docker: [{image: x}], steps: [{run: make deploy}]}
    workflows:
      version: 2
      w:
        jobs:
          - build
          - hold: {type: approval, requires: [build]}
          - deploy: {requires: [hold]}
    """
)


def on_hold(env: Env) -> str:
    env.commit(HOLD)
    build = env.svc.trigger_pipeline(env.project)
    assert build is not None
    env.finish(build)
    graph = env.svc.workflow_graph(build)
    assert graph is not None and graph.status is WorkflowStatus.ON_HOLD
    return graph.workflow_id


def states(env: Env, workflow_id: str) -> dict[str, JobState]:
    return {j.name: j.state for j in env.engine.graph(workflow_id).jobs}


def test_an_approval_within_90_days_is_taken(env: Env) -> None:
    workflow_id = on_hold(env)
    env.clock.now += timedelta(days=89, hours=23)
    graph = env.engine.approve(env.project, workflow_id, "hold", user_id=None)
    assert states(env, workflow_id)["hold"] is JobState.SUCCESS and graph.status is WorkflowStatus.RUNNING


@pytest.mark.parametrize("apply", [True, False], ids=["api", "cli"])
def test_an_approval_after_90_days_is_refused_and_the_workflow_ends(env: Env, apply: bool) -> None:
    workflow_id = on_hold(env)
    env.clock.now += timedelta(days=90, minutes=1)
    with pytest.raises(InvalidRequest, match=r"The approval of job 'hold' expired: .* 90 days"):
        env.engine.approve(env.project, workflow_id, "hold", user_id=None, apply=apply)
    env.engine.advance(workflow_id)
    assert states(env, workflow_id) == {
        "build": JobState.SUCCESS,
        "hold": JobState.CANCELED,
        "deploy": JobState.NOT_RUN,
    }
    assert env.engine.graph(workflow_id).status is WorkflowStatus.CANCELED
    with pytest.raises(InvalidRequest, match="expired"):  # asking again says the same
        env.engine.approve(env.project, workflow_id, "hold", user_id=None)
    assert [b.job_name for b in env.builds()] == ["build"]


def test_the_sweep_ends_expired_workflows_without_anyone_asking(env: Env) -> None:
    workflow_id = on_hold(env)
    assert env.engine.expire_approvals() == []
    env.clock.now += timedelta(days=91)
    assert env.engine.expire_approvals() == [workflow_id]
    assert states(env, workflow_id)["deploy"] is JobState.NOT_RUN
    assert env.engine.graph(workflow_id).status is WorkflowStatus.CANCELED
    assert env.engine.expire_approvals() == []  # idempotent


def test_the_api_answers_an_expired_approval_with_a_400_message(env: Env) -> None:
    workflow_id = on_hold(env)
    _, token = env.svc.create_token(user=env.svc.ensure_user("root", admin=True))
    app = create_app(Services(circlet=env.svc, links=Links("https://ci.example.com", b"k" * 32)))
    path = f"/api/v1.1/project/gh/acme/widget/workflow/{workflow_id}/approve/hold"

    def approve() -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="https://ci.example.com") as client:
                return await client.post(path, headers={"Circle-Token": token, "Accept": "application/json"})

        return asyncio.run(call())

    env.clock.now += timedelta(days=120)
    response = approve()
    assert response.status_code == 400
    message = response.json()["message"]
    assert message.startswith("The approval of job 'hold' expired: approval jobs can be approved for 90 days")
    assert "2026-01-05T12:00" in message  # when the workflow started
    assert env.engine.graph(workflow_id).status is WorkflowStatus.CANCELED
