"""One contract for every PipelineStore: the in-memory fake, SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from circlet.core.errors import Conflict, NotFound
from circlet.core.model import Project, VcsType
from circlet.core.pipeline import (
    Context,
    ContextVar,
    Pipeline,
    PipelineState,
    PipelineStore,
    Workflow,
    WorkflowJob,
)
from circlet.core.ports import BuildStore
from circlet.core.workflow import JobState, JobType, Requirement, WorkflowStatus
from circlet.store.migrate import migrate
from circlet.store.pipelines_sql import SqlPipelineStore
from circlet.store.sql import SqlBuildStore, make_engine
from circlet.testing import InMemoryBuildStore
from circlet.testing.pipelines import InMemoryPipelineStore

T0 = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)


@dataclass
class Stores:
    kind: str
    builds: BuildStore
    pipelines: PipelineStore
    project: int
    other: int


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    engine = None
    builds: BuildStore
    pipelines: PipelineStore
    if request.param == "memory":
        builds, pipelines = InMemoryBuildStore(), InMemoryPipelineStore()
    else:
        url = (
            f"sqlite:///{tmp_path}/data/circlet.db"
            if request.param == "sqlite"
            else request.getfixturevalue("postgres_url")
        )
        engine = make_engine(url)
        migrate(engine)
        builds, pipelines = SqlBuildStore(engine), SqlPipelineStore(engine)
    try:
        ids = [
            builds.add_project(
                Project(vcs_type=VcsType.GITHUB, username="acme", reponame=n, repo_url=f"/src/{n}")
            ).id
            or 0
            for n in ("widget", "gadget")
        ]
        yield Stores(request.param, builds, pipelines, ids[0], ids[1])
    finally:
        if engine is not None:
            engine.dispose()


def new_pipeline(project_id: int, **fields: object) -> Pipeline:
    return replace(Pipeline(id=str(uuid.uuid4()), project_id=project_id, revision="a" * 40), **fields)  # type: ignore[arg-type]


def test_pipelines_are_numbered_per_project_and_read_back_whole(stores: Stores) -> None:
    s = stores.pipelines
    first = s.create_pipeline(
        new_pipeline(
            stores.project,
            branch="main",
            parameters={"n": 3, "flag": True},
            config_text="version: 2.1\n",
            compiled_config="version: 2\n",
            created_at=T0,
            user_id=7,
            why="github",
            trigger_source="webhook",
        )
    )
    second = s.create_pipeline(new_pipeline(stores.project, tag="v1"))
    other = s.create_pipeline(new_pipeline(stores.other))
    assert (first.number, second.number, other.number) == (1, 2, 1)
    assert s.get_pipeline(first.id) == first
    assert second.created_at is not None
    assert [p.number for p in s.list_pipelines(stores.project)] == [2, 1]
    assert s.list_pipelines(stores.project, limit=1) == [second]
    errored = replace(first, state=PipelineState.ERRORED, errors=("bad", "worse"))
    s.save_pipeline(errored)
    assert s.get_pipeline(first.id) == errored
    assert s.get_pipeline(str(uuid.uuid4())) is None
    with pytest.raises(NotFound):
        s.save_pipeline(new_pipeline(stores.project))
    with pytest.raises(Conflict):
        s.create_pipeline(first)


def test_concurrent_pipelines_get_distinct_numbers(stores: Stores) -> None:
    with ThreadPoolExecutor(4) as pool:
        made = list(
            pool.map(lambda _: stores.pipelines.create_pipeline(new_pipeline(stores.project)), range(12))
        )
    assert sorted(p.number for p in made) == list(range(1, 13))


def test_workflows_and_jobs(stores: Stores) -> None:
    s = stores.pipelines
    pipeline = s.create_pipeline(new_pipeline(stores.project))
    workflow = Workflow(
        id=str(uuid.uuid4()), pipeline_id=pipeline.id, project_id=stores.project, name="main", created_at=T0
    )
    requires = (Requirement(job="build"), Requirement(job="lint", statuses=frozenset({JobState.FAILED})))
    jobs = [
        WorkflowJob(
            id=str(uuid.uuid4()),
            workflow_id=workflow.id,
            position=1,
            name="deploy",
            requires=requires,
            contexts=("prod", "aws"),
        ),
        WorkflowJob(id=str(uuid.uuid4()), workflow_id=workflow.id, position=0, name="build"),
        WorkflowJob(
            id=str(uuid.uuid4()), workflow_id=workflow.id, position=2, name="hold", type=JobType.APPROVAL
        ),
    ]
    s.add_workflow(workflow, jobs)
    assert s.get_workflow(workflow.id) == workflow
    assert [j.name for j in s.list_jobs(workflow.id)] == ["build", "deploy", "hold"]
    assert s.get_job(jobs[0].id) == jobs[0]
    assert s.workflows_of(pipeline.id) == [workflow]
    assert s.active_workflows() == [workflow]
    running = replace(jobs[1], state=JobState.RUNNING, build_id=41, build_num=3)
    s.save_job(running)
    assert s.job_of_build(41) == running
    assert s.job_of_build(42) is None
    assert s.approved_on_hold() == []
    held = replace(jobs[2], state=JobState.ON_HOLD, approved_by=5, approved_at=T0)
    s.save_job(held)
    assert s.approved_on_hold() == [held]
    done = replace(workflow, status=WorkflowStatus.SUCCESS, stopped_at=T0)
    s.save_workflow(done)
    assert s.get_workflow(workflow.id) == done
    assert s.active_workflows() == []
    with pytest.raises(NotFound):
        s.save_job(replace(jobs[0], id=str(uuid.uuid4())))
    with pytest.raises(NotFound):
        s.save_workflow(replace(workflow, id=str(uuid.uuid4())))
    with pytest.raises(NotFound):
        s.add_workflow(replace(workflow, id=str(uuid.uuid4()), pipeline_id=str(uuid.uuid4())), [])


def test_contexts_and_their_variables(stores: Stores) -> None:
    s = stores.pipelines
    prod = s.create_context(Context(id=str(uuid.uuid4()), name="prod", created_at=T0))
    s.create_context(Context(id=str(uuid.uuid4()), name="aws"))
    with pytest.raises(Conflict):
        s.create_context(Context(id=str(uuid.uuid4()), name="prod"))
    assert [c.name for c in s.list_contexts()] == ["aws", "prod"]
    assert s.get_context("prod") == prod
    assert s.get_context("nope") is None
    first = s.set_context_var("prod", ContextVar(name="TOKEN", value="one", created_at=T0))
    again = s.set_context_var("prod", ContextVar(name="TOKEN", value="two"))
    assert again.created_at == first.created_at == T0
    s.set_context_var("prod", ContextVar(name="A", value="a"))
    assert [(v.name, v.value) for v in s.list_context_vars("prod")] == [("A", "a"), ("TOKEN", "two")]
    assert s.list_context_vars("aws") == []
    with pytest.raises(NotFound):
        s.set_context_var("nope", ContextVar(name="X", value="x"))
    assert s.delete_context_var("prod", "A") is True
    assert s.delete_context_var("prod", "A") is False
    assert s.delete_context("prod") is True
    assert s.delete_context("prod") is False
    assert s.list_context_vars("prod") == []
    s.create_context(Context(id=str(uuid.uuid4()), name="prod"))
    assert s.list_context_vars("prod") == []  # a new context of an old name starts empty
