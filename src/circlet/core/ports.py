"""The narrow interfaces between the core/service and the adapters around them.

Each port has a real adapter named after its technology (store/sql.py, store/logs.py, vcs/git.py,
executors/local.py) and a fake in circlet/testing.py; contract tests run against both.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from circlet.core.model import (
    Action,
    Build,
    BuildView,
    Commit,
    Lifecycle,
    Message,
    Outcome,
    Project,
    Token,
    User,
)
from circlet.core.plan import JobPlan
from circlet.core.projects import CheckoutKey, Delivery, EnvVar, Role, SshKey, Webhook

# ---------------------------------------------------------------- storage


@dataclass(frozen=True, kw_only=True)
class BuildQuery:
    """Which builds a list asks for. Newest first (build_num descending)."""

    project_ids: tuple[int, ...] | None = None  # None = every project
    branch: str | None = None
    lifecycles: tuple[Lifecycle, ...] | None = None
    outcomes: tuple[Outcome, ...] | None = None
    limit: int = 30
    offset: int = 0


class BuildStore(Protocol):
    """Projects, builds, actions, users and tokens. Every method is one transaction; thread-safe.

    Methods that take a Build replace the stored row whole (the caller read it first).
    """

    # projects
    def add_project(self, project: Project) -> Project:
        """Store a new project and return it with its id; Conflict if the slug exists."""
        ...

    def get_project(self, vcs_type: str, username: str, reponame: str) -> Project | None:
        """Find a project by its slug parts, case-insensitively."""
        ...

    def get_project_by_id(self, project_id: int) -> Project | None: ...

    def list_projects(self) -> list[Project]: ...

    def save_project(self, project: Project) -> None:
        """Replace the stored project's default branch and oss flag (matched by id); NotFound
        for an unknown id. Its slug and repository never change."""
        ...

    # builds
    def create_build(self, build: Build) -> Build:
        """Store a new build, assigning the next build number of its project atomically.

        Numbers are unique, increasing and gapless per project, even under concurrent callers.
        """
        ...

    def get_build(self, project_id: int, build_num: int) -> Build | None: ...

    def get_build_by_id(self, build_id: int) -> Build | None: ...

    def save_build(self, build: Build) -> None:
        """Replace the stored build (matched by id)."""
        ...

    def list_builds(self, query: BuildQuery) -> list[Build]: ...

    def builds_in(self, lifecycles: tuple[Lifecycle, ...]) -> list[Build]:
        """Every build in one of these lifecycles, oldest first (restart recovery, dispatch)."""
        ...

    def previous_build(
        self,
        project_id: int,
        branch: str | None,
        job_name: str | None,
        before_num: int,
        *,
        finished_only: bool = False,
        outcome: Outcome | None = None,
    ) -> Build | None:
        """The newest build of the same branch and job with a smaller number.

        finished_only skips builds not finished and canceled or not-run builds; outcome, when set,
        keeps only builds that ended so.
        """
        ...

    def retries_of(self, project_id: int, build_num: int) -> list[Build]:
        """Builds whose retry_of is this build, oldest first."""
        ...

    def retries_of_many(self, project_id: int, build_nums: Collection[int]) -> dict[int, list[Build]]:
        """retries_of for several builds of one project in one query: build_num -> its retries,
        oldest first (builds without retries are left out)."""
        ...

    # actions
    def save_action(self, build_id: int, action: Action) -> None:
        """Insert or replace the action keyed by (build, step, index)."""
        ...

    def save_actions(self, build_id: int, actions: list[Action]) -> None:
        """save_action for several actions of one build, in one transaction."""
        ...

    def list_actions(self, build_id: int) -> list[Action]:
        """Actions ordered by step then index."""
        ...

    def add_test_results(
        self, build_id: int, node_index: int, tests: list[dict[str, Any]], exceptions: list[dict[str, Any]]
    ) -> None:
        """Append test cases (and report problems) a container found, in the API's shape."""
        ...

    def test_results(self, build_id: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """All containers' cases and problems, by container index then as added."""
        ...

    def get_action(self, build_id: int, step: int, index: int) -> Action | None: ...

    # users and tokens
    def add_user(self, user: User) -> User: ...

    def get_user(self, user_id: int) -> User | None: ...

    def get_user_by_login(self, login: str) -> User | None: ...

    def list_users(self) -> list[User]:
        """Every user, oldest first."""
        ...

    def add_token(self, token: Token) -> Token: ...

    def find_token(self, token_hash: str) -> Token | None:
        """The token with this hash if it exists and is not revoked."""
        ...

    def get_token(self, token_id: int) -> Token | None:
        """The token with this id if it exists and is not revoked (web sessions keep the id)."""
        ...

    def revoke_token(self, token_id: int) -> bool: ...

    def list_tokens(self) -> list[Token]: ...


class ProjectSettingsStore(Protocol):
    """Members, follows, environment variables, checkout and SSH keys, webhooks of projects.
    Every method is one transaction; thread-safe."""

    def set_member(self, project_id: int, user_id: int, role: Role) -> None:
        """Add or change a membership."""
        ...

    def remove_member(self, project_id: int, user_id: int) -> bool: ...

    def member_role(self, project_id: int, user_id: int) -> Role | None: ...

    def follow(self, project_id: int, user_id: int) -> bool:
        """True when the user did not follow the project before."""
        ...

    def unfollow(self, project_id: int, user_id: int) -> bool: ...

    def followed_projects(self, user_id: int) -> list[int]: ...

    def set_env_var(self, project_id: int, var: EnvVar) -> EnvVar:
        """Create or overwrite by name."""
        ...

    def get_env_var(self, project_id: int, name: str) -> EnvVar | None: ...

    def list_env_vars(self, project_id: int) -> list[EnvVar]:
        """Ordered by name."""
        ...

    def delete_env_var(self, project_id: int, name: str) -> bool: ...

    def add_checkout_key(self, key: CheckoutKey) -> CheckoutKey: ...

    def list_checkout_keys(self, project_id: int) -> list[CheckoutKey]: ...

    def delete_checkout_key(self, project_id: int, key_id: int) -> bool: ...

    def add_ssh_key(self, key: SshKey) -> SshKey: ...

    def list_ssh_keys(self, project_id: int) -> list[SshKey]: ...

    def delete_ssh_key(self, project_id: int, fingerprint: str, hostname: str) -> bool: ...

    def add_webhook(self, hook: Webhook) -> Webhook: ...

    def list_webhooks(self, project_id: int) -> list[Webhook]: ...

    def delete_webhook(self, project_id: int, hook_id: int) -> bool: ...


class DeliveryStore(Protocol):
    """Webhook deliveries: queued when a build finishes, worked off by the notifier."""

    def add_delivery(self, delivery: Delivery) -> Delivery: ...

    def save_delivery(self, delivery: Delivery) -> None: ...

    def due_deliveries(self, now: datetime, limit: int = 100) -> list[Delivery]:
        """Pending deliveries whose next attempt is due, oldest first."""
        ...

    def list_deliveries(
        self, *, build_id: int | None = None, project_id: int | None = None, limit: int = 100
    ) -> list[Delivery]:
        """Newest first; `project_id` keeps deliveries of that project's builds."""
        ...


class Notifier(Protocol):
    """Tells the outside world that builds finished (webhooks), in the background.

    The service calls `enqueue` when a build finishes; it records the deliveries and returns
    without touching the network. `start` gets a way to read a build as the API shows it.
    """

    def start(self, views: Callable[[int], BuildView | None]) -> None:
        """Begin sending, including deliveries a previous process left pending."""
        ...

    def enqueue(self, build: Build, urls: list[tuple[str, str]]) -> list[Delivery]:
        """Record one pending delivery per (url, source), each URL once per build; never blocks
        on a receiver. Idempotent: URLs the build already has a delivery for are skipped."""
        ...

    def list_deliveries(
        self, *, build_id: int | None = None, project_id: int | None = None, limit: int = 100
    ) -> list[Delivery]:
        """Newest first."""
        ...

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sending (what is still pending is sent after the next start). Idempotent."""
        ...


@dataclass(frozen=True, kw_only=True)
class LogChunk:
    """A piece of an action's output as it arrived."""

    type: str  # "out" or "err"
    time: datetime
    data: bytes
    offset: int  # byte offset of `data` in the raw log


class LogWriter(Protocol):
    """Appends one action's output. Not thread-safe: one writer per action."""

    def write(self, data: bytes, at: datetime, stream: str = "out") -> None: ...

    def close(self) -> None: ...


class LogStore(Protocol):
    """Action output, kept outside the database and streamed, never held whole in memory."""

    def writer(self, build_id: int, step: int, index: int) -> LogWriter:
        """Open (create or append to) the log of one action."""
        ...

    def size(self, build_id: int, step: int, index: int) -> int | None:
        """Raw byte size, or None when the action has no log."""
        ...

    def chunks(self, build_id: int, step: int, index: int, *, offset: int = 0) -> Iterator[LogChunk]:
        """The chunks from byte `offset` on, in order, lazily."""
        ...

    def read(
        self, build_id: int, step: int, index: int, *, offset: int = 0, length: int | None = None
    ) -> bytes:
        """Raw bytes of the log (b"" when there is none)."""
        ...

    def delete_build(self, build_id: int) -> None: ...


# ---------------------------------------------------------------- source


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """What a trigger needs from the repository at one moment: the commit and one file."""

    sha: str
    commit: Commit
    file_text: str | None  # the requested file at that commit, None when absent


class SourceHost(Protocol):
    """Where the code comes from. Blocking; safe to call from several threads."""

    def probe(self, repo_url: str) -> str | None:
        """Check that the repository can be read; return its default branch if it has one.

        Raises RepositoryError with git's words when it cannot be read.
        """
        ...

    def sync(self, project: Project) -> None:
        """Bring the project's mirror up to date with its repository (RepositoryError on failure)."""
        ...

    def resolve(
        self,
        project: Project,
        *,
        branch: str | None = None,
        tag: str | None = None,
        revision: str | None = None,
    ) -> str:
        """The full SHA to build; UnknownRevision naming what was not found."""
        ...

    def commit(self, project: Project, sha: str) -> Commit: ...

    def snapshot(
        self,
        project: Project,
        *,
        branch: str | None = None,
        tag: str | None = None,
        revision: str | None = None,
        path: str,
    ) -> Snapshot:
        """resolve + commit + read_file(path) in one go, consistent with each other."""
        ...

    def read_file(self, project: Project, sha: str, path: str) -> str | None:
        """A file's text at a commit, or None when the commit has no such file."""
        ...

    def checkout(
        self, project: Project, sha: str, dest: Path, *, branch: str | None = None, tag: str | None = None
    ) -> None:
        """Put a working copy of `sha` at `dest` (config.md 3.3). RepositoryError on failure."""
        ...

    def list_root(self, project: Project, sha: str, under: str = "") -> tuple[str, ...]:
        """The names at the root of `sha`'s tree (or in its directory `under`: none when that is
        not a directory), sorted; directories end with "/" (inference reads them, config.md
        12.2). UnknownRevision when the mirror has no such commit."""
        ...

    def refs(self, project: Project) -> dict[str, str]:
        """The mirror's branches and tags as of the last sync: full ref name
        (`refs/heads/main`, `refs/tags/v1`) -> the commit it points at (tags peeled)."""
        ...


class CheckoutSource(Protocol):
    """The part of a SourceHost a runner needs: put a revision in a directory."""

    def checkout(
        self, project: Project, sha: str, dest: Path, *, branch: str | None = None, tag: str | None = None
    ) -> None: ...


# ---------------------------------------------------------------- running


@dataclass(frozen=True, kw_only=True)
class RunRequest:
    """Everything a runner needs to run one build, as plain data (it crosses queues)."""

    build_id: int
    project: Project
    build_num: int
    revision: str
    branch: str | None
    tag: str | None
    plan: JobPlan
    environment: dict[str, str] = field(default_factory=dict)  # built-ins, project vars, parameters
    parallelism: int = 1
    # test results of the last successful build of the job (for `circleci tests split`), or None
    timings: list[dict[str, Any]] | None = None
    # the workflow this job runs in (persist_to_workspace/attach_workspace share files within it)
    workflow_id: str | None = None
    # the jobs of the same workflow this one requires, by build id (attach_workspace reads theirs)
    upstream_build_ids: tuple[int, ...] = ()
    # retried without cache (api-v1.1.md 8.2): restore_cache steps skip, save_cache still saves
    no_dependency_cache: bool = False


class RunReporter(Protocol):
    """How a runner tells what happens. Implemented by the service; a remote worker reaches it
    through the server. Calls for one build come from that build's runner threads."""

    def build_queued(self, build_id: int, at: datetime) -> None:
        """The build got a slot and waits for a runner."""
        ...

    def build_started(self, build_id: int, at: datetime, worker: str, node: int | None = None) -> bool:
        """The runner starts; False means the build was canceled meanwhile: do not run it.
        `node`: the runner runs only this container (the celery executor runs one task per
        container, core/workers.py start_container); None: all of them (the local executor)."""
        ...

    def action_started(self, build_id: int, action: Action) -> None: ...

    def log_writer(self, build_id: int, step: int, index: int) -> LogWriter: ...

    def action_finished(self, build_id: int, action: Action) -> None: ...

    def test_results(
        self, build_id: int, index: int, tests: list[dict[str, Any]], exceptions: list[dict[str, Any]]
    ) -> None:
        """A store_test_results step of container `index` found these (the API's shape)."""
        ...

    def build_finished(
        self,
        build_id: int,
        outcome: Outcome,
        at: datetime,
        messages: tuple[Message, ...] = (),
        node: int | None = None,
    ) -> None:
        """The runner is done. `node`: only that container is (the build finishes when its last
        container does, with the worst outcome); None: the whole build is."""
        ...


class Dispatcher(Protocol):
    """Runs builds somewhere. submit and cancel never block on a build."""

    def start(self, reporter: RunReporter) -> None: ...

    def submit(self, request: RunRequest) -> None:
        """Queue the build; it runs when a slot is free, in submission order."""
        ...

    def cancel(self, build_id: int) -> bool:
        """Stop the build if queued or running here (kill its process groups); True if it was."""
        ...

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking work; kill what runs."""
        ...
