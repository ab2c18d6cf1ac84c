"""The use cases of circlet, one method per verb. API, web page, CLI and runners go through here;
nothing else talks to the store.

`Circlet` is the one facade; its verbs live in mixins beside this module, each made for it
alone: triggering.py (trigger, retry, cancel), reporting.py (the RunReporter verbs runners
call), views.py (reading builds, logs and overviews), accounts.py (users, tokens, members) and
project_settings.py (env vars, keys, webhooks). This module holds what they share: the
constructor, starting and stopping (recovering builds a previous process left), handing
builds to the executor, projects and the generations caches key on, and the workers.

Concurrency: methods are synchronous and thread-safe. Changes to one build are serialized by
a lock per service (read-modify-write of a build row), so a cancel and a runner's report can
never overwrite each other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from circlet.accounts import AUTH_CACHE_SECONDS, AccountVerbs
from circlet.accounts import hash_token as hash_token
from circlet.core import config as config_mod
from circlet.core import env as env_mod
from circlet.core.blobs import BlobStore
from circlet.core.errors import ConfigError, InvalidRequest, NotFound
from circlet.core.model import (
    ActionStatus,
    Build,
    Lifecycle,
    Message,
    Outcome,
    Project,
    Token,
    User,
    VcsType,
)
from circlet.core.pipeline import PipelineStore
from circlet.core.plan import JobPlan
from circlet.core.ports import (
    BuildQuery,
    BuildStore,
    Dispatcher,
    LogStore,
    Notifier,
    ProjectSettingsStore,
    RunRequest,
    SourceHost,
)
from circlet.core.push import SECRET_VAR as PUSH_SECRET_VAR
from circlet.core.sessions import MemorySessionStore, SessionStore
from circlet.core.workers import HeartbeatReply, Worker, WorkerInfo, all_started
from circlet.journal import ActionJournal
from circlet.pipelines import Workflows
from circlet.project_settings import INVALID_SSH_KEY as INVALID_SSH_KEY
from circlet.project_settings import ProjectSettingsVerbs
from circlet.reporting import RunReporterVerbs
from circlet.triggering import NO_SUCH_JOB as NO_SUCH_JOB
from circlet.triggering import TriggerVerbs
from circlet.views import ViewVerbs

if TYPE_CHECKING:
    from circlet.fleet import Fleet

log = logging.getLogger("circlet.service")

CONFIG_PATH = ".circleci/config.yml"
DEFAULT_JOB = "build"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Circlet(TriggerVerbs, RunReporterVerbs, ViewVerbs, AccountVerbs, ProjectSettingsVerbs):
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
        on_finished: Sequence[Callable[[Build], None]] = (),
    ) -> None:
        """`on_finished`: told each build that finished through build_finished (metrics.py)."""
        self.store = store
        self.finished_observers = list(on_finished)
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

    # ------------------------------------------------------------ projects

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

    # ------------------------------------------------------------ handing builds to the executor

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

    # ------------------------------------------------------------ workers (celery executor)

    def worker_heartbeat(self, info: WorkerInfo) -> HeartbeatReply:
        """Record a worker's heartbeat; the reply lists the builds it must stop (fleet.py).
        InvalidRequest when this server has no fleet."""
        if self.fleet is None:
            raise InvalidRequest("this server runs no workers (CIRCLET_EXECUTOR is not celery)")
        return self.fleet.heartbeat(info)

    def list_workers(self) -> list[Worker]:
        """The workers this server knows, alive or not, by name."""
        return self.fleet.list_workers() if self.fleet is not None else []
