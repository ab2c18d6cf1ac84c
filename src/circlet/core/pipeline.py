"""Pipelines, workflows, workflow jobs and contexts as stored, and the port that stores them.

A pipeline is one trigger of a project (push or API) at one commit, with its config as
compiled; it runs zero or more workflows side by side; each workflow has jobs, each of which
becomes a build when it starts (approval jobs never do). Contexts are named sets of environment
variables, managed by administrators, that workflow jobs name in `context`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from circlet.core.workflow import JobState, JobType, Requirement, WorkflowStatus


class PipelineState(StrEnum):
    """What became of a pipeline."""

    CREATED = "created"  # its workflows were created (possibly none matched the branch or tag)
    ERRORED = "errored"  # its config could not be read or compiled; `errors` says why
    NOT_RUN = "not_run"  # skipped on purpose (`[ci skip]`)


@dataclass(frozen=True, kw_only=True)
class Pipeline:
    """One trigger of a project: what was built, and the config as it ran."""

    id: str  # UUID
    project_id: int
    number: int = 0  # per project, assigned by the store
    branch: str | None = None
    tag: str | None = None
    revision: str = ""
    trigger_source: str = "api"  # api | webhook (config.md 7.8)
    why: str = "api"  # the `why` of its builds
    parameters: dict[str, Any] = field(default_factory=dict)  # pipeline parameters of the trigger
    config_text: str | None = None  # the config as read at the commit
    compiled_config: str | None = None  # the 2.0-shaped config its jobs run (= config_text for 2.0)
    state: PipelineState = PipelineState.CREATED
    errors: tuple[str, ...] = ()
    user_id: int | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class Workflow:
    """One workflow run of a pipeline."""

    id: str  # UUID; also the workspace id of its jobs
    pipeline_id: str
    project_id: int
    name: str
    status: WorkflowStatus = WorkflowStatus.RUNNING
    created_at: datetime | None = None
    stopped_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class WorkflowJob:
    """One job of a workflow run; `build_id`/`build_num` are set once its build exists."""

    id: str  # UUID (the job_id of the v1.1 `workflows` object)
    workflow_id: str
    position: int  # order in the config
    name: str
    type: JobType = JobType.BUILD
    requires: tuple[Requirement, ...] = ()
    contexts: tuple[str, ...] = ()
    state: JobState = JobState.BLOCKED
    build_id: int | None = None
    build_num: int | None = None
    approved_by: int | None = None  # user id; set (with approved_at) by an approval
    approved_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class Context:
    """A named set of environment variables (admin-managed)."""

    id: str  # UUID
    name: str
    created_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class ContextVar:
    """One variable of a context."""

    name: str
    value: str
    created_at: datetime | None = None


class PipelineStore(Protocol):
    """Pipelines, workflows, workflow jobs and contexts. Every method is one transaction and
    thread-safe; methods taking a value replace the stored row whole (matched by id)."""

    def create_pipeline(self, pipeline: Pipeline) -> Pipeline:
        """Store a new pipeline, assigning the next number of its project (unique, increasing)."""
        ...

    def get_pipeline(self, pipeline_id: str) -> Pipeline | None: ...

    def save_pipeline(self, pipeline: Pipeline) -> None: ...

    def list_pipelines(self, project_id: int, limit: int = 30) -> list[Pipeline]:
        """Newest first."""
        ...

    def add_workflow(self, workflow: Workflow, jobs: list[WorkflowJob]) -> None:
        """Store a workflow with its jobs at once."""
        ...

    def get_workflow(self, workflow_id: str) -> Workflow | None: ...

    def save_workflow(self, workflow: Workflow) -> None: ...

    def move_workflow(self, workflow: Workflow, *, expected: WorkflowStatus) -> bool:
        """Replace the workflow's row only if its stored status is still `expected` (one
        statement); False when another server changed it first (or it is unknown)."""
        ...

    def workflows_of(self, pipeline_id: str) -> list[Workflow]:
        """In creation order."""
        ...

    def active_workflows(self) -> list[Workflow]:
        """Workflows running, failing or on hold, oldest first (restart recovery)."""
        ...

    def list_jobs(self, workflow_id: str) -> list[WorkflowJob]:
        """By position."""
        ...

    def get_job(self, job_id: str) -> WorkflowJob | None: ...

    def save_job(self, job: WorkflowJob) -> None: ...

    def move_job(self, job: WorkflowJob, *, expected: JobState) -> bool:
        """Replace the job's row with `job` only if its stored state is still `expected`, in one
        statement (compare-and-set); False when another thread or server moved it first. This is
        what makes a job start once when several processes advance one workflow."""
        ...

    def job_of_build(self, build_id: int) -> WorkflowJob | None:
        """The workflow job whose current build this is."""
        ...

    def approved_on_hold(self) -> list[WorkflowJob]:
        """Approval jobs approved (approved_at set) but still on hold: approvals recorded by
        another process (the CLI) that the server has not applied yet."""
        ...

    # contexts
    def create_context(self, context: Context) -> Context:
        """Conflict when a context of that name exists."""
        ...

    def get_context(self, name: str) -> Context | None: ...

    def list_contexts(self) -> list[Context]:
        """By name."""
        ...

    def delete_context(self, name: str) -> bool:
        """Delete it with its variables; False when there was none."""
        ...

    def set_context_var(self, name: str, var: ContextVar) -> ContextVar:
        """Create or overwrite by name (keeping created_at); NotFound for an unknown context."""
        ...

    def list_context_vars(self, name: str) -> list[ContextVar]:
        """By name; [] for an unknown context."""
        ...

    def delete_context_var(self, name: str, var_name: str) -> bool: ...


# ---------------------------------------------------------------- scheduled runs (scheduler.py)


class ScheduleRunState(StrEnum):
    """What became of one scheduled run (docs/schedules.md)."""

    PENDING = "pending"  # asked for by `circlet schedule run-due`; the server starts it
    STARTED = "started"  # claimed by a server, which is triggering it (a crash here loses it)
    DONE = "done"  # its pipeline was triggered (`pipeline_id`, `build_num` of its first build)
    FAILED = "failed"  # it could not be triggered; `error` says why


@dataclass(frozen=True, kw_only=True)
class ScheduleRun:
    """One run of a scheduled workflow on one branch for one minute; the key (project,
    workflow, branch, minute) is unique, so no minute ever runs twice."""

    project_id: int
    workflow: str
    branch: str
    minute: datetime  # UTC, seconds zero
    state: ScheduleRunState = ScheduleRunState.STARTED
    revision: str = ""  # the branch's head when it was due
    requested_by: str = "scheduler"  # scheduler (the server's clock) | cli (an operator)
    pipeline_id: str | None = None
    build_num: int | None = None
    error: str | None = None
    created_at: datetime | None = None


class ScheduleStore(Protocol):
    """Scheduled runs. Every method is one transaction and thread-safe, across processes too."""

    def claim_run(self, run: ScheduleRun) -> bool:
        """Record a run; False (nothing changed) when its key is already recorded."""
        ...

    def take_pending(self, limit: int = 100) -> list[ScheduleRun]:
        """Pending runs, oldest first, each moved to STARTED for the caller alone (a run two
        callers race for goes to one of them)."""
        ...

    def save_run(self, run: ScheduleRun) -> None:
        """Replace a recorded run (matched by key)."""
        ...

    def list_runs(self, project_id: int | None = None, limit: int = 50) -> list[ScheduleRun]:
        """Newest minute first."""
        ...

    def prune_runs(self, before: datetime) -> int:
        """Forget runs of minutes before `before`; how many."""
        ...
