"""The build model: plain frozen values, no I/O.

Names follow docs/glossary.md. Every value is a frozen, keyword-only dataclass; change one
with ``dataclasses.replace``. Times are timezone-aware UTC ``datetime`` objects; the wire
format (ISO-8601 with milliseconds) is chosen in ``circlet.wire``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class VcsType(StrEnum):
    """Where a project's repository is said to live (CircleCI's vcs-type)."""

    GITHUB = "github"  # paths may say `github` or `gh`
    BITBUCKET = "bitbucket"  # paths may say `bitbucket` or `bb`

    @property
    def short(self) -> str:
        return "gh" if self is VcsType.GITHUB else "bb"

    @property
    def host(self) -> str:
        return "github.com" if self is VcsType.GITHUB else "bitbucket.org"

    @classmethod
    def parse(cls, text: str) -> VcsType | None:
        """Accept both spellings; None for anything else."""
        return _VCS_ALIASES.get(text.lower())


_VCS_ALIASES = {
    "github": VcsType.GITHUB,
    "gh": VcsType.GITHUB,
    "bitbucket": VcsType.BITBUCKET,
    "bb": VcsType.BITBUCKET,
}


class Lifecycle(StrEnum):
    """Where a build is in its life (seed: lifecycle)."""

    NOT_RUNNING = "not_running"  # created, waiting for a free slot
    QUEUED = "queued"  # has a slot, waiting for an executor to pick it up
    SCHEDULED = "scheduled"  # assigned (circlet does not use it)
    RUNNING = "running"  # steps are executing
    FINISHED = "finished"  # done; outcome is set
    NOT_RUN = "not_run"  # decided not to run; dont_build says why


class Outcome(StrEnum):
    """How a finished build ended (seed: outcome)."""

    SUCCESS = "success"  # every foreground step passed
    FAILED = "failed"  # a foreground step failed
    CANCELED = "canceled"  # a user canceled it
    TIMEDOUT = "timedout"  # a step went too long without output
    INFRASTRUCTURE_FAIL = "infrastructure_fail"  # circlet itself could not run it
    NO_TESTS = "no_tests"  # nothing to test was found


class ActionStatus(StrEnum):
    """State of one action (one step on one container)."""

    RUNNING = "running"  # the process is alive
    SUCCESS = "success"  # exited 0
    FAILED = "failed"  # exited non-zero
    TIMEDOUT = "timedout"  # killed by no_output_timeout
    CANCELED = "canceled"  # killed by a cancel
    INFRASTRUCTURE_FAIL = "infrastructure_fail"  # circlet could not run it


class Why(StrEnum):
    """Why a build exists (seed: why)."""

    API = "api"  # a trigger endpoint
    RETRY = "retry"  # a manual retry
    SSH = "ssh"  # a retry with SSH
    AUTO_RETRY = "auto-retry"  # circlet retried it after an infrastructure failure
    GITHUB = "github"  # a push to a GitHub project
    PUSH = "github"  # alias of GITHUB for push entry points; the build records its project's forge
    BITBUCKET = "bitbucket"  # a push to a Bitbucket project
    EDIT = "edit"  # a settings change
    FIRST_BUILD = "first-build"  # following a project
    TRIGGER = "trigger"  # the web page's button
    LOCAL = "local"  # `circlet build` on a developer's checkout
    SCHEDULE = "scheduled_pipeline"  # a scheduled workflow's run (docs/schedules.md)


class Scope(StrEnum):
    """Scopes a token may carry; ordered so that a larger one includes the smaller ones."""

    STATUS = "status"  # badges only
    VIEW_BUILDS = "view-builds"  # read builds, logs, tests, artifacts
    READ_SETTINGS = "read-settings"  # read project settings
    TRIGGER_BUILDS = "trigger-builds"  # trigger, retry, cancel
    WRITE_SETTINGS = "write-settings"  # change project settings
    ALL = "all"  # everything on a project


@dataclass(frozen=True, kw_only=True)
class Project:
    """A repository circlet builds."""

    id: int | None = None
    vcs_type: VcsType
    username: str
    reponame: str
    repo_url: str  # where git fetches from: a path or any URL git understands
    default_branch: str = "main"
    oss: bool = False
    created_at: datetime | None = None

    @property
    def slug(self) -> str:
        """`gh/acme/widget`: the short form used in build URLs."""
        return f"{self.vcs_type.short}/{self.username}/{self.reponame}"

    @property
    def vcs_url(self) -> str:
        return f"https://{self.vcs_type.host}/{self.username}/{self.reponame}"


@dataclass(frozen=True, kw_only=True)
class User:
    """Someone who holds tokens."""

    id: int | None = None
    login: str
    name: str | None = None
    email: str | None = None
    admin: bool = False
    created_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class Token:
    """An API token as stored: only its hash, never the secret."""

    id: int | None = None
    token_hash: str
    label: str = ""
    user_id: int | None = None  # set for personal tokens
    project_id: int | None = None  # set for project tokens
    scope: Scope = Scope.ALL
    created_at: datetime | None = None
    revoked: bool = False


@dataclass(frozen=True, kw_only=True)
class Commit:
    """What git says about one commit. Dates keep git's offset (ISO-8601 strings)."""

    sha: str
    subject: str
    body: str
    author_name: str
    author_email: str
    author_date: str
    committer_name: str
    committer_email: str
    committer_date: str


@dataclass(frozen=True, kw_only=True)
class Message:
    """A note on a build shown to the user (config errors, warnings, infrastructure notes)."""

    type: str  # "error" or "warning"
    message: str
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class Executor:
    """What the config asked to run the job on; circlet records it and runs on the host shell."""

    kind: str = "docker"  # docker, machine, macos, windows
    image: str | None = None
    resource_class: str = "medium"


@dataclass(frozen=True, kw_only=True)
class Action:
    """One step on one container: a process, its times and its log."""

    step: int  # the step's ordinal in the job (0 = Spin up Environment, then 101, 102, ...)
    index: int = 0  # container (node) index
    name: str
    type: str = "test"
    source: str | None = "config"
    bash_command: str | None = None
    status: ActionStatus = ActionStatus.RUNNING
    exit_code: int | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    background: bool = False
    parallel: bool = True
    has_output: bool = False
    truncated: bool = False
    messages: tuple[str, ...] = ()

    @property
    def run_time_millis(self) -> int | None:
        if self.start_time is None or self.end_time is None:
            return None
        return millis_between(self.start_time, self.end_time)


@dataclass(frozen=True, kw_only=True)
class Step:
    """A step of a job: its actions, one per container that ran it."""

    name: str
    actions: tuple[Action, ...]


@dataclass(frozen=True, kw_only=True)
class Build:
    """One run of one job of a project (CircleCI v1.1 "build")."""

    id: int | None = None
    project_id: int
    build_num: int = 0  # assigned by the store on creation
    branch: str | None = None
    vcs_tag: str | None = None
    vcs_revision: str | None = None
    commit: Commit | None = None
    why: Why = Why.API
    dont_build: str | None = None
    job_name: str | None = None  # the job this build runs (None in old rows = the default `build`)
    build_parameters: dict[str, Any] | None = None
    parallel: int = 1
    lifecycle: Lifecycle = Lifecycle.NOT_RUNNING
    outcome: Outcome | None = None
    usage_queued_at: datetime | None = None
    queued_at: datetime | None = None
    start_time: datetime | None = None
    stop_time: datetime | None = None
    retry_of: int | None = None
    user_id: int | None = None  # who triggered; None for project tokens and the system
    messages: tuple[Message, ...] = ()
    config_text: str | None = None  # the config as read at the built commit
    executor: Executor | None = None
    ssh_enabled: bool = False
    ssh_users: tuple[str, ...] = ()
    canceler_id: int | None = None
    canceled_by_system: bool = False
    no_dependency_cache: bool = False
    worker: str | None = None  # which executor/worker ran it
    extra: dict[str, Any] = field(default_factory=dict)  # room for later issues (workflows...)

    @property
    def build_time_millis(self) -> int | None:
        if self.start_time is None or self.stop_time is None:
            return None
        return millis_between(self.start_time, self.stop_time)

    @property
    def finished(self) -> bool:
        return self.lifecycle in (Lifecycle.FINISHED, Lifecycle.NOT_RUN) or self.outcome is not None


@dataclass(frozen=True, kw_only=True)
class BuildView:
    """A build with what its API and web representations need (gathered by the service)."""

    project: Project
    build: Build
    status: str
    actions: tuple[Action, ...] = ()
    previous: Build | None = None
    previous_status: str | None = None
    previous_successful: Build | None = None
    retries: tuple[int, ...] = ()
    user: User | None = None
    canceler: User | None = None


def millis_between(start: datetime, end: datetime) -> int:
    return max(0, round((end - start).total_seconds() * 1000))


def group_steps(actions: list[Action] | tuple[Action, ...]) -> list[Step]:
    """Group actions into steps ordered by step number, actions by container index."""
    by_step: dict[int, list[Action]] = {}
    for action in actions:
        by_step.setdefault(action.step, []).append(action)
    return [
        Step(name=acts[0].name, actions=tuple(sorted(acts, key=lambda a: a.index)))
        for _, acts in sorted(by_step.items())
    ]
