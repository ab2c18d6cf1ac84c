"""The use cases of circlet, one method per verb. API, web page, CLI and runners go through here;
nothing else talks to the store.

Concurrency: methods are synchronous and thread-safe. Changes to one build are serialized by
a lock per service (read-modify-write of a build row), so a cancel and a runner's report can
never overwrite each other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from circlet.accounts import AUTH_CACHE_SECONDS, AccountVerbs
from circlet.accounts import hash_token as hash_token
from circlet.core import circleyml, infer
from circlet.core import config as config_mod
from circlet.core import env as env_mod
from circlet.core.blobs import BlobStore
from circlet.core.errors import (
    ConfigError,
    InvalidRequest,
    JobNotRunnable,
    NotFound,
    RepositoryError,
)
from circlet.core.model import (
    Action,
    ActionStatus,
    Build,
    BuildView,
    Executor,
    Lifecycle,
    Message,
    Outcome,
    Project,
    Scope,
    Token,
    User,
    VcsType,
    Why,
)
from circlet.core.permissions import allowed_scopes
from circlet.core.pipeline import PipelineStore
from circlet.core.plan import JobPlan
from circlet.core.ports import (
    BuildQuery,
    BuildStore,
    Dispatcher,
    LogChunk,
    LogStore,
    LogWriter,
    Notifier,
    ProjectSettingsStore,
    RunRequest,
    SourceHost,
)
from circlet.core.projects import (
    BranchOverview,
    BuildBrief,
    Delivery,
    ProjectOverview,
)
from circlet.core.push import SECRET_VAR as PUSH_SECRET_VAR
from circlet.core.sessions import MemorySessionStore, SessionStore
from circlet.core.status import derive_status
from circlet.core.workers import (
    HeartbeatReply,
    Worker,
    WorkerInfo,
    all_started,
    containers_of,
    finish_container,
    start_container,
    unstarted_containers,
    without_waiting_note,
)
from circlet.core.workflow import WorkflowGraph
from circlet.journal import ActionJournal
from circlet.pipelines import Workflows
from circlet.project_settings import INVALID_SSH_KEY as INVALID_SSH_KEY
from circlet.project_settings import ProjectSettingsVerbs

if TYPE_CHECKING:
    from circlet.fleet import Fleet

log = logging.getLogger("circlet.service")

CONFIG_PATH = ".circleci/config.yml"
OVERVIEW_WINDOW = 500  # newest builds of a project whose branches /projects lists
DEFAULT_JOB = "build"
_ASK = object()  # (view: "not known yet, ask the store")
REFUSE_21 = "Triggering a single job is not supported for configurations that specify version: 2.1"
MAX_PARALLEL = 100  # containers a trigger's `parallel` may ask for
NO_SUCH_JOB = "Cannot find a job named `{job}` to run in the `jobs:` section of your configuration file."


def utcnow() -> datetime:
    return datetime.now(UTC)


class Circlet(AccountVerbs, ProjectSettingsVerbs):
    """The facade. Construct it through bootstrap.build_services()."""

    def __init__(
        self,
        *,
        store: BuildStore,
        logs: LogStore,
        source: SourceHost,
        dispatcher: Dispatcher,
        settings: ProjectSettingsStore,
        base_url: str,
        clock: Callable[[], datetime] = utcnow,
        notifier: Notifier | None = None,
        pipelines: PipelineStore | None = None,
        orbs_dir: Path | None = None,
        fleet: Fleet | None = None,
        blobs: BlobStore | None = None,
        sessions: SessionStore | None = None,
    ) -> None:
        self.store = store
        # web sign-ins (accounts.py); in memory unless given (bootstrap gives the SQL store)
        self.sessions: SessionStore = sessions if sessions is not None else MemorySessionStore()
        self.blobs = blobs  # artifacts, caches, workspaces (core/blobkeys.py); None: none kept
        self.logs = logs
        self.source = source
        self.dispatcher = dispatcher
        self.settings = settings
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        self.notifier = notifier  # None: no notification webhooks
        self._lock = threading.RLock()
        self._stopping = False
        self._users: dict[int, tuple[float, User | None]] = {}
        self._tokens: dict[str, tuple[float, Token | None]] = {}
        self._projects: dict[tuple[str, str, str], tuple[float, Project]] = {}
        self._visible: dict[int, tuple[float, tuple[Project, ...]]] = {}
        # Bumped by every write that can change how a project's builds look (see generation()).
        self._generations: dict[int, int] = {}
        self._all_generation = 0
        self._generation_lock = threading.Lock()
        self._project_of_build: dict[int, int] = {}
        # Test results of finished successful builds, read for timings: final once the build
        # finished, so each is read once (None: it has none). Bounded: cleared when it grows.
        self._final_tests: dict[int, list[dict[str, Any]] | None] = {}
        self.journal = ActionJournal(store)
        # pipelines and workflows (pipelines.py); None: configs with workflows cannot run
        self.workflows = Workflows(self, pipelines, orbs_dir=orbs_dir) if pipelines is not None else None
        self.fleet = fleet  # the workers of the celery executor (fleet.py); None: no workers
        if fleet is not None:
            fleet.bind(self)

    # ------------------------------------------------------------ lifecycle of the service

    def start(self) -> None:
        """Start running builds: recover what a previous process left, then dispatch."""
        self.dispatcher.start(self)
        self.recover()
        if self.workflows is not None:
            self.workflows.start()
        if self.notifier is not None:
            self.notifier.start(self.view_of)
        if self.fleet is not None:
            self.fleet.start()

    def stop(self) -> None:
        """Stop running builds (they end infrastructure_fail, saying why) and flush. Idempotent."""
        self._stopping = True
        if self.workflows is not None:
            self.workflows.stop()
        if self.fleet is not None:
            self.fleet.stop()
        self.dispatcher.stop()
        self.journal.close()
        if self.notifier is not None:
            self.notifier.stop()

    def recover(self) -> list[Build]:
        """Finish builds a stopped server left running; requeue the ones that never started.

        Running builds cannot be resumed (their processes died with the server), so they end
        `infrastructure_fail` with a message; waiting builds lose nothing and run now.
        """
        now = self.clock()
        ended: list[Build] = []
        for build in self.store.builds_in((Lifecycle.RUNNING, Lifecycle.SCHEDULED)):
            if self.fleet is not None and self.fleet.adopts(build):
                # It runs on a worker that outlived us; the fleet watches its heartbeats. Its
                # containers not started yet are published again (the broker may have lost
                # them; those that did start refuse the duplicates).
                if build.outcome is None and not all_started(build):
                    self._dispatch(build)
                continue
            with self._lock:
                for action in self.store.list_actions(build.id or 0):
                    if action.status is ActionStatus.RUNNING:
                        self.store.save_action(
                            build.id or 0,
                            replace(action, status=ActionStatus.INFRASTRUCTURE_FAIL, end_time=now),
                        )
                done = replace(
                    build,
                    lifecycle=Lifecycle.FINISHED,
                    outcome=build.outcome or Outcome.INFRASTRUCTURE_FAIL,
                    stop_time=now,
                    messages=(
                        *build.messages,
                        Message(
                            type="error",
                            message="circlet stopped while this build was running; "
                            "its processes were lost. Retry the build to run it again.",
                            reason="infrastructure",
                        ),
                    ),
                )
                self.store.save_build(done)
                self._touch(done.project_id)
                ended.append(done)
                log.warning("event=build_recovered build_id=%s outcome=%s", build.id, done.outcome)
        for done in ended:
            self._notify(done.id or 0)
        for build in self.store.builds_in((Lifecycle.NOT_RUNNING, Lifecycle.QUEUED)):
            if build.outcome is None:
                self._dispatch(build)
        if self.workflows is not None:
            self.workflows.recover()  # after the builds: jobs follow what became of them
        return ended

    # ------------------------------------------------------------ projects, users, tokens

    def add_project(
        self, *, vcs_type: str, username: str, reponame: str, repo_url: str, default_branch: str | None = None
    ) -> Project:
        vcs = VcsType.parse(vcs_type)
        if vcs is None:
            raise InvalidRequest(f"unknown vcs type {vcs_type!r}: use github (gh) or bitbucket (bb)")
        for part, value in (("username", username), ("project name", reponame)):
            if not value or "/" in value or value.startswith("."):
                raise InvalidRequest(f"invalid {part} {value!r}")
        head = self.source.probe(repo_url)
        branch = default_branch or head or "main"
        project = self.store.add_project(
            Project(
                vcs_type=vcs,
                username=username,
                reponame=reponame,
                repo_url=repo_url,
                default_branch=branch,
                created_at=self.clock(),
            )
        )
        log.info("event=project_added project=%s repo=%s", project.slug, repo_url)
        return project

    def get_project(self, vcs_type: str, username: str, reponame: str) -> Project:
        """A project by its slug parts (case-insensitive); found ones are kept AUTH_CACHE_SECONDS."""
        vcs = VcsType.parse(vcs_type)
        if vcs is None:
            raise NotFound("Project not found")
        key = (vcs.value, username.lower(), reponame.lower())
        now = time.monotonic()
        hit = self._projects.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        project = self.store.get_project(vcs.value, username, reponame)
        if project is None:
            raise NotFound("Project not found")
        if len(self._projects) > 10_000:
            self._projects.clear()
        self._projects[key] = (now + AUTH_CACHE_SECONDS, project)
        return project

    def forget_project(self, project: Project) -> None:
        """Drop a cached project after changing it."""
        self._projects.pop((project.vcs_type.value, project.username.lower(), project.reponame.lower()), None)

    def list_projects(self) -> list[Project]:
        return self.store.list_projects()

    def generation(self, project_id: int | None = None) -> int:
        """A number that changes whenever anything shown about the project's builds (or, with
        None, any project's) may have changed in this process: caches of rendered builds key on
        it. Writes made by other processes are not seen; in circlet every build write goes
        through this service (runners report to it)."""
        if project_id is None:
            return self._all_generation
        return self._generations.get(project_id, 0)

    def _touch(self, project_id: int) -> None:
        with self._generation_lock:  # two bumps must never collapse into one
            self._generations[project_id] = self._generations.get(project_id, 0) + 1
            self._all_generation += 1

    def _touch_build(self, build_id: int) -> None:
        project_id = self._project_of_build.get(build_id)
        if project_id is None:
            build = self.store.get_build_by_id(build_id)
            if build is None:
                return
            project_id = self._project_of_build[build_id] = build.project_id
        self._touch(project_id)

    # ------------------------------------------------------------ triggering

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
        """Create a build of one job and queue it. Blocking: fetches the repository first.

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
        try:
            self.source.sync(project)
        except RepositoryError as exc:
            raise InvalidRequest(f"Could not fetch the repository of {project.slug}: {exc.message}") from exc
        if pin is not None:
            snap = self.source.snapshot(project, revision=pin, path=CONFIG_PATH)
        else:
            snap = self.source.snapshot(
                project, branch=branch if not revision else None, tag=tag, revision=revision, path=CONFIG_PATH
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
        try:
            self.source.sync(project)
        except RepositoryError as exc:
            raise InvalidRequest(f"Could not fetch the repository of {project.slug}: {exc.message}") from exc
        return self.source.refs(project)

    def _plan_without_config(
        self, project: Project, sha: str, job_name: str, branch: str | None, tag: str | None
    ) -> tuple[JobPlan | None, list[Message], str | None]:
        """A commit without .circleci/config.yml: its circle.yml (1.0) or inference alone
        (config.md 1, 12): (plan or None when circle.yml is broken, messages, circle.yml text)."""
        if job_name != DEFAULT_JOB:
            raise JobNotRunnable(NO_SUCH_JOB.format(job=job_name))
        entries = self.source.list_root(project, sha)
        texts = {name: self.source.read_file(project, sha, name) for name in infer.files_to_read(entries)}
        circle_yml = None
        if circleyml.PATH in entries:
            circle_yml = self.source.read_file(project, sha, circleyml.PATH)
        try:
            if circle_yml is not None:
                result = circleyml.plan_circle_yml(
                    circle_yml,
                    entries,
                    texts,
                    reponame=project.reponame,
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

    def _dispatch(self, build: Build, *, project: Project | None = None, plan: JobPlan | None = None) -> None:
        project = project or self.store.get_project_by_id(build.project_id)
        if project is None:
            return
        if plan is None and "plan" in build.extra:  # a 1.0 plan, kept whole (circle.yml, inference)
            plan = JobPlan.from_dict(build.extra["plan"])
        elif plan is None:
            try:
                config = config_mod.load_config(build.config_text or "", filename=CONFIG_PATH)
                plan = config_mod.plan_job(config, build.job_name or DEFAULT_JOB)
                if build.extra.get("parallel"):
                    plan = replace(plan, parallelism=int(build.extra["parallel"]))
            except ConfigError as exc:
                self.build_finished(
                    build.id or 0,
                    Outcome.FAILED,
                    self.clock(),
                    tuple(Message(type="error", message=str(p), reason="config") for p in exc.problems),
                )
                return
        previous = self.store.previous_build(build.project_id, build.branch, build.job_name, build.build_num)
        user = self.store.get_user(build.user_id) if build.user_id else None
        builtins = env_mod.builtin_environment(
            project=project,
            build=build,
            job_name=plan.name,
            base_url=self.base_url,
            working_directory=plan.working_directory,
            previous_build_num=previous.build_num if previous else None,
            username=user.login if user else None,
        )
        environment = env_mod.job_environment(
            build_parameters=build.build_parameters,
            project_variables={
                v.name: v.value
                for v in self.settings.list_env_vars(project.id or 0)
                if v.name != PUSH_SECRET_VAR  # docs/push-triggers.md: never exported to builds
            },
            builtins=builtins,
        )
        workflow_id: str | None = None
        upstream: tuple[int, ...] = ()
        if self.workflows is not None and build.extra.get("workflows"):  # contexts, workflow ids
            found = self.workflows.jobs.run_context(build, environment, builtins)
            if isinstance(found, Message):
                self.build_finished(build.id or 0, Outcome.FAILED, self.clock(), (found,))
                return
            environment, workflow_id = found.environment, found.workflow_id
            upstream = found.upstream_build_ids
        timings = self._timings(build)
        self.dispatcher.submit(
            RunRequest(
                timings=timings,
                build_id=build.id or 0,
                project=project,
                build_num=build.build_num,
                revision=build.vcs_revision or "",
                branch=build.branch,
                tag=build.vcs_tag,
                plan=plan,
                environment=environment,
                parallelism=plan.parallelism,
                workflow_id=workflow_id,
                upstream_build_ids=upstream,
                no_dependency_cache=build.no_dependency_cache,
            )
        )

    def _timings(self, build: Build) -> list[dict[str, Any]] | None:
        """The test results `circleci tests split --split-by=timings` reads (config.md 8): those
        of the newest successful build of the same job on the same branch, else on any branch."""
        same_branch = self.store.previous_build(
            build.project_id,
            build.branch,
            build.job_name,
            build.build_num,
            finished_only=True,
            outcome=Outcome.SUCCESS,
        )
        candidates = [same_branch] if same_branch is not None else []
        candidates += [
            b
            for b in self.store.list_builds(
                BuildQuery(project_ids=(build.project_id,), outcomes=(Outcome.SUCCESS,), limit=20)
            )
            if (b.job_name or DEFAULT_JOB) == (build.job_name or DEFAULT_JOB)
            and b.build_num < build.build_num
        ]
        for candidate in candidates:
            build_id = candidate.id or 0
            if build_id in self._final_tests:
                tests: list[dict[str, Any]] | None = self._final_tests[build_id]
            else:
                tests = self.store.test_results(build_id)[0] or None
                if len(self._final_tests) >= 10_000:
                    self._final_tests.clear()
                self._final_tests[build_id] = tests
            if tests:
                return tests
        return None

    # ------------------------------------------------------------ reading

    def get_build(self, project: Project, build_num: int) -> Build:
        build = self.store.get_build(project.id or 0, build_num)
        if build is None:
            raise NotFound("Build not found")
        return build

    def build_by_id(self, build_id: int) -> Build | None:
        """The build with this id as stored now (fresh: no cache); None when it is gone."""
        return self.store.get_build_by_id(build_id)

    def status_of(self, build: Build, retries: list[Build] | None = None) -> str:
        """The v1.1 status; for a build that finished through build_finished, the one decided
        then (only `retried` can still change it: an infrastructure failure retried by circlet).
        `retries`: the build's retries when known (else the store is asked when it matters)."""
        decided = build.extra.get("status")
        if isinstance(decided, str) and build.outcome is not Outcome.INFRASTRUCTURE_FAIL:
            return decided
        previous_outcome = None
        if build.outcome is Outcome.SUCCESS:
            prev = self.store.previous_build(
                build.project_id, build.branch, build.job_name, build.build_num, finished_only=True
            )
            previous_outcome = prev.outcome if prev else None
        auto_retried = False
        if build.outcome is Outcome.INFRASTRUCTURE_FAIL:
            if retries is None:
                retries = self.store.retries_of(build.project_id, build.build_num)
            auto_retried = any(r.why is Why.AUTO_RETRY for r in retries)
        return derive_status(
            build.lifecycle, build.outcome, previous_outcome=previous_outcome, auto_retried=auto_retried
        )

    def view(
        self,
        project: Project,
        build: Build,
        *,
        details: bool = True,
        shallow: bool = False,
        previous: object = _ASK,  # Build | None, or _ASK
        previous_ok: object = _ASK,
        retries: list[Build] | None = None,
    ) -> BuildView:
        """Gather what the API shows for a build: details add the actions; a shallow view (lists
        with shallow=true) skips the related builds it does not show. `previous`/`previous_ok`:
        the builds already known (list_views), else the store is asked; `retries` likewise."""
        status = self.status_of(build, retries)
        user = self.user(build.user_id)
        if shallow:
            return BuildView(project=project, build=build, status=status, user=user)
        if previous is _ASK:
            previous = self.store.previous_build(
                build.project_id, build.branch, build.job_name, build.build_num
            )
        if previous_ok is _ASK:
            previous_ok = self.store.previous_build(
                build.project_id,
                build.branch,
                build.job_name,
                build.build_num,
                finished_only=True,
                outcome=Outcome.SUCCESS,
            )
        assert previous is None or isinstance(previous, Build)
        assert previous_ok is None or isinstance(previous_ok, Build)
        if retries is None:
            retries = self.store.retries_of(build.project_id, build.build_num)
        return BuildView(
            project=project,
            build=build,
            status=status,
            actions=self.actions(build) if details else (),
            previous=previous,
            previous_status=self.status_of(previous) if previous else None,
            previous_successful=previous_ok,
            retries=tuple(r.build_num for r in retries),
            user=user,
            canceler=self.user(build.canceler_id),
        )

    def list_builds(self, query: BuildQuery) -> list[Build]:
        return self.store.list_builds(query)

    def list_views(
        self, projects: Mapping[int, Project], builds: list[Build], *, whole: bool
    ) -> list[BuildView]:
        """Summaries' views of a page of builds (`view(details=False)` each), with fewer queries.

        `whole`: the page holds every build of its projects between its first and last (a list
        without lifecycle/outcome filter, newest first). Then a build's previous build, and its
        previous successful one, of the same branch and job are found on the page when they are
        there (the store is asked only for the oldest of each branch and job)."""
        nums: dict[int, list[int]] = {}
        for build in builds:
            nums.setdefault(build.project_id, []).append(build.build_num)
        retries = {
            (project_id, num): found
            for project_id, numbers in nums.items()
            for num, found in self.store.retries_of_many(project_id, numbers).items()
        }

        def retries_of(build: Build) -> list[Build]:
            return retries.get((build.project_id, build.build_num), [])

        if not whole:
            return [
                self.view(projects[b.project_id], b, details=False, retries=retries_of(b)) for b in builds
            ]
        found_previous: dict[int, Build | None] = {}
        found_ok: dict[int, Build] = {}
        seen: dict[tuple[int, str | None, str], Build] = {}  # newest-first: the last one of a line
        seen_ok: dict[tuple[int, str | None, str], list[Build]] = {}  # waiting for a success
        for build in sorted(builds, key=lambda b: (b.project_id, -b.build_num)):
            line = (build.project_id, build.branch, build.job_name or DEFAULT_JOB)
            newer = seen.get(line)
            if newer is not None:
                found_previous[newer.id or 0] = build
            seen[line] = build
            waiting = seen_ok.setdefault(line, [])
            if build.lifecycle is Lifecycle.FINISHED and build.outcome is Outcome.SUCCESS:
                for later in waiting:
                    found_ok[later.id or 0] = build
                waiting.clear()
            waiting.append(build)
        return [
            self.view(
                projects[b.project_id],
                b,
                details=False,
                previous=found_previous.get(b.id or 0, _ASK),
                previous_ok=found_ok.get(b.id or 0, _ASK),
                retries=retries_of(b),
            )
            for b in builds
        ]

    def actions(self, build: Build) -> tuple[Action, ...]:
        """The build's actions, including records not yet written (ordered by step, index)."""
        stored = {(a.step, a.index): a for a in self.store.list_actions(build.id or 0)}
        for action in self.journal.pending(build.id or 0):
            stored[(action.step, action.index)] = action
        return tuple(action for _, action in sorted(stored.items()))

    def action(self, build: Build, step: int, index: int) -> Action:
        pending = [a for a in self.journal.pending(build.id or 0) if (a.step, a.index) == (step, index)]
        action = pending[0] if pending else self.store.get_action(build.id or 0, step, index)
        if action is None:
            raise NotFound(f"Build {build.build_num} has no step {step} on container {index}")
        return action

    def log_chunks(self, build: Build, step: int, index: int, *, offset: int = 0) -> Iterator[LogChunk]:
        return self.logs.chunks(build.id or 0, step, index, offset=offset)

    def overview(
        self, project: Project, user: User | None, *, token_scope: Scope = Scope.ALL, branches: bool = True
    ) -> ProjectOverview:
        """A project as /projects and /settings show it to `user` (None: a project token of
        `token_scope`; the caller checked access). Branches come from the project's newest
        OVERVIEW_WINDOW builds."""
        pid = project.id or 0
        if user is None:
            following, scopes = False, allowed_scopes(None, token_scope=token_scope)
        else:
            following = pid in self.settings.followed_projects(user.id or 0)
            scopes = allowed_scopes(self.role_of(project, user), user_admin=user.admin, oss=project.oss)
        return ProjectOverview(
            project=project,
            following=following,
            scopes=tuple(scopes),
            has_usable_key=bool(self.settings.list_checkout_keys(pid)),
            ssh_keys=tuple(self.public_ssh_keys(project)),
            branches=tuple(self._branches(project)) if branches else (),
        )

    def _branches(self, project: Project) -> list[BranchOverview]:
        pid = project.id or 0
        window = self.store.list_builds(BuildQuery(project_ids=(pid,), limit=OVERVIEW_WINDOW))
        by_branch: dict[str, list[Build]] = {}
        for build in window:  # newest first
            if build.branch is not None:
                by_branch.setdefault(build.branch, []).append(build)
        overviews = []
        for branch, builds in sorted(by_branch.items()):
            running = self.store.list_builds(
                BuildQuery(project_ids=(pid,), branch=branch, lifecycles=(Lifecycle.RUNNING,), limit=100)
            )
            success = self.store.list_builds(
                BuildQuery(project_ids=(pid,), branch=branch, outcomes=(Outcome.SUCCESS,), limit=1)
            )
            non_success = self.store.list_builds(
                BuildQuery(
                    project_ids=(pid,),
                    branch=branch,
                    lifecycles=(Lifecycle.FINISHED,),
                    outcomes=tuple(o for o in Outcome if o is not Outcome.SUCCESS),
                    limit=1,
                )
            )
            logins = []
            for build in builds:
                user = self.user(build.user_id)
                if user is not None and user.login not in logins:
                    logins.append(user.login)
            overviews.append(
                BranchOverview(
                    name=branch,
                    recent=tuple(self._brief(b) for b in builds[:5]),
                    running=tuple(self._brief(b) for b in running),
                    last_success=self._brief(success[0]) if success else None,
                    last_non_success=self._brief(non_success[0]) if non_success else None,
                    pusher_logins=tuple(logins),
                    latest_workflows=self.workflows.latest(builds) if self.workflows is not None else (),
                )
            )
        return overviews

    def _brief(self, build: Build) -> BuildBrief:
        return BuildBrief(build=build, status=self.status_of(build))

    # ------------------------------------------------------------ RunReporter (runners call these)

    def build_queued(self, build_id: int, at: datetime) -> None:
        with self._lock:
            build = self.store.get_build_by_id(build_id)
            if build is None or build.outcome is not None or build.lifecycle is not Lifecycle.NOT_RUNNING:
                return
            self.store.save_build(replace(build, lifecycle=Lifecycle.QUEUED, queued_at=at))
            self._touch(build.project_id)

    def build_started(self, build_id: int, at: datetime, worker: str, node: int | None = None) -> bool:
        if node is not None:
            return self._container_started(build_id, at, worker, node)
        with self._lock:
            build = self.store.get_build_by_id(build_id)
            if build is None or build.outcome is not None or build.finished:
                return False
            if build.lifecycle is Lifecycle.RUNNING:
                return False  # a redelivered message: the build already runs elsewhere, never twice
            self.store.save_build(
                replace(
                    build,
                    lifecycle=Lifecycle.RUNNING,
                    queued_at=build.queued_at or at,
                    start_time=at,
                    worker=worker,
                    messages=without_waiting_note(build.messages),
                )
            )
            self._touch(build.project_id)
            self._project_of_build[build_id] = build.project_id
        log.info("event=build_started build_id=%s worker=%s", build_id, worker)
        return True

    def action_started(self, build_id: int, action: Action) -> None:
        self.journal.put(build_id, action)
        self._touch_build(build_id)

    def log_writer(self, build_id: int, step: int, index: int) -> LogWriter:
        return self.logs.writer(build_id, step, index)

    def action_finished(self, build_id: int, action: Action) -> None:
        self.journal.put(build_id, action)
        self._touch_build(build_id)

    def test_results(
        self, build_id: int, index: int, tests: list[dict[str, Any]], exceptions: list[dict[str, Any]]
    ) -> None:
        self.store.add_test_results(build_id, index, tests, exceptions)
        self._touch_build(build_id)

    def tests_of(self, build: Build) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The build's test cases and unreadable reports, as GET .../:build_num/tests shows them."""
        return self.store.test_results(build.id or 0)

    def build_finished(
        self,
        build_id: int,
        outcome: Outcome,
        at: datetime,
        messages: tuple[Message, ...] = (),
        node: int | None = None,
    ) -> None:
        if node is not None:
            last = self._container_finished(build_id, node, outcome, messages)
            if last is None:
                return  # other containers still run (or it was a resend)
            outcome, messages = last, ()
        self.journal.flush(build_id)
        with self._lock:
            build = self.store.get_build_by_id(build_id)
            if build is None or build.lifecycle in (Lifecycle.FINISHED, Lifecycle.NOT_RUN):
                return
            if build.outcome is Outcome.CANCELED and build.start_time is None:
                return  # canceled before it started: it keeps its lifecycle (api-v1.1.md 6.4)
            final = Outcome.CANCELED if build.outcome is Outcome.CANCELED else outcome
            if self._stopping and final is Outcome.CANCELED and build.outcome is not Outcome.CANCELED:
                # Not a user's cancel: the server is shutting down under the build.
                final = Outcome.INFRASTRUCTURE_FAIL
                messages = (
                    *messages,
                    Message(
                        type="error",
                        reason="infrastructure",
                        message="circlet was stopped while this build was running; "
                        "retry the build to run it again.",
                    ),
                )
            done = replace(
                build,
                lifecycle=Lifecycle.FINISHED,
                outcome=final,
                stop_time=at,
                start_time=build.start_time or (at if build.lifecycle is Lifecycle.RUNNING else None),
                messages=(*build.messages, *messages),
            )
            # The status is decided now, against the builds finished so far, and kept: reading
            # it later costs no query, and an older build finishing later does not change it.
            self.store.save_build(replace(done, extra={**done.extra, "status": self.status_of(done)}))
            self._touch(done.project_id)
        log.info("event=build_finished build_id=%s outcome=%s", build_id, final)
        self._notify(build_id)
        if self.workflows is not None:
            self.workflows.build_changed(build_id)  # start what waited for it

    # ------------------------------------------------------------ workers (celery executor)

    def _container_started(self, build_id: int, at: datetime, worker: str, node: int) -> bool:
        """build_started of one container (core/workers.py start_container). A container refused
        because a user canceled the running build counts as finished canceled, so the build
        still ends when its last container does."""
        with self._lock:
            build = self.store.get_build_by_id(build_id)
            started = start_container(build, node, worker, at) if build is not None else None
            if started is not None:
                self.store.save_build(started)
                self._touch(started.project_id)
                self._project_of_build[build_id] = started.project_id
        if started is None:
            canceled = build is not None and build.outcome is Outcome.CANCELED
            if (
                canceled
                and build is not None
                and build.lifecycle is Lifecycle.RUNNING
                and (node not in containers_of(build))
            ):
                self.build_finished(build_id, Outcome.CANCELED, at, (), node=node)
            return False
        log.info("event=container_started build_id=%s node=%s worker=%s", build_id, node, worker)
        return True

    def _container_finished(
        self, build_id: int, node: int, outcome: Outcome, messages: tuple[Message, ...]
    ) -> Outcome | None:
        """Record one container's end; the build's outcome when it was the last one."""
        with self._lock:
            build = self.store.get_build_by_id(build_id)
            if build is None:
                return None
            saved, final = finish_container(build, node, outcome, messages)
            if saved is not None:
                self.store.save_build(saved)
                self._touch(saved.project_id)
        log.info("event=container_finished build_id=%s node=%s outcome=%s", build_id, node, outcome)
        return final

    def add_build_message(self, build_id: int, message: Message) -> None:
        """Append a message to a build (once: a message it already has is not repeated)."""
        with self._lock:
            build = self.store.get_build_by_id(build_id)
            if build is None or message in build.messages:
                return
            self.store.save_build(replace(build, messages=(*build.messages, message)))
            self._touch(build.project_id)

    def remove_build_message(self, build_id: int, message: Message) -> None:
        """Drop a message from a build (a waiting build's note that no worker serves its class)."""
        with self._lock:
            build = self.store.get_build_by_id(build_id)
            if build is None or message not in build.messages:
                return
            kept = tuple(m for m in build.messages if m != message)
            self.store.save_build(replace(build, messages=kept))
            self._touch(build.project_id)

    def worker_heartbeat(self, info: WorkerInfo) -> HeartbeatReply:
        """Record a worker's heartbeat; the reply lists the builds it must stop (fleet.py).
        InvalidRequest when this server has no fleet."""
        if self.fleet is None:
            raise InvalidRequest("this server runs no workers (CIRCLET_EXECUTOR is not celery)")
        return self.fleet.heartbeat(info)

    def list_workers(self) -> list[Worker]:
        """The workers this server knows, alive or not, by name."""
        return self.fleet.list_workers() if self.fleet is not None else []

    # ------------------------------------------------------------ notification webhooks

    def view_of(self, build_id: int) -> BuildView | None:
        """The full view of a build by id, as GET P/:build_num shows it; None when it is gone.
        The notifier reads payloads through this."""
        build = self.store.get_build_by_id(build_id)
        project = self.store.get_project_by_id(build.project_id) if build is not None else None
        if build is None or project is None:
            return None
        return self.view(project, build)

    def list_deliveries(
        self, *, project: Project | None = None, build_num: int | None = None, limit: int = 100
    ) -> list[tuple[Delivery, Build | None, Project | None]]:
        """Webhook deliveries, newest first, each with its build and project (for admins).
        build_num needs the project; NotFound for an unknown build."""
        if self.notifier is None:
            return []
        if build_num is not None:
            if project is None:
                raise InvalidRequest("build_num needs the project")
            found = self.notifier.list_deliveries(build_id=self.get_build(project, build_num).id, limit=limit)
        else:
            found = self.notifier.list_deliveries(project_id=project.id if project else None, limit=limit)
        builds: dict[int, Build | None] = {}
        projects: dict[int, Project | None] = {}
        rows: list[tuple[Delivery, Build | None, Project | None]] = []
        for delivery in found:
            if delivery.build_id not in builds:
                builds[delivery.build_id] = self.store.get_build_by_id(delivery.build_id)
            build = builds[delivery.build_id]
            if build is not None and build.project_id not in projects:
                projects[build.project_id] = self.store.get_project_by_id(build.project_id)
            rows.append((delivery, build, projects.get(build.project_id) if build is not None else None))
        return rows

    def _notify(self, build_id: int) -> None:
        """Queue the webhooks of a build that just finished: the config's `notify.webhooks`, then
        the project's settings. Only records them (the notifier sends in the background); a
        problem here is logged, never raised into the build."""
        if self.notifier is None:
            return
        try:
            build = self.store.get_build_by_id(build_id)
            if build is None or build.lifecycle is not Lifecycle.FINISHED:
                return
            urls: list[tuple[str, str]] = []
            if build.config_text and "notify" in build.config_text:
                try:
                    config = config_mod.load_config(build.config_text, filename=CONFIG_PATH)
                    urls += [(url, "config") for url in config_mod.notify_webhooks(config)]
                except ConfigError:
                    pass  # the build's messages already say what is wrong with its config
            urls += [(hook.url, "project") for hook in self.settings.list_webhooks(build.project_id)]
            if urls:
                self.notifier.enqueue(build, urls)
        except Exception:
            log.exception("event=notify_error build_id=%s", build_id)


def _param_job(build_parameters: dict[str, Any] | None) -> str | None:
    value = (build_parameters or {}).get("CIRCLE_JOB")
    return value if isinstance(value, str) and value else None
