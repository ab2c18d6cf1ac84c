"""A fan-in job starts exactly once when the jobs it requires finish at the same moment on two
servers sharing one database (SQLite and PostgreSQL), and the store's compare-and-set
(PipelineStore.move_job) that makes it so.

Two `Circlet`s on the same stores stand for two servers: each has its own in-process lock, so
only the database can keep them from both starting the job. Barriers make the race certain:
both upstream builds are recorded before either server advances the workflow, and both servers
reach the write that starts the fan-in job before either makes it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from circlet.core.model import Build, Outcome, Project
from circlet.core.pipeline import PipelineStore, Workflow, WorkflowJob
from circlet.core.ports import BuildQuery
from circlet.core.workflow import JobState, WorkflowStatus
from circlet.service import Circlet
from circlet.store.migrate import migrate
from circlet.store.pipelines_sql import SqlPipelineStore
from circlet.store.sql import SqlBuildStore, make_engine
from circlet.testing import (
    FakeSourceHost,
    InMemoryLogStore,
    InMemoryProjectSettingsStore,
    RecordingDispatcher,
)

pytestmark = pytest.mark.timeout(120)

T0 = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
URL = "https://git.example/acme/widget.git"
DIAMOND = dedent(
    """\
    version: 2.1
    executors:
      sh: {docker: [{image: cimg/base:stable}]}
    jobs:
      build: {executor: sh, steps: [{run: make}]}
      left: {executor: sh, steps: [{run: make left}]}
      right: {executor: sh, steps: [{run: make right}]}
      merge: {executor: sh, steps: [{run: make merge}]}
    workflows:
      gated:
        jobs:
          - hold: {type: approval}
          - merge: {requires: [hold]}
      diamond:
        jobs:
          - build
          - left: {requires: [build]}
          - right: {requires: [build]}
          - merge: {requires: [left, right]}
    """
)
WAIT = 5.0  # seconds a barrier waits: long enough for a loaded machine, short if the fix works


class RacingStore:
    """A PipelineStore that holds two threads at the points where servers race: after a build
    ended (job_of_build: its row is saved), after reading the approvals to apply, and before
    the fan-in job is moved to running."""

    def __init__(self, inner: PipelineStore, fan_in: str) -> None:
        self.inner = inner
        self.fan_in = fan_in
        self.ended = threading.Barrier(2, timeout=WAIT)
        self.starting = threading.Barrier(2, timeout=WAIT)
        self.looked = threading.Barrier(2, timeout=WAIT)
        self.armed = False
        self.before_status: Callable[[], None] | None = None  # run once, before writing...
        self.hook_status = WorkflowStatus.FAILING  # ...a workflow status of this value

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _wait(self, barrier: threading.Barrier) -> None:
        if self.armed:
            with contextlib.suppress(threading.BrokenBarrierError):  # the other did not come: go on
                barrier.wait()

    def approved_on_hold(self) -> list[WorkflowJob]:
        found = self.inner.approved_on_hold()
        self._wait(self.looked)  # both servers saw the approval before either applies it
        return found

    def job_of_build(self, build_id: int) -> WorkflowJob | None:
        self._wait(self.ended)
        return self.inner.job_of_build(build_id)

    def _starts_fan_in(self, job: WorkflowJob) -> bool:
        return job.name == self.fan_in and job.state is JobState.RUNNING and job.build_id is None

    def save_job(self, job: WorkflowJob) -> None:
        if self._starts_fan_in(job):
            self._wait(self.starting)
        self.inner.save_job(job)

    def _status_write(self, workflow: Workflow) -> None:
        hook, self.before_status = self.before_status, None
        if hook is not None and workflow.status is self.hook_status:
            hook()  # another server changes the workflow between our read and our write
        elif hook is not None:
            self.before_status = hook

    def save_workflow(self, workflow: Workflow) -> None:
        self._status_write(workflow)
        self.inner.save_workflow(workflow)

    def move_workflow(self, workflow: Workflow, *, expected: WorkflowStatus) -> bool:
        self._status_write(workflow)
        return self.inner.move_workflow(workflow, expected=expected)

    def move_job(self, job: WorkflowJob, *, expected: JobState) -> bool:
        if self._starts_fan_in(job):
            self._wait(self.starting)
        return self.inner.move_job(job, expected=expected)


@dataclass
class Servers:
    one: Circlet
    two: Circlet
    builds: SqlBuildStore
    racing: RacingStore
    project: Project

    def of_job(self, name: str) -> list[Build]:
        found = self.builds.list_builds(BuildQuery(project_ids=(self.project.id or 0,), limit=100))
        return [b for b in found if b.job_name == name]

    def finish(self, server: Circlet, build: Build, outcome: Outcome = Outcome.SUCCESS) -> None:
        build_id = build.id or 0
        server.build_queued(build_id, T0)
        assert server.build_started(build_id, T0, "w1")
        server.build_finished(build_id, outcome, T0 + timedelta(seconds=1))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Servers]:
    url = (
        f"sqlite:///{tmp_path / 'db.sqlite'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = make_engine(url)
    migrate(engine)
    builds = SqlBuildStore(engine)
    racing = RacingStore(SqlPipelineStore(engine), fan_in="merge")
    source = FakeSourceHost()
    source.add_commit(URL, files={".circleci/config.yml": DIAMOND}, message="diamond")
    settings, logs = InMemoryProjectSettingsStore(), InMemoryLogStore()

    def server() -> Circlet:
        return Circlet(
            store=builds,
            logs=logs,
            source=source,
            dispatcher=RecordingDispatcher(),
            settings=settings,
            base_url="https://ci.example.com",
            pipelines=racing,  # type: ignore[arg-type]  # a proxy with the same methods
        )

    one, two = server(), server()
    project = one.add_project(vcs_type="github", username="acme", reponame="widget", repo_url=URL)
    try:
        yield Servers(one=one, two=two, builds=builds, racing=racing, project=project)
    finally:
        engine.dispose()


def test_a_diamonds_fan_in_starts_once_when_both_sides_end_together_on_two_servers(servers: Servers) -> None:
    first = servers.one.trigger_pipeline(servers.project)
    assert first is not None and first.job_name == "build"
    servers.finish(servers.one, first)
    (left,), (right,) = servers.of_job("left"), servers.of_job("right")

    servers.racing.armed = True
    errors: list[BaseException] = []

    def end(server: Circlet, build: Build) -> None:
        try:
            servers.finish(server, build)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [
        threading.Thread(target=end, args=(servers.one, left)),
        threading.Thread(target=end, args=(servers.two, right)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    servers.racing.armed = False
    assert not errors, errors

    merges = servers.of_job("merge")
    assert len(merges) == 1, [b.build_num for b in merges]
    job = servers.racing.inner.job_of_build(merges[0].id or 0)
    assert job is not None and job.state is JobState.RUNNING and job.build_num == merges[0].build_num

    servers.finish(servers.two, merges[0])
    workflow = servers.racing.inner.get_workflow(merges[0].extra["workflows"]["workflow_id"])
    assert workflow is not None and workflow.status is WorkflowStatus.SUCCESS


def test_move_job_and_move_workflow_are_compare_and_set(servers: Servers) -> None:
    servers.one.trigger_pipeline(servers.project)
    (build,) = servers.of_job("build")
    store = servers.racing.inner
    jobs = {j.name: j for j in store.list_jobs(build.extra["workflows"]["workflow_id"])}
    merge = jobs["merge"]
    assert merge.state is JobState.BLOCKED
    assert store.move_job(replace(merge, state=JobState.RUNNING), expected=JobState.BLOCKED)
    assert not store.move_job(replace(merge, state=JobState.NOT_RUN), expected=JobState.BLOCKED)
    assert store.get_job(merge.id) == replace(merge, state=JobState.RUNNING)
    gone = replace(merge, id="00000000-0000-0000-0000-000000000000")
    assert not store.move_job(gone, expected=JobState.RUNNING)  # unknown: False, not an error
    workflow = store.get_workflow(merge.workflow_id)
    assert workflow is not None and workflow.status is WorkflowStatus.RUNNING
    failed = replace(workflow, status=WorkflowStatus.FAILED)
    assert store.move_workflow(failed, expected=WorkflowStatus.RUNNING)
    assert not store.move_workflow(
        replace(workflow, status=WorkflowStatus.FAILING), expected=WorkflowStatus.RUNNING
    )
    assert store.get_workflow(workflow.id) == failed


def test_a_status_read_before_another_servers_change_never_overwrites_it(servers: Servers) -> None:
    """Server one records `left` failed and decides `failing` (right still runs); before it
    writes that, server two records `right` failed and the workflow `failed`. Server one's
    older decision must not turn the finished workflow back into an active one."""
    first = servers.one.trigger_pipeline(servers.project)
    assert first is not None
    servers.finish(servers.one, first)
    (left,), (right,) = servers.of_job("left"), servers.of_job("right")

    def other_server() -> None:
        servers.finish(servers.two, right, Outcome.FAILED)

    servers.racing.before_status = other_server
    servers.finish(servers.one, left, Outcome.FAILED)
    assert servers.racing.before_status is None  # the race happened

    workflow = servers.racing.inner.get_workflow(left.extra["workflows"]["workflow_id"])
    assert workflow is not None
    assert workflow.status is WorkflowStatus.FAILED and workflow.stopped_at is not None
    jobs = {j.name: j.state for j in servers.racing.inner.list_jobs(workflow.id)}
    assert jobs == {
        "build": JobState.SUCCESS,
        "left": JobState.FAILED,
        "right": JobState.FAILED,
        "merge": JobState.NOT_RUN,
    }


def test_an_approval_recorded_by_the_cli_starts_what_waits_once_when_two_servers_apply_it(
    servers: Servers,
) -> None:
    servers.one.trigger_pipeline(servers.project)
    engine_one, engine_two = servers.one.workflows, servers.two.workflows
    assert engine_one is not None and engine_two is not None
    (gated,) = [w for w in servers.racing.inner.active_workflows() if w.name == "gated"]
    engine_one.approve(servers.project, gated.id, "hold", user_id=None, apply=False)  # as the CLI does
    assert servers.of_job("merge") == []

    servers.racing.armed = True
    threads = [threading.Thread(target=engine.sweep) for engine in (engine_one, engine_two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    servers.racing.armed = False

    merges = [b for b in servers.of_job("merge") if b.extra["workflows"]["workflow_id"] == gated.id]
    assert len(merges) == 1, [b.build_num for b in merges]
    jobs = {j.name: j.state for j in servers.racing.inner.list_jobs(gated.id)}
    assert jobs == {"hold": JobState.SUCCESS, "merge": JobState.RUNNING}
