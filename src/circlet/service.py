"""The use cases of circlet, one method per verb. API, web page, CLI and runners go through here;
nothing else talks to the store.

Concurrency: methods are synchronous and thread-safe. Changes to one build are serialized by
a lock per service (read-modify-write of a build row), so a cancel and a runner's report can
never overwrite each other.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from circlet.core import config as config_mod
from circlet.core import env as env_mod
from circlet.core.errors import (
    ConfigError,
    InvalidRequest,
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
from circlet.core.plan import JobPlan
from circlet.core.ports import (
    BuildQuery,
    BuildStore,
    Dispatcher,
    LogChunk,
    LogStore,
    LogWriter,
    RunRequest,
    SourceHost,
)
from circlet.core.projects import Role
from circlet.core.status import derive_status
from circlet.journal import ActionJournal

log = logging.getLogger("circlet.service")

CONFIG_PATH = ".circleci/config.yml"
DEFAULT_JOB = "build"
REFUSE_21 = "Triggering a single job is not supported for configurations that specify version: 2.1"
NO_SUCH_JOB = "Cannot find a job named `{job}` to run in the `jobs:` section of your configuration file."


def utcnow() -> datetime:
    return datetime.now(UTC)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Circlet:
    """The facade. Construct it through bootstrap.build_services()."""

    def __init__(
        self,
        *,
        store: BuildStore,
        logs: LogStore,
        source: SourceHost,
        dispatcher: Dispatcher,
        base_url: str,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.logs = logs
        self.source = source
        self.dispatcher = dispatcher
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        self._lock = threading.RLock()
        self._stopping = False
        self.journal = ActionJournal(store)

    # ------------------------------------------------------------ lifecycle of the service

    def start(self) -> None:
        """Start running builds: recover what a previous process left, then dispatch."""
        self.dispatcher.start(self)
        self.recover()

    def stop(self) -> None:
        """Stop running builds (they end infrastructure_fail, saying why) and flush. Idempotent."""
        self._stopping = True
        self.dispatcher.stop()
        self.journal.close()

    def recover(self) -> list[Build]:
        """Finish builds a stopped server left running; requeue the ones that never started.

        Running builds cannot be resumed (their processes died with the server), so they end
        `infrastructure_fail` with a message; waiting builds lose nothing and run now.
        """
        now = self.clock()
        ended: list[Build] = []
        for build in self.store.builds_in((Lifecycle.RUNNING, Lifecycle.SCHEDULED)):
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
                ended.append(done)
                log.warning("event=build_recovered build_id=%s outcome=%s", build.id, done.outcome)
        for build in self.store.builds_in((Lifecycle.NOT_RUNNING, Lifecycle.QUEUED)):
            if build.outcome is None:
                self._dispatch(build)
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
        vcs = VcsType.parse(vcs_type)
        project = self.store.get_project(vcs.value, username, reponame) if vcs else None
        if project is None:
            raise NotFound("Project not found")
        return project

    def list_projects(self) -> list[Project]:
        return self.store.list_projects()

    def ensure_user(self, login: str, *, name: str | None = None, admin: bool = False) -> User:
        user = self.store.get_user_by_login(login)
        if user is None:
            user = self.store.add_user(User(login=login, name=name, admin=admin, created_at=self.clock()))
        return user

    def create_token(
        self,
        *,
        user: User | None = None,
        project: Project | None = None,
        scope: Scope = Scope.ALL,
        label: str = "",
    ) -> tuple[Token, str]:
        """Make a token; returns the stored record and the secret (shown once, stored hashed)."""
        if (user is None) == (project is None):
            raise InvalidRequest("a token belongs to a user or to a project")
        secret = "ccl_" + secrets.token_urlsafe(30)
        token = self.store.add_token(
            Token(
                token_hash=hash_token(secret),
                label=label,
                user_id=user.id if user else None,
                project_id=project.id if project else None,
                scope=scope,
                created_at=self.clock(),
            )
        )
        return token, secret

    def standing(self, token: Token | None, project: Project) -> tuple[bool, Role | None]:
        """Whether the token's user is an administrator, and their role on the project."""
        if token is None or token.user_id is None:
            return False, None
        user = self.store.get_user(token.user_id)
        return (user is not None and user.admin), None

    def authenticate(self, secret: str | None) -> Token | None:
        if not secret:
            return None
        return self.store.find_token(hash_token(secret))

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
        if config_text is None:
            messages.append(
                Message(
                    type="error",
                    message=f"No {CONFIG_PATH} found at {sha[:12]}: add one to tell circlet what to run.",
                    reason="config",
                )
            )
        else:
            try:
                config = config_mod.load_config(config_text, filename=CONFIG_PATH)
                if config.version == "2.1":
                    raise InvalidRequest(REFUSE_21)
                if job_name not in config.jobs:
                    raise InvalidRequest(NO_SUCH_JOB.format(job=job_name))
                plan = config_mod.plan_job(config, job_name)
            except ConfigError as exc:
                messages.extend(Message(type="error", message=str(p), reason="config") for p in exc.problems)
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
                extra={"requested_job": job} if job else {},
            )
        )
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
    ) -> Build | None:
        """Build the project as a push would (the seed's "Trigger a new Build by Project").

        `tag` excludes `branch` and `revision`; a revision alone is labelled with the default
        branch. A config without workflows runs its `build` job (config.md 5.2). Workflows are
        run by the pipelines issue; until then such a config gets a finished build that says so.
        """
        if tag and (branch or revision):
            raise InvalidRequest("Cannot specify tag together with branch or revision")
        if tag is None and branch is None:
            branch = project.default_branch
        try:
            return self.trigger(project, branch=branch, tag=tag, revision=revision, user_id=user_id)
        except InvalidRequest as exc:
            if exc.message != REFUSE_21 and not exc.message.startswith("Cannot find a job named"):
                raise
        return self._unrunnable(
            project,
            branch=branch,
            tag=tag,
            revision=revision,
            user_id=user_id,
            message="This config runs workflows (or is version 2.1), which circlet cannot run yet: "
            "its jobs can be triggered one at a time with build_parameters.CIRCLE_JOB on a 2.0 config.",
        )

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
        return build

    def add_ssh_user(self, project: Project, build_num: int, login: str) -> Build:
        """Let `login` SSH into the build's containers (recorded; the SSH server is another issue)."""
        with self._lock:
            build = self.get_build(project, build_num)
            if login not in build.ssh_users:
                build = replace(build, ssh_users=(*build.ssh_users, login))
                self.store.save_build(build)
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
        new = self.trigger(
            project,
            branch=old.branch,
            tag=old.vcs_tag,
            pin=old.vcs_revision,
            build_parameters=old.build_parameters,
            parallel=old.parallel,
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
        self.dispatcher.cancel(build.id or 0)
        log.info("event=build_canceled project=%s build_num=%s", project.slug, build_num)
        return self.store.get_build_by_id(build.id or 0) or build

    def _dispatch(self, build: Build, *, project: Project | None = None, plan: JobPlan | None = None) -> None:
        project = project or self.store.get_project_by_id(build.project_id)
        if project is None:
            return
        if plan is None:
            try:
                config = config_mod.load_config(build.config_text or "", filename=CONFIG_PATH)
                plan = config_mod.plan_job(config, build.job_name or DEFAULT_JOB)
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
            project_variables={},
            builtins=builtins,
        )
        self.dispatcher.submit(
            RunRequest(
                build_id=build.id or 0,
                project=project,
                build_num=build.build_num,
                revision=build.vcs_revision or "",
                branch=build.branch,
                tag=build.vcs_tag,
                plan=plan,
                environment=environment,
                parallelism=plan.parallelism,
            )
        )

    # ------------------------------------------------------------ reading

    def get_build(self, project: Project, build_num: int) -> Build:
        build = self.store.get_build(project.id or 0, build_num)
        if build is None:
            raise NotFound("Build not found")
        return build

    def status_of(self, build: Build) -> str:
        previous_outcome = None
        if build.outcome is Outcome.SUCCESS:
            prev = self.store.previous_build(
                build.project_id, build.branch, build.job_name, build.build_num, finished_only=True
            )
            previous_outcome = prev.outcome if prev else None
        auto_retried = False
        if build.outcome is Outcome.INFRASTRUCTURE_FAIL:
            auto_retried = any(
                r.why is Why.AUTO_RETRY for r in self.store.retries_of(build.project_id, build.build_num)
            )
        return derive_status(
            build.lifecycle, build.outcome, previous_outcome=previous_outcome, auto_retried=auto_retried
        )

    def view(
        self, project: Project, build: Build, *, details: bool = True, shallow: bool = False
    ) -> BuildView:
        """Gather what the API shows for a build: details add the actions; a shallow view (lists
        with shallow=true) skips the related builds it does not show."""
        status = self.status_of(build)
        user = self.store.get_user(build.user_id) if build.user_id else None
        if shallow:
            return BuildView(project=project, build=build, status=status, user=user)
        previous = self.store.previous_build(build.project_id, build.branch, build.job_name, build.build_num)
        previous_ok = self.store.previous_build(
            build.project_id,
            build.branch,
            build.job_name,
            build.build_num,
            finished_only=True,
            outcome=Outcome.SUCCESS,
        )
        retries = tuple(r.build_num for r in self.store.retries_of(build.project_id, build.build_num))
        return BuildView(
            project=project,
            build=build,
            status=status,
            actions=self.actions(build) if details else (),
            previous=previous,
            previous_status=self.status_of(previous) if previous else None,
            previous_successful=previous_ok,
            retries=retries,
            user=user,
            canceler=self.store.get_user(build.canceler_id) if build.canceler_id else None,
        )

    def list_builds(self, query: BuildQuery) -> list[Build]:
        return self.store.list_builds(query)

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

    def log_bytes(
        self, build: Build, step: int, index: int, *, offset: int = 0, length: int | None = None
    ) -> bytes:
        return self.logs.read(build.id or 0, step, index, offset=offset, length=length)

    def wait_finished(self, build_id: int, timeout: float) -> Build | None:
        """Block until the build is finished (tests, the CLI); None if it does not exist."""
        deadline = time.monotonic() + timeout
        while True:
            build = self.store.get_build_by_id(build_id)
            if build is None or (build.finished and build.lifecycle is not Lifecycle.RUNNING):
                return build
            if time.monotonic() > deadline:
                return build
            time.sleep(0.01)

    # ------------------------------------------------------------ RunReporter (runners call these)

    def build_queued(self, build_id: int, at: datetime) -> None:
        with self._lock:
            build = self.store.get_build_by_id(build_id)
            if build is None or build.outcome is not None or build.lifecycle is not Lifecycle.NOT_RUNNING:
                return
            self.store.save_build(replace(build, lifecycle=Lifecycle.QUEUED, queued_at=at))

    def build_started(self, build_id: int, at: datetime, worker: str) -> bool:
        with self._lock:
            build = self.store.get_build_by_id(build_id)
            if build is None or build.outcome is not None or build.finished:
                return False
            self.store.save_build(
                replace(
                    build,
                    lifecycle=Lifecycle.RUNNING,
                    queued_at=build.queued_at or at,
                    start_time=at,
                    worker=worker,
                )
            )
        log.info("event=build_started build_id=%s worker=%s", build_id, worker)
        return True

    def action_started(self, build_id: int, action: Action) -> None:
        self.journal.put(build_id, action)

    def log_writer(self, build_id: int, step: int, index: int) -> LogWriter:
        return self.logs.writer(build_id, step, index)

    def action_finished(self, build_id: int, action: Action) -> None:
        self.journal.put(build_id, action)

    def build_finished(
        self, build_id: int, outcome: Outcome, at: datetime, messages: tuple[Message, ...] = ()
    ) -> None:
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
            self.store.save_build(
                replace(
                    build,
                    lifecycle=Lifecycle.FINISHED,
                    outcome=final,
                    stop_time=at,
                    start_time=build.start_time or (at if build.lifecycle is Lifecycle.RUNNING else None),
                    messages=(*build.messages, *messages),
                )
            )
        log.info("event=build_finished build_id=%s outcome=%s", build_id, final)


def _param_job(build_parameters: dict[str, Any] | None) -> str | None:
    value = (build_parameters or {}).get("CIRCLE_JOB")
    return value if isinstance(value, str) and value else None
