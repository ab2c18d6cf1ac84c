"""Pipelines and workflows: the engine behind `Circlet.trigger_pipeline` (docs/workflows.md).

`Workflows` creates a pipeline per trigger, compiles 2.1 configs, records each workflow and its
jobs, creates a build for every job whose requirements succeeded, and advances the workflows
when builds end (Circlet.build_finished / cancel call `build_changed`). Decisions are the pure
functions of core/workflow.py; this module does the I/O around them.

Concurrency: every change to workflows goes through one re-entrant lock. A job's row is marked
`running` before its build is created and gets the build's id right after, so `recover()` can
tell a job whose build was never made (it makes it) from one whose id was not recorded (it
finds the build by the job id its `workflows` object carries): nothing is lost or doubled.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from circlet.contexts import Contexts
from circlet.core import config as config_mod
from circlet.core.errors import InvalidRequest, NotFound
from circlet.core.model import Build, Commit, Project, Why
from circlet.core.pipeline import Pipeline, PipelineStore, Workflow, WorkflowJob
from circlet.core.ports import BuildQuery
from circlet.core.workflow import (
    ACTIVE,
    GraphJob,
    JobSpec,
    JobState,
    JobType,
    WorkflowBrief,
    WorkflowGraph,
    next_moves,
    state_of_outcome,
    workflow_status,
)
from circlet.pipeline_jobs import JobRun
from circlet.pipeline_trigger import PipelineTrigger

if TYPE_CHECKING:
    from circlet.service import Circlet

log = logging.getLogger("circlet.pipelines")

CONFIG_PATH = ".circleci/config.yml"
FIND_WINDOW = 500  # newest builds of a project searched for a job's build after a crash
APPROVAL_WINDOW = timedelta(days=90)  # an approval job may be approved this long after its workflow starts
EXPIRY_EVERY = 60.0  # seconds between two looks for workflows whose approvals expired


class Workflows:
    """The pipeline engine; one per Circlet (which calls it through small hooks)."""

    def __init__(
        self,
        circlet: Circlet,
        store: PipelineStore,
        *,
        orbs_dir: Path | None = None,
        sweep_seconds: float = 1.0,
    ) -> None:
        self.circlet = circlet
        self.store = store
        self.orbs_dir = orbs_dir
        self.sweep_seconds = sweep_seconds
        self._lock = threading.RLock()
        self._busy = False  # an advance runs in the thread holding the lock
        self._pending: set[str] = set()  # workflows to advance once the running advance ends
        self.configs: dict[str, config_mod.Config] = {}
        self.commits: dict[str, Commit] = {}  # by pipeline id: the commit its builds show
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._expired_at = float("-inf")  # monotonic time of the last expire_approvals in sweep
        self.jobs = JobRun(self)
        self.triggers = PipelineTrigger(self)
        self.contexts = Contexts(store, circlet.clock)

    # ------------------------------------------------------------ running in the background

    def start(self) -> None:
        """Apply approvals recorded by other processes (the CLI) every `sweep_seconds`."""
        if self._sweeper is None:
            self._stop.clear()
            self._sweeper = threading.Thread(target=self._sweep_loop, name="circlet-workflows", daemon=True)
            self._sweeper.start()

    def stop(self) -> None:
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(5)
            self._sweeper = None

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.sweep_seconds):
            try:
                self.sweep()
            except Exception:
                log.exception("event=workflow_sweep_error")

    def sweep(self) -> None:
        """Advance workflows with an approval recorded but not applied yet; once a minute, end
        the workflows whose approvals expired."""
        for workflow_id in {job.workflow_id for job in self.store.approved_on_hold()}:
            self.advance(workflow_id)
        if time.monotonic() - self._expired_at >= EXPIRY_EVERY:
            self._expired_at = time.monotonic()
            self.expire_approvals()

    def expired(self, workflow: Workflow, now: datetime | None = None) -> bool:
        """Whether the workflow's approval jobs can no longer be approved (docs/workflows.md:
        90 days after the workflow was created, by the service's clock)."""
        now = now or self.circlet.clock()
        return workflow.created_at is not None and now - workflow.created_at > APPROVAL_WINDOW

    def expire_approvals(self) -> list[str]:
        """Cancel the approval jobs still on hold (not approved) of every active workflow older
        than the approval window, then advance it: what waited for them is not run and the
        workflow ends `canceled`. Returns the ids of the workflows changed. Idempotent."""
        changed: list[str] = []
        now = self.circlet.clock()
        for workflow in self.store.active_workflows():
            if not self.expired(workflow, now):
                continue
            with self._lock:
                for job in self.store.list_jobs(workflow.id):
                    if job.state is JobState.ON_HOLD and job.approved_at is None:
                        self.store.move_job(replace(job, state=JobState.CANCELED), expected=JobState.ON_HOLD)
                        log.info("event=approval_expired workflow_id=%s job=%s", workflow.id, job.name)
                        changed.append(workflow.id)
                self.advance(workflow.id)
        return changed

    def recover(self) -> None:
        """After a restart: bring every active workflow up to date with its builds, making the
        builds of jobs a crash left without one (never twice)."""
        for workflow in self.store.active_workflows():
            self.advance(workflow.id, recovering=True)

    # ------------------------------------------------------------ triggering

    def trigger(
        self,
        project: Project,
        *,
        branch: str | None,
        tag: str | None,
        revision: str | None,
        parameters: dict[str, Any] | None,
        why: Why,
        user_id: int | None,
        workflow: str | None = None,
    ) -> Build | None:
        """Create a pipeline and start its workflows (pipeline_trigger.py); the first build
        made, or None when nothing matched. See Circlet.trigger_pipeline for the contract."""
        return self.triggers.trigger(
            project,
            branch=branch,
            tag=tag,
            revision=revision,
            parameters=parameters,
            why=why,
            user_id=user_id,
            only_workflow=workflow,
        )

    def config_of(self, pipeline: Pipeline) -> config_mod.Config:
        """The compiled config of a pipeline (cached; ConfigError if it cannot be read)."""
        found = self.configs.get(pipeline.id)
        if found is None:
            found = config_mod.load_config(pipeline.compiled_config or "", filename=CONFIG_PATH)
            if len(self.configs) > 64:
                self.configs.clear()
            self.configs[pipeline.id] = found
        return found

    # ------------------------------------------------------------ advancing

    def build_changed(self, build_id: int) -> None:
        """A build ended or was canceled: advance its workflow, if it has one. Never raises."""
        try:
            job = self.store.job_of_build(build_id)
            if job is not None:
                self.advance(job.workflow_id)
        except Exception:
            log.exception("event=workflow_advance_error build_id=%s", build_id)

    def advance(self, workflow_id: str, *, recovering: bool = False) -> list[Build]:
        """Bring the workflow's jobs up to date with their builds and approvals, start the jobs
        whose requirements are met, record the ones that can never run, and set the workflow's
        status. Returns the builds it created. A call made while this thread is already
        advancing (a build that fails at once) is queued and done by the outer call.

        Safe against other servers advancing the same workflow: a job moves out of `blocked`
        (or `on_hold`) by a compare-and-set (PipelineStore.move_job), so only one of them starts
        it. A job `running` without a build is another server making it, except when
        `recovering` (at start-up, after a crash): then its build is found or made."""
        with self._lock:
            if self._busy:
                self._pending.add(workflow_id)
                return []
            self._busy = True
            made: list[Build] = []
            try:
                todo = [workflow_id]
                while todo:
                    made += self._advance_one(todo.pop(), recovering=recovering)
                    todo += sorted(self._pending)
                    self._pending.clear()
            finally:
                self._busy = False
            return made

    def _advance_one(self, workflow_id: str, *, recovering: bool = False) -> list[Build]:
        c = self.circlet
        workflow = self.store.get_workflow(workflow_id)
        if workflow is None or workflow.status not in ACTIVE:
            return []
        pipeline = self.store.get_pipeline(workflow.pipeline_id)
        project = c.store.get_project_by_id(workflow.project_id)
        if pipeline is None or project is None:
            return []
        made: list[Build] = []
        jobs = self.store.list_jobs(workflow_id)
        for _ in range(2 * len(jobs) + 2):
            jobs = [self._sync(project, pipeline, workflow, job, jobs, made, recovering) for job in jobs]
            specs = [JobSpec(name=j.name, type=j.type, requires=j.requires) for j in jobs]
            moves = next_moves(specs, {j.name: j.state for j in jobs})
            if not moves.start and not moves.not_run:
                break
            for job in jobs:
                if job.name in moves.not_run:
                    self.store.move_job(replace(job, state=JobState.NOT_RUN), expected=JobState.BLOCKED)
                elif job.name in moves.start and job.type is JobType.APPROVAL:
                    self.store.move_job(replace(job, state=JobState.ON_HOLD), expected=JobState.BLOCKED)
                elif job.name in moves.start:
                    started = self.jobs.start(project, pipeline, workflow, job, jobs)
                    made += [started] if started is not None else []
            jobs = self.store.list_jobs(workflow_id)
        self._settle(workflow, jobs)
        return made

    def _settle(self, workflow: Workflow, jobs: list[WorkflowJob]) -> None:
        """Record the workflow's status as its jobs say. By compare-and-set: when another
        server changed the status since `workflow` was read, read both again and decide again,
        so a status computed from jobs read earlier never overwrites a newer one."""
        for _ in range(5):
            status = workflow_status(j.state for j in jobs)
            if status is workflow.status:
                return
            stopped = None if status in ACTIVE else self.circlet.clock()
            if self.store.move_workflow(
                replace(workflow, status=status, stopped_at=stopped), expected=workflow.status
            ):
                log.info("event=workflow_status workflow_id=%s status=%s", workflow.id, status)
                return
            found = self.store.get_workflow(workflow.id)
            if found is None:
                return
            workflow, jobs = found, self.store.list_jobs(workflow.id)
        log.warning("event=workflow_status_contended workflow_id=%s", workflow.id)

    def _sync(
        self,
        project: Project,
        pipeline: Pipeline,
        workflow: Workflow,
        job: WorkflowJob,
        jobs: list[WorkflowJob],
        made: list[Build],
        recovering: bool = False,
    ) -> WorkflowJob:
        """The job's row brought up to date with its build or approval (saved when changed)."""
        new = job
        if job.type is JobType.APPROVAL and job.state is JobState.ON_HOLD and job.approved_at is not None:
            new = replace(job, state=JobState.SUCCESS)  # unless another server canceled it first:
            moved = self.store.move_job(new, expected=JobState.ON_HOLD)
            return new if moved else (self.store.get_job(job.id) or job)
        if job.state is JobState.RUNNING and job.build_id is None:
            if not recovering:
                return job  # another server is making its build right now
            found = self._find_build(project, job)  # a crash came between creating the build and this row
            if found is None:
                started = self.jobs.start(project, pipeline, workflow, job, jobs, claimed=True)
                made += [started] if started is not None else []
                return self.store.get_job(job.id) or job
            new = replace(job, build_id=found.id, build_num=found.build_num)
        elif job.state is JobState.RUNNING:
            build = self.circlet.store.get_build_by_id(job.build_id or 0)
            if build is None:
                new = replace(job, state=JobState.FAILED)
            elif build.finished:
                new = replace(job, state=state_of_outcome(build.outcome))
        if new != job:
            self.store.save_job(new)
        return new

    def _find_build(self, project: Project, job: WorkflowJob) -> Build | None:
        for build in self.circlet.store.list_builds(
            BuildQuery(project_ids=(project.id or 0,), limit=FIND_WINDOW)
        ):
            if (build.extra.get("workflows") or {}).get("job_id") == job.id:
                return build
        return None

    # ------------------------------------------------------------ approvals, retries, reading

    def approve(
        self,
        project: Project | None,
        workflow_id: str,
        job_name: str,
        *,
        user_id: int | None,
        apply: bool = True,
    ) -> WorkflowGraph:
        """Approve an approval job on hold; idempotent for one already approved. With apply
        False (the CLI, another process) only record it: the server applies it within a second.
        NotFound for an unknown workflow or job; InvalidRequest for a job that is not an approval
        or not on hold."""
        with self._lock:
            workflow = self._workflow(project, workflow_id)
            job = next((j for j in self.store.list_jobs(workflow.id) if j.name == job_name), None)
            if job is None:
                raise NotFound(f"workflow {workflow.name} has no job {job_name!r}")
            if job.type is not JobType.APPROVAL:
                raise InvalidRequest(f"job {job_name!r} is not an approval job")
            if job.approved_at is None and self.expired(workflow):
                if job.state is JobState.ON_HOLD:
                    self.store.save_job(replace(job, state=JobState.CANCELED))
                    log.info("event=approval_expired workflow_id=%s job=%s", workflow.id, job_name)
                    if apply:  # else (the CLI) the server's sweep ends the workflow within a minute
                        self.advance(workflow.id)
                raise InvalidRequest(
                    f"The approval of job {job_name!r} expired: approval jobs can be approved for "
                    f"{APPROVAL_WINDOW.days} days after their workflow started "
                    f"({workflow.created_at:%Y-%m-%dT%H:%M:%SZ}); the job was canceled and "
                    "what required it will not run. Trigger a new pipeline to run the workflow again."
                )
            if job.approved_at is None:
                if job.state is not JobState.ON_HOLD:
                    raise InvalidRequest(
                        f"job {job_name!r} is {job.state.value}: only a job on hold can be approved"
                    )
                state = JobState.SUCCESS if apply else JobState.ON_HOLD
                self.store.save_job(
                    replace(job, approved_by=user_id, approved_at=self.circlet.clock(), state=state)
                )
                log.info(
                    "event=job_approved workflow_id=%s job=%s user_id=%s", workflow.id, job_name, user_id
                )
            if apply:
                self.advance(workflow.id)
            return self.graph(workflow.id)

    def _workflow(self, project: Project | None, workflow_id: str) -> Workflow:
        workflow = self.store.get_workflow(workflow_id) if _is_uuid(workflow_id) else None
        if workflow is None or (project is not None and workflow.project_id != project.id):
            raise NotFound("Workflow not found")
        return workflow

    def cancel(self, project: Project, workflow_id: str, *, user_id: int | None) -> WorkflowGraph:
        """Cancel a workflow: its running builds are canceled, approvals on hold become
        canceled, and everything still blocked is then not run. Idempotent."""
        with self._lock:
            workflow = self._workflow(project, workflow_id)
            for job in self.store.list_jobs(workflow.id):
                if job.state is JobState.ON_HOLD:
                    self.store.move_job(replace(job, state=JobState.CANCELED), expected=JobState.ON_HOLD)
                elif job.state is JobState.RUNNING and job.build_num is not None:
                    self.circlet.cancel(project, job.build_num, user_id=user_id)
            self.advance(workflow.id)
            log.info("event=workflow_canceled workflow_id=%s", workflow.id)
            return self.graph(workflow.id)

    def retry_job(
        self, project: Project, old: Build, *, why: Why, user_id: int | None, ssh: bool, no_cache: bool
    ) -> Build:
        """Run a workflow job again, alone, in the same workflow (docs/workflows.md). A build
        that stood for a whole pipeline (a broken config, `[ci skip]`) runs the pipeline again at
        the same commit with the same parameters; InvalidRequest when no job matches any more."""
        if old.extra.get("workflows"):
            return self.jobs.retry(project, old, why=why, user_id=user_id, ssh=ssh, no_cache=no_cache)
        pipeline = self.store.get_pipeline(str(old.extra.get("pipeline_id", "")))
        made = self.trigger(
            project,
            branch=old.branch,
            tag=old.vcs_tag,
            revision=None if old.vcs_tag else old.vcs_revision,
            parameters=pipeline.parameters if pipeline and pipeline.parameters else None,
            why=why,
            user_id=user_id,
        )
        if made is None:
            raise InvalidRequest("The config runs no job for this branch or tag any more")
        return made

    def workflow_of(self, workflow_id: str, project: Project | None = None) -> Workflow:
        """NotFound("Workflow not found") for an unknown id (or one of another project)."""
        return self._workflow(project, workflow_id)

    def graph(self, workflow_id: str) -> WorkflowGraph:
        workflow = self._workflow(None, workflow_id)
        pipeline = self.store.get_pipeline(workflow.pipeline_id)
        return WorkflowGraph(
            workflow_id=workflow.id,
            name=workflow.name,
            status=workflow.status,
            jobs=tuple(
                GraphJob(
                    name=j.name,
                    type=j.type,
                    requires=tuple(r.job for r in j.requires),
                    state=j.state,
                    build_num=j.build_num,
                    job_id=j.id,
                )
                for j in self.store.list_jobs(workflow.id)
            ),
            pipeline_id=workflow.pipeline_id,
            pipeline_number=pipeline.number if pipeline else 0,
            created_at=workflow.created_at,
            stopped_at=workflow.stopped_at,
        )

    def latest(self, builds: list[Build]) -> tuple[WorkflowBrief, ...]:
        """The newest run of each workflow among these builds (newest first), by name."""
        seen: dict[str, WorkflowBrief] = {}
        for build in builds:
            info = build.extra.get("workflows")
            if not isinstance(info, dict) or info.get("workflow_name") in seen:
                continue
            found = self.store.get_workflow(str(info.get("workflow_id", "")))
            if found is not None:
                seen[found.name] = WorkflowBrief(
                    name=found.name, status=found.status, created_at=found.created_at, id=found.id
                )
        return tuple(seen.values())

    def graph_of_build(self, build: Build) -> WorkflowGraph | None:
        info = build.extra.get("workflows")
        if not isinstance(info, dict) or not isinstance(info.get("workflow_id"), str):
            return None
        try:
            return self.graph(info["workflow_id"])
        except NotFound:
            return None


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
