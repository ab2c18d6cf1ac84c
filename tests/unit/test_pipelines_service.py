"""Pipelines and workflows through the service, on fakes: in-memory stores, FakeSourceHost and a
RecordingDispatcher whose builds the test ends by hand. Asserts on stored rows and requests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from textwrap import dedent

import pytest

from circlet.core.errors import InvalidRequest, NotFound
from circlet.core.model import Build, Lifecycle, Outcome, Project, Why
from circlet.core.pipeline import PipelineState
from circlet.core.ports import BuildQuery, RunRequest
from circlet.core.workflow import JobState, WorkflowStatus
from circlet.service import Circlet
from circlet.testing import (
    FakeSourceHost,
    InMemoryBuildStore,
    InMemoryLogStore,
    InMemoryProjectSettingsStore,
    RecordingDispatcher,
)
from circlet.testing.pipelines import InMemoryPipelineStore

T0 = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
URL = "https://git.example/acme/widget.git"

FAN = dedent(
    """\
    version: 2.1
    executors:
      sh: {docker: [{image: cimg/base:stable}]}
    jobs:
      build: {executor: sh, steps: [{run: make}]}
      test:
        executor: sh
        parameters: {shard: {type: integer}}
        steps: [{run: "make test-<< parameters.shard >>"}]
      deploy: {executor: sh, steps: [{run: make deploy}]}
    workflows:
      main:
        jobs:
          - build
          - test: {requires: [build], matrix: {parameters: {shard: [1, 2]}}}
          - hold: {type: approval, requires: [test]}
          - deploy: {requires: [hold], context: [prod], filters: {branches: {only: main}}}
      lint:
        jobs: [build]
    """
)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


@dataclass
class Env:
    svc: Circlet
    builds: InMemoryBuildStore
    pipelines: InMemoryPipelineStore
    source: FakeSourceHost
    dispatcher: RecordingDispatcher
    project: Project

    def all(self) -> list[Build]:
        found = self.builds.list_builds(BuildQuery(project_ids=(self.project.id or 0,), limit=1000))
        return sorted(found, key=lambda b: b.build_num)

    def by_job(self, name: str) -> list[Build]:
        return [b for b in self.all() if b.job_name == name]

    def finish(self, build: Build, outcome: Outcome = Outcome.SUCCESS) -> None:
        build_id = build.id or 0
        self.svc.build_queued(build_id, T0)
        assert self.svc.build_started(build_id, T0, "w1")
        self.svc.build_finished(build_id, outcome, T0 + timedelta(seconds=1))

    def request(self, build: Build) -> RunRequest:
        return next(r for r in self.dispatcher.submitted if r.build_id == build.id)

    def commit(self, text: str | None, *, branch: str = "main", message: str = "cfg") -> str:
        return self.source.add_commit(
            URL, branch=branch, files={".circleci/config.yml": text}, message=message
        )


@pytest.fixture
def env() -> Iterator[Env]:
    source = FakeSourceHost()
    source.add_commit(URL, files={"README.md": "hi\n"}, message="First")
    builds, pipelines = InMemoryBuildStore(), InMemoryPipelineStore()
    svc = Circlet(
        store=builds,
        logs=InMemoryLogStore(),
        source=source,
        dispatcher=RecordingDispatcher(),
        settings=InMemoryProjectSettingsStore(),
        base_url="https://ci.example.com",
        clock=Clock(),
        pipelines=pipelines,
    )
    project = svc.add_project(vcs_type="github", username="acme", reponame="widget", repo_url=URL)
    assert isinstance(svc.dispatcher, RecordingDispatcher)
    yield Env(svc, builds, pipelines, source, svc.dispatcher, project)


def test_fan_out_fan_in_with_approval_and_context(env: Env) -> None:
    env.commit(FAN)
    env.svc.workflows.contexts.create("prod")  # type: ignore[union-attr]
    env.svc.workflows.contexts.set_var("prod", "TOKEN", "s3cret")  # type: ignore[union-attr]
    first = env.svc.trigger_pipeline(env.project)
    assert first is not None
    builds = env.all()
    assert [b.job_name for b in builds] == ["build", "build"]  # main's and lint's, side by side
    names = {b.extra["workflows"]["workflow_name"] for b in builds}
    assert names == {"main", "lint"}
    main_build = next(b for b in builds if b.extra["workflows"]["workflow_name"] == "main")
    info = main_build.extra["workflows"]
    assert info["workspace_id"] == info["workflow_id"] and info["upstream_job_ids"] == []
    assert env.request(main_build).workflow_id == info["workflow_id"]
    assert env.request(main_build).environment["CIRCLE_WORKFLOW_ID"] == info["workflow_id"]
    env.finish(main_build)
    tests = [b for b in env.all() if b.job_name and b.job_name.startswith("test-")]
    assert sorted(b.job_name or "" for b in tests) == ["test-1", "test-2"]
    assert all(b.extra["workflows"]["upstream_job_ids"] == [info["job_id"]] for b in tests)
    assert env.request(tests[0]).upstream_build_ids == (main_build.id,)
    env.finish(tests[0])
    graph = env.svc.workflow_graph(main_build)
    assert graph is not None and graph.status is WorkflowStatus.RUNNING
    env.finish(tests[1])
    graph = env.svc.workflow_graph(main_build)
    assert graph is not None
    assert graph.status is WorkflowStatus.ON_HOLD
    assert {j.name: j.state for j in graph.jobs}["hold"] is JobState.ON_HOLD
    assert env.by_job("deploy") == []
    env.svc.workflows.approve(env.project, graph.workflow_id, "hold", user_id=None)  # type: ignore[union-attr]
    [deploy] = env.by_job("deploy")
    request = env.request(deploy)
    assert request.environment["TOKEN"] == "s3cret"
    assert deploy.extra["context_ids"] == [env.svc.workflows.contexts.get("prod").id]  # type: ignore[union-attr]
    assert set(request.upstream_build_ids) == {main_build.id, tests[0].id, tests[1].id}
    env.finish(deploy)
    graph = env.svc.workflow_graph(deploy)
    assert graph is not None and graph.status is WorkflowStatus.SUCCESS
    assert [j.build_num for j in graph.jobs if j.name == "hold"] == [None]


def test_failed_upstream_leaves_dependants_not_run(env: Env) -> None:
    env.commit(FAN)
    env.svc.trigger_pipeline(env.project)
    main_build = next(b for b in env.all() if b.extra["workflows"]["workflow_name"] == "main")
    env.finish(main_build, Outcome.FAILED)
    graph = env.svc.workflow_graph(main_build)
    assert graph is not None
    assert {j.name: j.state for j in graph.jobs} == {
        "build": JobState.FAILED,
        "test-1": JobState.NOT_RUN,
        "test-2": JobState.NOT_RUN,
        "hold": JobState.NOT_RUN,
        "deploy": JobState.NOT_RUN,
    }
    assert graph.status is WorkflowStatus.FAILED
    assert len(env.all()) == 2  # not-run jobs get no build


def test_unknown_context_fails_that_job_with_a_message(env: Env) -> None:
    env.commit(
        "version: 2\njobs:\n  a: {docker: [{image: x}], steps: [{run: 'true'}]}\n"
        "workflows:\n  w:\n    jobs: [{a: {context: nowhere}}]\n"
    )
    build = env.svc.trigger_pipeline(env.project)
    assert build is not None
    assert (build.lifecycle, build.outcome) == (Lifecycle.FINISHED, Outcome.FAILED)
    assert "nowhere" in build.messages[0].message
    graph = env.svc.workflow_graph(build)
    assert graph is not None and graph.status is WorkflowStatus.FAILED


def test_ci_skip_on_a_push_records_a_build_not_run(env: Env) -> None:
    env.commit(FAN, message="Tidy up [ci skip]")
    build = env.svc.trigger_pipeline(env.project, why=Why.PUSH)
    assert build is not None
    assert (build.lifecycle, build.outcome, build.dont_build) == (Lifecycle.NOT_RUN, None, "ci-skip")
    assert build.why is Why.GITHUB
    assert env.svc.status_of(build) == "not_run"
    assert env.dispatcher.submitted == []
    [pipeline] = env.pipelines.list_pipelines(env.project.id or 0)
    assert pipeline.state is PipelineState.NOT_RUN
    # an API trigger of the same commit is not skipped
    env.svc.trigger_pipeline(env.project)
    assert len(env.dispatcher.submitted) == 2


def test_compile_errors_make_a_failed_build_and_an_errored_pipeline(env: Env) -> None:
    env.commit(
        "version: 2.1\nparameters: {n: {type: integer}}\njobs:\n  build: {docker: [{image: x}], "
        "steps: [{run: 'echo << pipeline.parameters.n >>'}]}\n"
    )
    build = env.svc.trigger_pipeline(env.project, parameters={"n": 3, "bogus": 1})
    assert build is not None and build.outcome is Outcome.FAILED
    assert any("bogus" in m.message for m in build.messages)
    [pipeline] = env.pipelines.list_pipelines(env.project.id or 0)
    assert pipeline.state is PipelineState.ERRORED and pipeline.errors


def test_pipeline_parameters_and_values_reach_the_job(env: Env) -> None:
    env.commit(
        "version: 2.1\nparameters: {n: {type: integer, default: 1}}\njobs:\n  build: {docker: "
        "[{image: x}], steps: [{run: 'echo << pipeline.parameters.n >> << pipeline.number >>'}]}\n"
    )
    build = env.svc.trigger_pipeline(env.project, parameters={"n": 7})
    assert build is not None
    assert env.request(build).plan.steps[-1].command == "echo 7 1"
    assert build.extra["workflows"]["workflow_name"] == "workflow"


def _fail_main_and_retry(env: Env) -> tuple[Build, Build]:
    """FAN's `main` workflow with its first job failed, and that job's retry."""
    env.commit(FAN)
    env.svc.trigger_pipeline(env.project)
    main_build = next(b for b in env.all() if b.extra["workflows"]["workflow_name"] == "main")
    env.finish(main_build, Outcome.FAILED)
    return main_build, env.svc.retry(env.project, main_build.build_num)


def test_retry_of_a_workflow_job_runs_it_again_in_the_same_workflow(env: Env) -> None:
    main_build, again = _fail_main_and_retry(env)
    assert again.retry_of == main_build.build_num and again.why is Why.RETRY
    assert again.extra["workflows"] == main_build.extra["workflows"]
    graph = env.svc.workflow_graph(again)
    assert graph is not None and graph.status is WorkflowStatus.RUNNING  # its job runs again
    env.finish(again)
    graph = env.svc.workflow_graph(again)
    # what was not run because the job failed runs now: never a green workflow that skipped its tests
    assert graph is not None and graph.status is WorkflowStatus.RUNNING
    states = {j.name: j.state for j in graph.jobs}
    assert states["test-1"] is JobState.RUNNING and states["test-2"] is JobState.RUNNING
    assert states["hold"] is JobState.BLOCKED
    mains = [b.build_num for b in env.by_job("build") if b.extra["workflows"]["workflow_name"] == "main"]
    assert mains == [main_build.build_num, again.build_num]


def test_a_retry_that_fails_again_leaves_the_jobs_below_not_run(env: Env) -> None:
    _, again = _fail_main_and_retry(env)
    graph = env.svc.workflow_graph(again)
    assert graph is not None
    assert {j.name: j.state for j in graph.jobs}["deploy"] is JobState.BLOCKED  # waits again
    env.finish(again, Outcome.FAILED)
    graph = env.svc.workflow_graph(again)
    assert graph is not None and graph.status is WorkflowStatus.FAILED
    assert {j.name for j in graph.jobs if j.state is JobState.NOT_RUN} == {
        "test-1",
        "test-2",
        "hold",
        "deploy",
    }
    assert not [b for b in env.all() if b.job_name in ("test-1", "test-2", "deploy")]  # no build made


def test_recover_makes_a_missing_build_once(env: Env) -> None:
    env.commit(FAN)
    env.svc.trigger_pipeline(env.project)
    main_build = next(b for b in env.all() if b.extra["workflows"]["workflow_name"] == "main")
    job = env.pipelines.job_of_build(main_build.id or 0)
    assert job is not None
    # a crash between marking the job running and recording its build
    from dataclasses import replace

    env.pipelines.save_job(replace(job, build_id=None, build_num=None))
    before = len(env.all())
    env.svc.recover()
    env.svc.recover()
    assert len(env.all()) == before  # found by its job id, not made again
    assert env.pipelines.job_of_build(main_build.id or 0) is not None


def test_approve_errors(env: Env) -> None:
    env.commit(FAN)
    build = env.svc.trigger_pipeline(env.project)
    assert build is not None
    wf = build.extra["workflows"]["workflow_id"]
    engine = env.svc.workflows
    assert engine is not None
    with pytest.raises(NotFound):
        engine.approve(env.project, "not-a-uuid", "hold", user_id=None)
    with pytest.raises(InvalidRequest, match="not an approval"):
        engine.approve(env.project, wf, "build", user_id=None)
    with pytest.raises(InvalidRequest, match="blocked"):
        engine.approve(env.project, wf, "hold", user_id=None)


def test_tag_runs_only_jobs_with_tag_filters(env: Env) -> None:
    sha = env.commit(
        "version: 2\njobs:\n  a: {docker: [{image: x}], steps: [{run: 'true'}]}\n"
        "  b: {docker: [{image: x}], steps: [{run: 'true'}]}\n"
        "workflows:\n  w:\n    jobs:\n      - a\n"
        "      - b: {filters: {tags: {only: /^v.*/}, branches: {ignore: /.*/}}}\n"
    )
    env.source.tag(URL, "v2", sha)
    build = env.svc.trigger_pipeline(env.project, tag="v2")
    assert build is not None and build.job_name == "b" and build.vcs_tag == "v2"
    assert [b.job_name for b in env.all()] == ["b"]
    env.source.tag(URL, "release-1", sha)
    assert env.svc.trigger_pipeline(env.project, tag="release-1") is None  # no job matches
    assert len(env.all()) == 1


def test_cancel_a_workflow_on_hold_and_one_running(env: Env) -> None:
    env.commit(FAN)
    env.svc.trigger_pipeline(env.project)
    engine = env.svc.workflows
    assert engine is not None
    main_build, lint_build = sorted(env.all(), key=lambda b: b.extra["workflows"]["workflow_name"] != "main")
    env.finish(main_build)
    for test in [b for b in env.all() if (b.job_name or "").startswith("test-")]:
        env.finish(test)
    wf = main_build.extra["workflows"]["workflow_id"]
    graph = engine.cancel(env.project, wf, user_id=None)
    assert graph.status is WorkflowStatus.CANCELED
    assert {j.name: j.state for j in graph.jobs}["hold"] is JobState.CANCELED
    assert {j.name: j.state for j in graph.jobs}["deploy"] is JobState.NOT_RUN
    # a workflow whose build still waits: the build is canceled, the workflow with it
    graph = engine.cancel(env.project, lint_build.extra["workflows"]["workflow_id"], user_id=None)
    assert graph.status is WorkflowStatus.CANCELED
    assert env.builds.get_build_by_id(lint_build.id or 0).outcome is Outcome.CANCELED  # type: ignore[union-attr]
    assert engine.cancel(env.project, wf, user_id=None).status is WorkflowStatus.CANCELED  # idempotent


def test_retry_of_a_skipped_or_errored_pipeline_runs_the_pipeline_again(env: Env) -> None:
    env.commit(FAN, message="wip [skip ci]")
    skipped = env.svc.trigger_pipeline(env.project, why=Why.PUSH)
    assert skipped is not None and skipped.dont_build == "ci-skip"
    again = env.svc.retry(env.project, skipped.build_num)
    assert again.why is Why.RETRY and again.extra["workflows"]["job_name"] == "build"
    assert again.vcs_revision == skipped.vcs_revision
    env.commit("version: 2.1\njobs:\n  build: {docker: [{image: x}], steps: [{run: '<< nope >>'}]}\n")
    broken = env.svc.trigger_pipeline(env.project)
    assert broken is not None and broken.outcome is Outcome.FAILED
    retried = env.svc.retry(env.project, broken.build_num)
    assert retried.outcome is Outcome.FAILED and retried.messages == broken.messages


def test_approve_then_cancel_the_workflow_cancels_the_approved_jobs_build(env: Env) -> None:
    env.commit(FAN)
    env.svc.workflows.contexts.create("prod")  # type: ignore[union-attr]
    env.svc.trigger_pipeline(env.project)
    main_build = next(b for b in env.all() if b.extra["workflows"]["workflow_name"] == "main")
    env.finish(main_build)
    for test in [b for b in env.all() if (b.job_name or "").startswith("test-")]:
        env.finish(test)
    engine = env.svc.workflows
    assert engine is not None
    graph = env.svc.workflow_graph(main_build)
    assert graph is not None and graph.status is WorkflowStatus.ON_HOLD
    engine.approve(env.project, graph.workflow_id, "hold", user_id=None)
    [deploy] = env.by_job("deploy")
    graph = engine.cancel(env.project, graph.workflow_id, user_id=None)
    states = {j.name: j.state for j in graph.jobs}
    assert states["hold"] is JobState.SUCCESS and states["deploy"] is JobState.CANCELED
    assert graph.status is WorkflowStatus.CANCELED
    assert env.builds.get_build_by_id(deploy.id or 0).outcome is Outcome.CANCELED  # type: ignore[union-attr]
    # the runner reports the canceled build's end later: nothing changes, nothing starts
    env.svc.build_finished(deploy.id or 0, Outcome.CANCELED, T0 + timedelta(seconds=5))
    again = env.svc.workflow_graph(deploy)
    assert again is not None and again.status is WorkflowStatus.CANCELED
    assert engine.cancel(env.project, graph.workflow_id, user_id=None).status is WorkflowStatus.CANCELED
    # approving again is idempotent and starts nothing in a canceled workflow
    assert (
        engine.approve(env.project, graph.workflow_id, "hold", user_id=None).status is WorkflowStatus.CANCELED
    )
    assert len(env.by_job("deploy")) == 1
