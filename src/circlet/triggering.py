"""Making and stopping builds: the trigger verbs of the `Circlet` facade.

trigger (one job), trigger_pipeline (every workflow, as a push would), retry, cancel, SSH users,
the refs the branch poller reads and a build's workflow graph. `TriggerVerbs` is mixed into
`service.Circlet` (callers use these methods on a Circlet, never this class alone); handing a
build to the executor (`_dispatch`) stays in service.py, reporting runs in reporting.py.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from circlet.core import circleyml, infer
from circlet.core import config as config_mod
from circlet.core import env as env_mod
from circlet.core.errors import ConfigError, InvalidRequest, JobNotRunnable
from circlet.core.model import Build, Executor, Lifecycle, Message, Outcome, Project, Why
from circlet.core.plan import JobPlan
from circlet.core.ports import BuildStore, Dispatcher, SourceHost
from circlet.core.workers import containers_of, unstarted_containers
from circlet.core.workflow import WorkflowGraph
from circlet.journal import ActionJournal
from circlet.pipelines import Workflows
from circlet.snapshots import build_snapshot, fetch

log = logging.getLogger("circlet.service")

CONFIG_PATH = ".circleci/config.yml"
DEFAULT_JOB = "build"
REFUSE_21 = "Triggering a single job is not supported for configurations that specify version: 2.1"
MAX_PARALLEL = 100  # containers a trigger's `parallel` may ask for
NO_SUCH_JOB = "Cannot find a job named `{job}` to run in the `jobs:` section of your configuration file."


class TriggerVerbs:
    """Creates builds (of one job or of a pipeline), retries and cancels them."""

    store: BuildStore
    source: SourceHost
    dispatcher: Dispatcher
    clock: Callable[[], datetime]
    journal: ActionJournal
    workflows: Workflows | None
    _lock: threading.RLock

    if TYPE_CHECKING:  # provided by Circlet and its other mixins

        def _touch(self, project_id: int) -> None: ...

        def _notify(self, build_id: int) -> None: ...

        def _dispatch(
            self, build: Build, *, project: Project | None = None, plan: JobPlan | None = None
        ) -> None: ...

        def get_build(self, project: Project, build_num: int) -> Build: ...

        def build_finished(
            self,
            build_id: int,
            outcome: Outcome,
            at: datetime,
            messages: tuple[Message, ...] = (),
            node: int | None = None,
        ) -> None: ...

    def trigger(
        self,
        project: Project,
        *,
        branch: str | None = None,
        tag: str | None = None,
        revision: str | None = None,
        build_parameters: dict[str, Any] | None = None,
        parallel: int | None = None,
        job: str | None = None,
        why: Why = Why.API,
        user_id: int | None = None,
        retry_of: int | None = None,
        ssh: bool = False,
        no_cache: bool = False,
        pin: str | None = None,
    ) -> Build:
        """Create a build of one job and queue it. Blocking: fetches the repository first
        (unless it already has the full commit SHA asked for: snapshots.py).

        `pin` (retries) builds exactly that commit, labelled with `branch`/`tag` as given,
        whatever they point at now.

        Raises InvalidRequest/UnknownRevision for a request that cannot be built (nothing is
        created then). A config that is missing or broken still creates a build, which ends
        at once with messages saying what is wrong.
        """
        if revision and tag:
            raise InvalidRequest("Cannot specify both revision and tag")
        if parallel is not None and parallel < 1:
            raise InvalidRequest("parallel must be a positive integer")
        if parallel is not None and parallel > MAX_PARALLEL:
            raise InvalidRequest(f"parallel must be at most {MAX_PARALLEL}")
        for name in build_parameters or {}:
            if not env_mod.is_env_name(name):
                raise InvalidRequest(
                    f"Invalid build parameter name {name!r}: names must match [A-Za-z_][A-Za-z0-9_]*"
                )
        if branch is None and tag is None:
            branch = project.default_branch
        if pin is not None:
            snap = build_snapshot(self.source, project, revision=pin, path=CONFIG_PATH)
        else:
            snap = build_snapshot(
                self.source, project, branch=branch, tag=tag, revision=revision, path=CONFIG_PATH
            )
        sha, commit, config_text = snap.sha, snap.commit, snap.file_text
        job_name = job or _param_job(build_parameters) or DEFAULT_JOB
        messages: list[Message] = []
        plan: JobPlan | None = None
        if config_text is None:  # circle.yml (1.0) or inference alone (config.md 1, 12)
            plan, more, config_text = self._plan_without_config(project, sha, job_name, branch, tag)
            messages.extend(more)
        else:
            try:
                config = config_mod.load_config(config_text, filename=CONFIG_PATH)
                if config.version == "2.1":
                    raise JobNotRunnable(REFUSE_21)
                if job_name not in config.jobs:
                    raise JobNotRunnable(NO_SUCH_JOB.format(job=job_name))
                plan = config_mod.plan_job(config, job_name)
            except ConfigError as exc:
                messages.extend(Message(type="error", message=str(p), reason="config") for p in exc.problems)
        if plan is not None and parallel is not None:  # the trigger's `parallel` wins (seed)
            plan = replace(plan, parallelism=parallel)
        now = self.clock()
        build = self.store.create_build(
            Build(
                project_id=project.id or 0,
                branch=branch,
                vcs_tag=tag,
                vcs_revision=sha,
                commit=commit,
                why=why,
                job_name=job_name,
                build_parameters=dict(build_parameters) if build_parameters is not None else None,
                parallel=plan.parallelism if plan else (parallel or 1),
                lifecycle=Lifecycle.NOT_RUNNING,
                usage_queued_at=now,
                retry_of=retry_of,
                user_id=user_id,
                messages=tuple(messages),
                config_text=config_text,
                executor=Executor(
                    kind=plan.executor_kind, image=plan.image, resource_class=plan.resource_class
                )
                if plan
                else None,
                ssh_enabled=ssh,
                no_dependency_cache=no_cache,
                extra={
                    **({"requested_job": job} if job else {}),
                    **({"parallel": parallel} if parallel is not None else {}),
                    **({"plan": plan.to_dict()} if plan is not None and plan.config_version == "1.0" else {}),
                },
            )
        )
        self._touch(build.project_id)
        log.info(
            "event=build_created project=%s build_num=%s sha=%s", project.slug, build.build_num, sha[:12]
        )
        if plan is None:
            # Nothing can run: finish it now so the user sees why.
            with self._lock:
                build = replace(
                    build,
                    lifecycle=Lifecycle.FINISHED,
                    outcome=Outcome.FAILED,
                    start_time=now,
                    stop_time=now,
                )
                self.store.save_build(build)
                self._touch(build.project_id)
            self._notify(build.id or 0)
            return build
        self._dispatch(build, project=project, plan=plan)
        return self.store.get_build_by_id(build.id or 0) or build

    def trigger_pipeline(
        self,
        project: Project,
        *,
        branch: str | None = None,
        revision: str | None = None,
        tag: str | None = None,
        user_id: int | None = None,
        parameters: dict[str, Any] | None = None,
        why: Why = Why.API,
        workflow: str | None = None,
    ) -> Build | None:
        """Build the project as a push would (the seed's "Trigger a new Build by Project"): a
        pipeline running every workflow of the config (pipelines.py, docs/workflows.md).

        `tag` excludes `branch` and `revision`; a revision alone is labelled with the default
        branch. `parameters` are 2.1 pipeline parameters (the compiler checks them). `why`
        Why.PUSH (= GITHUB) or BITBUCKET marks a push: a head commit asking `[ci skip]` then
        records one build that did not run (config.md 6). A 2.0 config without workflows runs
        its `build` job (config.md 5.2). Returns the first build made, None when no job matched
        the branch or tag. InvalidRequest/UnknownRevision when it cannot be built at all; a
        broken config makes a finished failed build saying what is wrong. `workflow` (with
        why=Why.SCHEDULE, scheduler.py) runs that scheduled workflow alone (config.md 5.6).
        """
        if tag and (branch or revision):
            raise InvalidRequest("Cannot specify tag together with branch or revision")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidRequest("parameters must be a JSON object")
        if tag is None and branch is None:
            branch = project.default_branch
        if self.workflows is not None:
            return self.workflows.trigger(
                project,
                branch=branch,
                tag=tag,
                revision=revision,
                parameters=parameters,
                why=why,
                user_id=user_id,
                workflow=workflow,
            )
        try:
            return self.trigger(project, branch=branch, tag=tag, revision=revision, user_id=user_id)
        except JobNotRunnable:
            pass  # a 2.1 config, or workflows without a `build` job
        return self._unrunnable(
            project,
            branch=branch,
            tag=tag,
            revision=revision,
            user_id=user_id,
            message="This config runs workflows (or is version 2.1), which this circlet has no pipeline "
            "store to run: its jobs can be triggered one at a time with build_parameters.CIRCLE_JOB.",
        )

    def workflow_graph(self, build: Build) -> WorkflowGraph | None:
        """The workflow a build ran in, with every job's type, requirements, state and build
        number (None for approvals and jobs never run); None for a build outside workflows."""
        return self.workflows.graph_of_build(build) if self.workflows is not None else None

    def _unrunnable(
        self,
        project: Project,
        *,
        branch: str | None,
        tag: str | None,
        revision: str | None,
        user_id: int | None,
        message: str,
    ) -> Build:
        snap = self.source.snapshot(
            project, branch=branch if not revision else None, tag=tag, revision=revision, path=CONFIG_PATH
        )
        now = self.clock()
        build = self.store.create_build(
            Build(
                project_id=project.id or 0,
                branch=branch,
                vcs_tag=tag,
                vcs_revision=snap.sha,
                commit=snap.commit,
                why=Why.API,
                lifecycle=Lifecycle.FINISHED,
                outcome=Outcome.FAILED,
                usage_queued_at=now,
                start_time=now,
                stop_time=now,
                user_id=user_id,
                config_text=snap.file_text,
                messages=(Message(type="error", message=message, reason="config"),),
            )
        )
        self._touch(build.project_id)
        self._notify(build.id or 0)
        return build

    def refs(self, project: Project) -> dict[str, str]:
        """Fetch the project's repository; its branches and tags (`refs/heads/x` -> commit).
        Blocking; InvalidRequest when it cannot be fetched. The branch poller calls this."""
        fetch(self.source, project)
        return self.source.refs(project)

    def _plan_without_config(
        self, project: Project, sha: str, job_name: str, branch: str | None, tag: str | None
    ) -> tuple[JobPlan | None, list[Message], str | None]:
        """A commit without .circleci/config.yml: its circle.yml (1.0) or inference alone
        (config.md 1, 12): (plan or None when circle.yml is broken, messages, circle.yml text).
        Inference looks in circle.yml's `general.build_dir` (config.md 12.2), else the top level."""
        if job_name != DEFAULT_JOB:
            raise JobNotRunnable(NO_SUCH_JOB.format(job=job_name))
        entries = self.source.list_root(project, sha)
        circle_yml = None
        if circleyml.PATH in entries:
            circle_yml = self.source.read_file(project, sha, circleyml.PATH)
        build_dir = circleyml.build_dir_of(circle_yml) if circle_yml is not None else ""
        if build_dir:
            entries = self.source.list_root(project, sha, build_dir)
        prefix = f"{build_dir}/" if build_dir else ""
        texts = {
            name: self.source.read_file(project, sha, prefix + name) for name in infer.files_to_read(entries)
        }
        try:
            if circle_yml is not None:
                result = circleyml.plan_circle_yml(
                    circle_yml,
                    entries,
                    texts,
                    reponame=project.reponame,
                    username=project.username,
                    branch=branch,
                    tag=tag,
                    default_branch=project.default_branch,
                )
            else:
                result = infer.infer_plan(entries, texts, reponame=project.reponame, job_name=job_name)
        except ConfigError as exc:
            errors = [Message(type="error", message=str(p), reason="config") for p in exc.problems]
            return None, errors, circle_yml
        notes = (*result.inferred.notes, *((result.message,) if result.message else ()))
        warnings = [Message(type="warning", message=n, reason="inference") for n in notes]
        return result.plan, warnings, circle_yml

    def add_ssh_user(self, project: Project, build_num: int, login: str) -> Build:
        """Let `login` SSH into the build's containers (recorded; the SSH server is another issue)."""
        with self._lock:
            build = self.get_build(project, build_num)
            if login not in build.ssh_users:
                build = replace(build, ssh_users=(*build.ssh_users, login))
                self.store.save_build(build)
                self._touch(build.project_id)
        return build

    def retry(
        self,
        project: Project,
        build_num: int,
        *,
        ssh: bool = False,
        no_cache: bool = False,
        user_id: int | None = None,
    ) -> Build:
        """A new build of the same revision, branch, tag, parameters and job (`retry_of` set).
        With ssh, the caller may SSH into it (`ssh_users`)."""
        old = self.get_build(project, build_num)
        if self.workflows is not None and old.extra.get("pipeline_id"):  # of a pipeline: pipelines.py
            why = Why.SSH if ssh else Why.RETRY
            new = self.workflows.retry_job(project, old, why=why, user_id=user_id, ssh=ssh, no_cache=no_cache)
            user = self.store.get_user(user_id) if ssh and user_id else None
            return self.add_ssh_user(project, new.build_num, user.login) if user else new
        new = self.trigger(
            project,
            branch=old.branch,
            tag=old.vcs_tag,
            pin=old.vcs_revision,
            build_parameters=old.build_parameters,
            parallel=old.extra.get("parallel"),
            job=old.extra.get("requested_job"),
            why=Why.SSH if ssh else Why.RETRY,
            user_id=user_id,
            retry_of=old.build_num,
            ssh=ssh,
            no_cache=no_cache,
        )
        user = self.store.get_user(user_id) if ssh and user_id else None
        return self.add_ssh_user(project, new.build_num, user.login) if user else new

    def cancel(self, project: Project, build_num: int, *, user_id: int | None = None) -> Build:
        """Cancel a build. Idempotent: a finished or not-run build is returned unchanged.

        A waiting build is canceled at once and never runs; a running one is marked canceled
        and its process groups are killed within a second (the runner then finishes it).
        """
        with self._lock:
            build = self.get_build(project, build_num)
            self.journal.flush(build.id)
            if build.finished:
                return build
            build = replace(build, outcome=Outcome.CANCELED, canceler_id=user_id)
            self.store.save_build(build)
            self._touch(build.project_id)
        self.dispatcher.cancel(build.id or 0)
        if build.lifecycle is Lifecycle.RUNNING and containers_of(build):
            # Containers (celery tasks) not started yet will never run: they end canceled now,
            # so the build ends with its running ones instead of waiting for free slots.
            for node in sorted(unstarted_containers(build)):
                self.build_finished(build.id or 0, Outcome.CANCELED, self.clock(), (), node=node)
        if self.workflows is not None:
            self.workflows.build_changed(build.id or 0)
        log.info("event=build_canceled project=%s build_num=%s", project.slug, build_num)
        return self.store.get_build_by_id(build.id or 0) or build


def _param_job(build_parameters: dict[str, Any] | None) -> str | None:
    value = (build_parameters or {}).get("CIRCLE_JOB")
    return value if isinstance(value, str) and value else None
