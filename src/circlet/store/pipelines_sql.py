"""PipelineStore on SQLAlchemy Core (tables of migration 0004), on SQLite or PostgreSQL.

Same conventions as store/sql.py: rows become dataclasses through explicit functions; every
method is one short transaction (writes begin with BEGIN IMMEDIATE on SQLite through
make_engine's hook; reads are single SELECTs), so one store is shared by every thread.
Pipeline numbers: the next number is read and inserted in one transaction; on PostgreSQL two
concurrent triggers may pick the same one, so a unique violation is retried.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from circlet.core.errors import Conflict, NotFound
from circlet.core.pipeline import Context, ContextVar, Pipeline, PipelineState, Workflow, WorkflowJob
from circlet.core.workflow import ACTIVE, JobState, JobType, Requirement, WorkflowStatus
from circlet.store.sql import _READ_ONLY
from circlet.store.tables import projects
from circlet.store.tables_pipelines import context_vars, contexts, pipelines, workflow_jobs, workflows

NUMBER_ATTEMPTS = 20


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------- rows <-> dataclasses


def _pipeline_values(p: Pipeline) -> dict[str, Any]:
    return {
        "id": p.id,
        "project_id": p.project_id,
        "number": p.number,
        "branch": p.branch,
        "tag": p.tag,
        "revision": p.revision,
        "trigger_source": p.trigger_source,
        "why": p.why,
        "parameters": p.parameters,
        "config_text": p.config_text,
        "compiled_config": p.compiled_config,
        "state": p.state.value,
        "errors": list(p.errors),
        "user_id": p.user_id,
        "created_at": p.created_at,
    }


def _pipeline_from_row(row: sa.Row[Any]) -> Pipeline:
    m = row._mapping
    return Pipeline(
        id=m["id"],
        project_id=m["project_id"],
        number=m["number"],
        branch=m["branch"],
        tag=m["tag"],
        revision=m["revision"],
        trigger_source=m["trigger_source"],
        why=m["why"],
        parameters=dict(m["parameters"] or {}),
        config_text=m["config_text"],
        compiled_config=m["compiled_config"],
        state=PipelineState(m["state"]),
        errors=tuple(m["errors"] or ()),
        user_id=m["user_id"],
        created_at=m["created_at"],
    )


def _workflow_values(w: Workflow) -> dict[str, Any]:
    return {
        "id": w.id,
        "pipeline_id": w.pipeline_id,
        "project_id": w.project_id,
        "name": w.name,
        "status": w.status.value,
        "created_at": w.created_at,
        "stopped_at": w.stopped_at,
    }


def _workflow_from_row(row: sa.Row[Any]) -> Workflow:
    m = row._mapping
    return Workflow(
        id=m["id"],
        pipeline_id=m["pipeline_id"],
        project_id=m["project_id"],
        name=m["name"],
        status=WorkflowStatus(m["status"]),
        created_at=m["created_at"],
        stopped_at=m["stopped_at"],
    )


def _job_values(j: WorkflowJob) -> dict[str, Any]:
    return {
        "id": j.id,
        "workflow_id": j.workflow_id,
        "position": j.position,
        "name": j.name,
        "type": j.type.value,
        "requires": [r.to_data() for r in j.requires],
        "contexts": list(j.contexts),
        "state": j.state.value,
        "build_id": j.build_id,
        "build_num": j.build_num,
        "approved_by": j.approved_by,
        "approved_at": j.approved_at,
    }


def _job_from_row(row: sa.Row[Any]) -> WorkflowJob:
    m = row._mapping
    return WorkflowJob(
        id=m["id"],
        workflow_id=m["workflow_id"],
        position=m["position"],
        name=m["name"],
        type=JobType(m["type"]),
        requires=tuple(Requirement.from_data(r) for r in m["requires"] or ()),
        contexts=tuple(m["contexts"] or ()),
        state=JobState(m["state"]),
        build_id=m["build_id"],
        build_num=m["build_num"],
        approved_by=m["approved_by"],
        approved_at=m["approved_at"],
    )


def _context_from_row(row: sa.Row[Any]) -> Context:
    m = row._mapping
    return Context(id=m["id"], name=m["name"], created_at=m["created_at"])


def _var_from_row(row: sa.Row[Any]) -> ContextVar:
    m = row._mapping
    return ContextVar(name=m["name"], value=m["value"], created_at=m["created_at"])


# ---------------------------------------------------------------- the store


class SqlPipelineStore:
    """PipelineStore on an SQLAlchemy engine (use store.sql.make_engine; schema by migrate).

    Beyond the protocol: a pipeline of an unknown project, or a workflow of an unknown
    pipeline, is NotFound; values without `created_at` get the current time."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        if engine.dialect.name == "postgresql":
            self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        else:
            self._reader = engine.execution_options(**{_READ_ONLY: True})

    def _all(self, statement: sa.Select[Any]) -> list[sa.Row[Any]]:
        with self._reader.connect() as connection:
            return list(connection.execute(statement))

    def _write(self, statement: sa.Executable) -> int:
        with self._engine.begin() as connection:
            return connection.execute(statement).rowcount

    # pipelines

    def create_pipeline(self, pipeline: Pipeline) -> Pipeline:
        for _ in range(NUMBER_ATTEMPTS):
            try:
                with self._engine.begin() as connection:
                    top = connection.execute(
                        sa.select(sa.func.max(pipelines.c.number)).where(
                            pipelines.c.project_id == pipeline.project_id
                        )
                    ).scalar()
                    stored = replace(
                        pipeline, number=(top or 0) + 1, created_at=pipeline.created_at or _now()
                    )
                    connection.execute(pipelines.insert().values(**_pipeline_values(stored)))
                    return stored
            except sa.exc.IntegrityError:
                if self.get_pipeline(pipeline.id) is not None:
                    raise Conflict(f"pipeline {pipeline.id} exists") from None
                if not self._all(sa.select(projects.c.id).where(projects.c.id == pipeline.project_id)):
                    raise NotFound(f"project {pipeline.project_id} not found") from None
                # another trigger took the number: read the next one again
        raise Conflict("could not number the pipeline: too many concurrent triggers")

    def get_pipeline(self, pipeline_id: str) -> Pipeline | None:
        rows = self._all(sa.select(pipelines).where(pipelines.c.id == pipeline_id))
        return _pipeline_from_row(rows[0]) if rows else None

    def save_pipeline(self, pipeline: Pipeline) -> None:
        values = _pipeline_values(pipeline)
        del values["id"]
        if not self._write(pipelines.update().where(pipelines.c.id == pipeline.id).values(**values)):
            raise NotFound(f"pipeline {pipeline.id} not found")

    def list_pipelines(self, project_id: int, limit: int = 30) -> list[Pipeline]:
        rows = self._all(
            sa.select(pipelines)
            .where(pipelines.c.project_id == project_id)
            .order_by(pipelines.c.number.desc())
            .limit(limit)
        )
        return [_pipeline_from_row(r) for r in rows]

    # workflows and jobs

    def add_workflow(self, workflow: Workflow, jobs: list[WorkflowJob]) -> None:
        stored = replace(workflow, created_at=workflow.created_at or _now())
        try:
            with self._engine.begin() as connection:
                connection.execute(workflows.insert().values(**_workflow_values(stored)))
                if jobs:
                    connection.execute(
                        workflow_jobs.insert(),
                        [_job_values(replace(j, workflow_id=workflow.id)) for j in jobs],
                    )
        except sa.exc.IntegrityError:
            if self.get_pipeline(workflow.pipeline_id) is None:
                raise NotFound(f"pipeline {workflow.pipeline_id} not found") from None
            raise Conflict(f"workflow {workflow.id} exists") from None

    def get_workflow(self, workflow_id: str) -> Workflow | None:
        rows = self._all(sa.select(workflows).where(workflows.c.id == workflow_id))
        return _workflow_from_row(rows[0]) if rows else None

    def save_workflow(self, workflow: Workflow) -> None:
        values = _workflow_values(workflow)
        del values["id"]
        if not self._write(workflows.update().where(workflows.c.id == workflow.id).values(**values)):
            raise NotFound(f"workflow {workflow.id} not found")

    def move_workflow(self, workflow: Workflow, *, expected: WorkflowStatus) -> bool:
        return self._move(workflows, workflow.id, workflows.c.status, expected, _workflow_values(workflow))

    def _move(
        self, table: sa.Table, row_id: str, column: Any, expected: StrEnum, values: dict[str, Any]
    ) -> bool:
        """Replace the row `row_id` of `table` with `values` if `column` is still `expected`."""
        values = {k: v for k, v in values.items() if k != "id"}
        statement = table.update().where(table.c.id == row_id, column == expected.value).values(**values)
        return self._write(statement) == 1

    def workflows_of(self, pipeline_id: str) -> list[Workflow]:
        rows = self._all(
            sa.select(workflows)
            .where(workflows.c.pipeline_id == pipeline_id)
            .order_by(workflows.c.created_at, workflows.c.name)
        )
        return [_workflow_from_row(r) for r in rows]

    def active_workflows(self) -> list[Workflow]:
        rows = self._all(
            sa.select(workflows)
            .where(workflows.c.status.in_([s.value for s in ACTIVE]))
            .order_by(workflows.c.created_at)
        )
        return [_workflow_from_row(r) for r in rows]

    def list_jobs(self, workflow_id: str) -> list[WorkflowJob]:
        rows = self._all(
            sa.select(workflow_jobs)
            .where(workflow_jobs.c.workflow_id == workflow_id)
            .order_by(workflow_jobs.c.position)
        )
        return [_job_from_row(r) for r in rows]

    def get_job(self, job_id: str) -> WorkflowJob | None:
        rows = self._all(sa.select(workflow_jobs).where(workflow_jobs.c.id == job_id))
        return _job_from_row(rows[0]) if rows else None

    def save_job(self, job: WorkflowJob) -> None:
        values = _job_values(job)
        del values["id"]
        if not self._write(workflow_jobs.update().where(workflow_jobs.c.id == job.id).values(**values)):
            raise NotFound(f"workflow job {job.id} not found")

    def move_job(self, job: WorkflowJob, *, expected: JobState) -> bool:
        return self._move(workflow_jobs, job.id, workflow_jobs.c.state, expected, _job_values(job))

    def job_of_build(self, build_id: int) -> WorkflowJob | None:
        rows = self._all(sa.select(workflow_jobs).where(workflow_jobs.c.build_id == build_id).limit(1))
        return _job_from_row(rows[0]) if rows else None

    def approved_on_hold(self) -> list[WorkflowJob]:
        rows = self._all(
            sa.select(workflow_jobs).where(
                workflow_jobs.c.type == JobType.APPROVAL.value,
                workflow_jobs.c.state == JobState.ON_HOLD.value,
                workflow_jobs.c.approved_at.is_not(None),
            )
        )
        return [_job_from_row(r) for r in rows]

    # contexts

    def create_context(self, context: Context) -> Context:
        stored = replace(context, created_at=context.created_at or _now())
        try:
            self._write(
                contexts.insert().values(id=stored.id, name=stored.name, created_at=stored.created_at)
            )
        except sa.exc.IntegrityError:
            raise Conflict(f"a context named {context.name!r} exists") from None
        return stored

    def get_context(self, name: str) -> Context | None:
        rows = self._all(sa.select(contexts).where(contexts.c.name == name))
        return _context_from_row(rows[0]) if rows else None

    def list_contexts(self) -> list[Context]:
        return [_context_from_row(r) for r in self._all(sa.select(contexts).order_by(contexts.c.name))]

    def delete_context(self, name: str) -> bool:
        with self._engine.begin() as connection:
            found = connection.execute(sa.select(contexts.c.id).where(contexts.c.name == name)).scalar()
            if found is None:
                return False
            connection.execute(context_vars.delete().where(context_vars.c.context_id == found))
            connection.execute(contexts.delete().where(contexts.c.id == found))
            return True

    def set_context_var(self, name: str, var: ContextVar) -> ContextVar:
        with self._engine.begin() as connection:
            found = connection.execute(sa.select(contexts.c.id).where(contexts.c.name == name)).scalar()
            if found is None:
                raise NotFound(f"context {name!r} not found")
            key = (context_vars.c.context_id == found) & (context_vars.c.name == var.name)
            old = connection.execute(sa.select(context_vars.c.created_at).where(key)).first()
            if old is not None:
                connection.execute(context_vars.update().where(key).values(value=var.value))
                return replace(var, created_at=old[0])
            stored = replace(var, created_at=var.created_at or _now())
            connection.execute(
                context_vars.insert().values(
                    context_id=found, name=var.name, value=var.value, created_at=stored.created_at
                )
            )
            return stored

    def list_context_vars(self, name: str) -> list[ContextVar]:
        rows = self._all(
            sa.select(context_vars)
            .join(contexts, contexts.c.id == context_vars.c.context_id)
            .where(contexts.c.name == name)
            .order_by(context_vars.c.name)
        )
        return [_var_from_row(r) for r in rows]

    def delete_context_var(self, name: str, var_name: str) -> bool:
        found = self.get_context(name)
        if found is None:
            return False
        return (
            self._write(
                context_vars.delete().where(
                    context_vars.c.context_id == found.id, context_vars.c.name == var_name
                )
            )
            > 0
        )
