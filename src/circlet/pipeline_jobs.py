"""The builds of workflow jobs: making them, retrying them, and what their runner gets.

Used by pipelines.Workflows (under its lock) and by Circlet._dispatch (`run_context`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from circlet.core import config as config_mod
from circlet.core.errors import ConfigError, InvalidRequest
from circlet.core.model import Build, Commit, Executor, Lifecycle, Message, Outcome, Project, Why
from circlet.core.pipeline import Pipeline, Workflow, WorkflowJob
from circlet.core.plan import JobPlan
from circlet.core.workflow import ACTIVE, JobSpec, JobState, downstream_of, upstream_of, workflow_status

if TYPE_CHECKING:
    from circlet.pipelines import Workflows

log = logging.getLogger("circlet.pipelines")


@dataclass(frozen=True, kw_only=True)
class RunContext:
    """What a workflow job's RunRequest gets beyond a plain build's."""

    environment: dict[str, str]
    workflow_id: str
    upstream_build_ids: tuple[int, ...]


def workflows_object(workflow: Workflow, job: WorkflowJob, jobs: list[WorkflowJob]) -> dict[str, Any]:
    """The v1.1 `workflows` object of a job's build (api-v1.1.md 5.4)."""
    required = {r.job for r in job.requires}
    return {
        "workflow_id": workflow.id,
        "workflow_name": workflow.name,
        "job_id": job.id,
        "job_name": job.name,
        "workspace_id": workflow.id,
        "upstream_job_ids": [j.id for j in jobs if j.name in required],
        "upstream_concurrency_map": {},
    }


def context_problem(missing: list[str]) -> Message:
    names = ", ".join(repr(m) for m in missing)
    return Message(
        type="error",
        reason="config",
        message=f"This job uses the context {names}, which does not exist: an administrator creates it "
        "with `circlet context create NAME` (or POST /api/v1.1/contexts).",
    )


class JobRun:
    """Builds of workflow jobs, for one Workflows engine."""

    def __init__(self, engine: Workflows) -> None:
        self.engine = engine

    def start(
        self,
        project: Project,
        pipeline: Pipeline,
        workflow: Workflow,
        job: WorkflowJob,
        jobs: list[WorkflowJob],
        *,
        claimed: bool = False,
    ) -> Build | None:
        """Create and dispatch the build of a job whose requirements are met. The job's row moves
        from blocked to running first (compare-and-set; None when another server moved it first),
        then gets the build: see pipelines.py on recovery. `claimed`: the row is already running
        (recovery after a crash). If the build cannot be created the job is blocked again."""
        store = self.engine.store
        if not claimed and not store.move_job(
            replace(job, state=JobState.RUNNING), expected=JobState.BLOCKED
        ):
            log.info("event=job_start_lost workflow_id=%s job=%s", workflow.id, job.name)
            return None
        try:
            plan, messages = self._plan(pipeline, job)
            build = self._create(project, pipeline, workflow, job, jobs, plan)
        except Exception:
            store.save_job(replace(job, state=JobState.BLOCKED, build_id=None, build_num=None))
            raise
        store.save_job(replace(job, state=JobState.RUNNING, build_id=build.id, build_num=build.build_num))
        return self._launch(project, workflow, job, build, plan, messages, event="job_started")

    def _launch(
        self,
        project: Project,
        workflow: Workflow,
        job: WorkflowJob,
        build: Build,
        plan: JobPlan | None,
        messages: list[Message],
        *,
        event: str,
    ) -> Build:
        """Dispatch a job's new build (recorded as the job's), or finish it failed with the
        messages that say why it cannot run; the build as it is now."""
        c = self.engine.circlet
        c._touch(build.project_id)
        log.info("event=%s workflow_id=%s job=%s build_num=%s", event, workflow.id, job.name, build.build_num)
        if plan is None:
            c.build_finished(build.id or 0, Outcome.FAILED, c.clock(), tuple(messages))
        else:
            c._dispatch(build, project=project, plan=plan)
        return c.store.get_build_by_id(build.id or 0) or build

    def _create(
        self,
        project: Project,
        pipeline: Pipeline,
        workflow: Workflow,
        job: WorkflowJob,
        jobs: list[WorkflowJob],
        plan: JobPlan | None,
    ) -> Build:
        """The build row of a job (not dispatched)."""
        c = self.engine.circlet
        return c.store.create_build(
            Build(
                project_id=project.id or 0,
                branch=pipeline.branch,
                vcs_tag=pipeline.tag,
                vcs_revision=pipeline.revision,
                commit=self._commit(project, pipeline),
                why=Why(pipeline.why),
                job_name=job.name,
                build_parameters={} if pipeline.trigger_source == "api" else None,
                parallel=plan.parallelism if plan else 1,
                lifecycle=Lifecycle.NOT_RUNNING,
                usage_queued_at=c.clock(),
                user_id=pipeline.user_id,
                config_text=pipeline.compiled_config,
                executor=_executor(plan),
                extra={
                    "workflows": workflows_object(workflow, job, jobs),
                    "pipeline_id": pipeline.id,
                    "pipeline_number": pipeline.number,
                    "contexts": list(job.contexts),
                    "context_ids": self._context_ids(job),
                },
            )
        )

    def _context_ids(self, job: WorkflowJob) -> list[str]:
        found = (self.engine.store.get_context(name) for name in job.contexts)
        return [context.id for context in found if context is not None]

    def _plan(self, pipeline: Pipeline, job: WorkflowJob) -> tuple[JobPlan | None, list[Message]]:
        missing = [name for name in job.contexts if self.engine.store.get_context(name) is None]
        if missing:
            return None, [context_problem(missing)]
        try:
            return config_mod.plan_job(self.engine.config_of(pipeline), job.name), []
        except ConfigError as exc:
            return None, [Message(type="error", message=str(p), reason="config") for p in exc.problems]

    def _commit(self, project: Project, pipeline: Pipeline) -> Commit:
        found = self.engine.commits.get(pipeline.id)
        if found is None:
            found = self.engine.commits[pipeline.id] = self.engine.circlet.source.commit(
                project, pipeline.revision
            )
        return found

    def retry(
        self, project: Project, old: Build, *, why: Why, user_id: int | None, ssh: bool, no_cache: bool
    ) -> Build:
        """Run the job of `old` again in the same workflow: a new build (retry_of = old), which
        becomes the job's build; the workflow's status follows it. Jobs that were not run below
        it stay not run; jobs still blocked below it start when it succeeds."""
        engine = self.engine
        c, store = engine.circlet, engine.store
        with engine._lock:
            info = old.extra.get("workflows") or {}
            job = store.get_job(str(info.get("job_id", "")))
            workflow = store.get_workflow(job.workflow_id) if job else None
            pipeline = store.get_pipeline(workflow.pipeline_id) if workflow else None
            if job is None or workflow is None or pipeline is None:
                raise InvalidRequest("The workflow of this build is gone; it cannot be retried")
            plan, messages = self._plan(pipeline, job)
            build = c.store.create_build(
                replace(
                    old,
                    id=None,
                    build_num=0,
                    why=why,
                    lifecycle=Lifecycle.NOT_RUNNING,
                    outcome=None,
                    usage_queued_at=c.clock(),
                    queued_at=None,
                    start_time=None,
                    stop_time=None,
                    retry_of=old.build_num,
                    user_id=user_id,
                    messages=(),
                    ssh_enabled=ssh,
                    ssh_users=(),
                    canceler_id=None,
                    canceled_by_system=False,
                    no_dependency_cache=no_cache,
                    worker=None,
                    parallel=plan.parallelism if plan else old.parallel,
                    extra={k: v for k, v in old.extra.items() if k != "status"},
                )
            )
            store.save_job(replace(job, state=JobState.RUNNING, build_id=build.id, build_num=build.build_num))
            self._unblock_below(workflow.id, job.name)
            jobs = store.list_jobs(workflow.id)
            status = workflow_status(j.state for j in jobs)
            store.save_workflow(
                replace(workflow, status=status, stopped_at=None if status in ACTIVE else workflow.stopped_at)
            )
            return self._launch(project, workflow, job, build, plan, messages, event="job_retried")

    def _unblock_below(self, workflow_id: str, name: str) -> None:
        """The jobs below a retried job that were not run wait again (blocked): they start when
        it succeeds, or are not run again when it does not (or another requirement failed)."""
        store = self.engine.store
        jobs = store.list_jobs(workflow_id)
        below = set(downstream_of([JobSpec(name=j.name, requires=j.requires) for j in jobs], name))
        for job in jobs:
            if job.name in below and job.state is JobState.NOT_RUN:
                store.move_job(replace(job, state=JobState.BLOCKED), expected=JobState.NOT_RUN)

    def run_context(
        self, build: Build, environment: dict[str, str], builtins: dict[str, str]
    ) -> RunContext | Message:
        """The environment of a workflow job's build (context variables over project variables
        and parameters, built-ins over both, then the workflow's own variables), its workflow id
        and the builds of every job it requires, directly or not, requirements first. A Message
        (the build must fail) when a context it names does not exist."""
        store = self.engine.store
        info = build.extra.get("workflows") or {}
        job = store.get_job(str(info.get("job_id", "")))
        names = list(job.contexts) if job else [str(n) for n in build.extra.get("contexts", [])]
        env = dict(environment)
        missing: list[str] = []
        for name in names:
            if store.get_context(name) is None:
                missing.append(name)
                continue
            for var in store.list_context_vars(name):
                if var.name not in builtins:
                    env[var.name] = var.value
        if missing:
            return context_problem(missing)
        workflow_id = str(info.get("workflow_id", ""))
        env.update(
            {
                "CIRCLE_WORKFLOW_ID": workflow_id,
                "CIRCLE_WORKFLOW_WORKSPACE_ID": str(info.get("workspace_id", workflow_id)),
                "CIRCLE_WORKFLOW_JOB_ID": str(info.get("job_id", "")),
                "CIRCLE_PIPELINE_ID": str(build.extra.get("pipeline_id", "")),
                "CIRCLE_PIPELINE_NUMBER": str(build.extra.get("pipeline_number", "")),
            }
        )
        upstream: tuple[int, ...] = ()
        if job is not None:
            jobs = store.list_jobs(job.workflow_id)
            by_name = {j.name: j for j in jobs}
            specs = [JobSpec(name=j.name, requires=j.requires) for j in jobs]
            upstream = tuple(
                by_name[name].build_id or 0 for name in upstream_of(specs, job.name) if by_name[name].build_id
            )
        return RunContext(environment=env, workflow_id=workflow_id, upstream_build_ids=upstream)


def _executor(plan: JobPlan | None) -> Executor | None:
    if plan is None:
        return None
    return Executor(kind=plan.executor_kind, image=plan.image, resource_class=plan.resource_class)
