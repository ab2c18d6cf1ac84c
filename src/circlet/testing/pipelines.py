"""InMemoryPipelineStore: the PipelineStore fake (contract: tests/contract/test_pipeline_store.py)."""

from __future__ import annotations

import copy
import threading
from dataclasses import replace
from datetime import UTC, datetime

from circlet.core.errors import Conflict, NotFound
from circlet.core.pipeline import Context, ContextVar, Pipeline, Workflow, WorkflowJob
from circlet.core.workflow import ACTIVE, JobState, JobType, WorkflowStatus


def _now() -> datetime:
    return datetime.now(UTC)


class InMemoryPipelineStore:
    """PipelineStore in dicts behind a lock; values are copied in and out, as a database would.
    Like the SQL store, values without `created_at` get the current time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pipelines: dict[str, Pipeline] = {}
        self._workflows: dict[str, Workflow] = {}
        self._jobs: dict[str, WorkflowJob] = {}
        self._contexts: dict[str, Context] = {}
        self._vars: dict[tuple[str, str], ContextVar] = {}

    # pipelines

    def create_pipeline(self, pipeline: Pipeline) -> Pipeline:
        with self._lock:
            if pipeline.id in self._pipelines:
                raise Conflict(f"pipeline {pipeline.id} exists")
            mine = [p.number for p in self._pipelines.values() if p.project_id == pipeline.project_id]
            number = 1 + max(mine, default=0)
            stored = replace(pipeline, number=number, created_at=pipeline.created_at or _now())
            self._pipelines[stored.id] = copy.deepcopy(stored)
            return stored

    def get_pipeline(self, pipeline_id: str) -> Pipeline | None:
        with self._lock:
            return copy.deepcopy(self._pipelines.get(pipeline_id))

    def save_pipeline(self, pipeline: Pipeline) -> None:
        with self._lock:
            if pipeline.id not in self._pipelines:
                raise NotFound(f"pipeline {pipeline.id} not found")
            self._pipelines[pipeline.id] = copy.deepcopy(pipeline)

    def list_pipelines(self, project_id: int, limit: int = 30) -> list[Pipeline]:
        with self._lock:
            found = [p for p in self._pipelines.values() if p.project_id == project_id]
            return copy.deepcopy(sorted(found, key=lambda p: -p.number)[:limit])

    # workflows and jobs

    def add_workflow(self, workflow: Workflow, jobs: list[WorkflowJob]) -> None:
        with self._lock:
            if workflow.pipeline_id not in self._pipelines:
                raise NotFound(f"pipeline {workflow.pipeline_id} not found")
            if workflow.id in self._workflows or any(j.id in self._jobs for j in jobs):
                raise Conflict(f"workflow {workflow.id} exists")
            self._workflows[workflow.id] = replace(workflow, created_at=workflow.created_at or _now())
            for job in jobs:
                self._jobs[job.id] = replace(job, workflow_id=workflow.id)

    def get_workflow(self, workflow_id: str) -> Workflow | None:
        with self._lock:
            return self._workflows.get(workflow_id)

    def save_workflow(self, workflow: Workflow) -> None:
        with self._lock:
            if workflow.id not in self._workflows:
                raise NotFound(f"workflow {workflow.id} not found")
            self._workflows[workflow.id] = workflow

    def move_workflow(self, workflow: Workflow, *, expected: WorkflowStatus) -> bool:
        with self._lock:
            stored = self._workflows.get(workflow.id)
            if stored is None or stored.status is not expected:
                return False
            self._workflows[workflow.id] = workflow
            return True

    def workflows_of(self, pipeline_id: str) -> list[Workflow]:
        with self._lock:
            return [w for w in self._workflows.values() if w.pipeline_id == pipeline_id]

    def active_workflows(self) -> list[Workflow]:
        with self._lock:
            return [w for w in self._workflows.values() if w.status in ACTIVE]

    def list_jobs(self, workflow_id: str) -> list[WorkflowJob]:
        with self._lock:
            return sorted(
                (j for j in self._jobs.values() if j.workflow_id == workflow_id), key=lambda j: j.position
            )

    def get_job(self, job_id: str) -> WorkflowJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def save_job(self, job: WorkflowJob) -> None:
        with self._lock:
            if job.id not in self._jobs:
                raise NotFound(f"workflow job {job.id} not found")
            self._jobs[job.id] = job

    def move_job(self, job: WorkflowJob, *, expected: JobState) -> bool:
        with self._lock:
            stored = self._jobs.get(job.id)
            if stored is None or stored.state is not expected:
                return False
            self._jobs[job.id] = job
            return True

    def job_of_build(self, build_id: int) -> WorkflowJob | None:
        with self._lock:
            return next((j for j in self._jobs.values() if j.build_id == build_id), None)

    def approved_on_hold(self) -> list[WorkflowJob]:
        with self._lock:
            return [
                j
                for j in self._jobs.values()
                if j.type is JobType.APPROVAL and j.state is JobState.ON_HOLD and j.approved_at is not None
            ]

    # contexts

    def create_context(self, context: Context) -> Context:
        with self._lock:
            if context.name in self._contexts:
                raise Conflict(f"a context named {context.name!r} exists")
            stored = replace(context, created_at=context.created_at or _now())
            self._contexts[context.name] = stored
            return stored

    def get_context(self, name: str) -> Context | None:
        with self._lock:
            return self._contexts.get(name)

    def list_contexts(self) -> list[Context]:
        with self._lock:
            return [c for _, c in sorted(self._contexts.items())]

    def delete_context(self, name: str) -> bool:
        with self._lock:
            for key in [k for k in self._vars if k[0] == name]:
                del self._vars[key]
            return self._contexts.pop(name, None) is not None

    def set_context_var(self, name: str, var: ContextVar) -> ContextVar:
        with self._lock:
            if name not in self._contexts:
                raise NotFound(f"context {name!r} not found")
            old = self._vars.get((name, var.name))
            stored = replace(var, created_at=old.created_at if old else (var.created_at or _now()))
            self._vars[(name, var.name)] = stored
            return stored

    def list_context_vars(self, name: str) -> list[ContextVar]:
        with self._lock:
            return [v for (c, _), v in sorted(self._vars.items()) if c == name]

    def delete_context_var(self, name: str, var_name: str) -> bool:
        with self._lock:
            return self._vars.pop((name, var_name), None) is not None
