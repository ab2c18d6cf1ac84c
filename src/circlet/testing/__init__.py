"""Fakes for every port, for tests (in circlet and in code built on it).

Each fake passes the same contract tests as the real adapter (tests/contract/), so a test that
uses a fake can trust it behaves like the real thing. Assert on the fake's state, not on calls.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from circlet.core.errors import Conflict, InvalidRequest, NotFound, RepositoryError, UnknownRevision
from circlet.core.model import (
    Action,
    ActionStatus,
    Build,
    Commit,
    Lifecycle,
    Message,
    Outcome,
    Project,
    Token,
    User,
    VcsType,
)
from circlet.core.ports import BuildQuery, BuildStore, LogChunk, RunReporter, RunRequest, Snapshot
from circlet.core.projects import CheckoutKey, Delivery, DeliveryState, EnvVar, Role, SshKey, Webhook

# ================================================================ storage fakes
# InMemoryBuildStore (BuildStore) and InMemoryLogStore (LogStore): dicts behind a lock, with the
# semantics of store/sql.py and store/logs.py (contract tests: tests/contract/test_*_store.py).


def _slug_key(vcs_type: VcsType, username: str, reponame: str) -> str:
    return f"{vcs_type.value}/{username}/{reponame}".lower()


def _same_job(a: str | None, b: str | None) -> bool:
    return (a or "build") == (b or "build")


class InMemoryBuildStore:
    """BuildStore in dicts; thread-safe. Builds are deep-copied in and out, as a database would.

    Same extras as SqlBuildStore: NotFound for unknown projects/builds on create_build,
    save_build and save_action; Conflict for duplicate logins and token hashes; `created_at`
    filled with the current time when missing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._projects: dict[int, Project] = {}
        self._project_keys: dict[str, int] = {}
        self._next_num: dict[int, int] = {}
        self._builds: dict[int, Build] = {}
        self._build_keys: dict[tuple[int, int], int] = {}
        self._actions: dict[int, dict[tuple[int, int], Action]] = {}
        self._tests: dict[tuple[int, int], tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
        self._users: dict[int, User] = {}
        self._tokens: dict[int, Token] = {}
        self._ids: dict[str, int] = {}

    def _new_id(self, kind: str) -> int:
        self._ids[kind] = self._ids.get(kind, 0) + 1
        return self._ids[kind]

    # projects

    def add_project(self, project: Project) -> Project:
        key = _slug_key(project.vcs_type, project.username, project.reponame)
        with self._lock:
            if key in self._project_keys:
                raise Conflict(f"project {project.slug} already exists")
            project = replace(project, id=self._new_id("project"), created_at=project.created_at or _now())
            self._projects[project.id or 0] = project
            self._project_keys[key] = project.id or 0
            self._next_num[project.id or 0] = 1
            return project

    def get_project(self, vcs_type: str, username: str, reponame: str) -> Project | None:
        vcs = VcsType.parse(vcs_type)
        if vcs is None:
            return None
        with self._lock:
            project_id = self._project_keys.get(_slug_key(vcs, username, reponame))
            return self._projects.get(project_id) if project_id is not None else None

    def get_project_by_id(self, project_id: int) -> Project | None:
        with self._lock:
            return self._projects.get(project_id)

    def list_projects(self) -> list[Project]:
        with self._lock:
            return [self._projects[k] for k in sorted(self._projects)]

    def save_project(self, project: Project) -> None:
        """Replace the default branch and oss flag; NotFound for an unknown id."""
        if project.id is None:
            raise ValueError("save_project needs a stored project (id is None)")
        with self._lock:
            stored = self._projects.get(project.id)
            if stored is None:
                raise NotFound(f"no project with id {project.id}")
            self._projects[project.id] = replace(
                stored, default_branch=project.default_branch, oss=project.oss
            )

    # builds

    def create_build(self, build: Build) -> Build:
        with self._lock:
            if build.project_id not in self._projects:
                raise NotFound(f"no project with id {build.project_id}")
            build_num = self._next_num[build.project_id]
            self._next_num[build.project_id] = build_num + 1
            build = replace(copy.deepcopy(build), id=self._new_id("build"), build_num=build_num)
            self._builds[build.id or 0] = build
            self._build_keys[(build.project_id, build_num)] = build.id or 0
            return copy.deepcopy(build)

    def get_build(self, project_id: int, build_num: int) -> Build | None:
        with self._lock:
            build_id = self._build_keys.get((project_id, build_num))
            return copy.deepcopy(self._builds[build_id]) if build_id is not None else None

    def get_build_by_id(self, build_id: int) -> Build | None:
        with self._lock:
            build = self._builds.get(build_id)
            return copy.deepcopy(build) if build is not None else None

    def save_build(self, build: Build) -> None:
        """Replace every field but id, project_id and build_num; NotFound for an unknown id."""
        if build.id is None:
            raise ValueError("save_build needs a stored build (id is None)")
        with self._lock:
            stored = self._builds.get(build.id)
            if stored is None:
                raise NotFound(f"no build with id {build.id}")
            self._builds[build.id] = replace(
                copy.deepcopy(build), project_id=stored.project_id, build_num=stored.build_num
            )

    def _copies(self, keep: list[Build]) -> list[Build]:
        return [copy.deepcopy(b) for b in keep]

    def list_builds(self, query: BuildQuery) -> list[Build]:
        with self._lock:
            found = [
                b
                for b in self._builds.values()
                if (query.project_ids is None or b.project_id in query.project_ids)
                and (query.branch is None or b.branch == query.branch)
                and (query.lifecycles is None or b.lifecycle in query.lifecycles)
                and (query.outcomes is None or b.outcome in query.outcomes)
            ]
            if query.project_ids is not None and len(query.project_ids) == 1:
                found.sort(key=lambda b: b.build_num, reverse=True)
            else:
                found.sort(key=lambda b: b.id or 0, reverse=True)
            offset, limit = max(query.offset, 0), max(query.limit, 0)
            return self._copies(found[offset : offset + limit])

    def builds_in(self, lifecycles: tuple[Lifecycle, ...]) -> list[Build]:
        with self._lock:
            return self._copies(
                [self._builds[k] for k in sorted(self._builds) if self._builds[k].lifecycle in lifecycles]
            )

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
        """Jobs `None` and `build` are the same job (None means the default job, `build`)."""
        with self._lock:
            candidates = [
                b
                for b in self._builds.values()
                if b.project_id == project_id
                and b.build_num < before_num
                and b.branch == branch
                and _same_job(b.job_name, job_name)
                and (
                    not finished_only
                    or (b.lifecycle is Lifecycle.FINISHED and b.outcome is not Outcome.CANCELED)
                )
                and (outcome is None or b.outcome == outcome)
            ]
            if not candidates:
                return None
            return copy.deepcopy(max(candidates, key=lambda b: b.build_num))

    def retries_of(self, project_id: int, build_num: int) -> list[Build]:
        with self._lock:
            found = [
                b for b in self._builds.values() if b.project_id == project_id and b.retry_of == build_num
            ]
            return self._copies(sorted(found, key=lambda b: b.build_num))

    # actions

    def save_action(self, build_id: int, action: Action) -> None:
        with self._lock:
            if build_id not in self._builds:
                raise NotFound(f"no build with id {build_id}")
            self._actions.setdefault(build_id, {})[(action.step, action.index)] = action

    def save_actions(self, build_id: int, actions: list[Action]) -> None:
        with self._lock:
            if build_id not in self._builds:
                raise NotFound(f"no build with id {build_id}")
            mine = self._actions.setdefault(build_id, {})
            for action in actions:
                mine[(action.step, action.index)] = action

    def add_test_results(
        self, build_id: int, node_index: int, tests: list[dict[str, Any]], exceptions: list[dict[str, Any]]
    ) -> None:
        with self._lock:
            if build_id not in self._builds:
                raise NotFound(f"no build with id {build_id}")
            kept = self._tests.setdefault((build_id, node_index), ([], []))
            kept[0].extend(copy.deepcopy(tests))
            kept[1].extend(copy.deepcopy(exceptions))

    def test_results(self, build_id: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with self._lock:
            found = sorted((k[1], v) for k, v in self._tests.items() if k[0] == build_id)
            return (
                [copy.deepcopy(t) for _, v in found for t in v[0]],
                [copy.deepcopy(e) for _, v in found for e in v[1]],
            )

    def list_actions(self, build_id: int) -> list[Action]:
        with self._lock:
            by_key = self._actions.get(build_id, {})
            return [by_key[k] for k in sorted(by_key)]

    def get_action(self, build_id: int, step: int, index: int) -> Action | None:
        with self._lock:
            return self._actions.get(build_id, {}).get((step, index))

    # users and tokens

    def add_user(self, user: User) -> User:
        with self._lock:
            if any(u.login == user.login for u in self._users.values()):
                raise Conflict(f"user {user.login} already exists")
            user = replace(user, id=self._new_id("user"), created_at=user.created_at or _now())
            self._users[user.id or 0] = user
            return user

    def get_user(self, user_id: int) -> User | None:
        with self._lock:
            return self._users.get(user_id)

    def get_user_by_login(self, login: str) -> User | None:
        with self._lock:
            return next((u for u in self._users.values() if u.login == login), None)

    def list_users(self) -> list[User]:
        with self._lock:
            return [self._users[k] for k in sorted(self._users)]

    def add_token(self, token: Token) -> Token:
        with self._lock:
            if any(t.token_hash == token.token_hash for t in self._tokens.values()):
                raise Conflict("a token with this hash already exists")
            if (token.user_id is not None and token.user_id not in self._users) or (
                token.project_id is not None and token.project_id not in self._projects
            ):
                raise NotFound("the token's user or project does not exist")
            token = replace(token, id=self._new_id("token"), created_at=token.created_at or _now())
            self._tokens[token.id or 0] = token
            return token

    def find_token(self, token_hash: str) -> Token | None:
        with self._lock:
            return next(
                (t for t in self._tokens.values() if t.token_hash == token_hash and not t.revoked), None
            )

    def revoke_token(self, token_id: int) -> bool:
        """True when the token exists (revoking twice is fine), False otherwise."""
        with self._lock:
            token = self._tokens.get(token_id)
            if token is None:
                return False
            self._tokens[token_id] = replace(token, revoked=True)
            return True

    def list_tokens(self) -> list[Token]:
        with self._lock:
            return [self._tokens[k] for k in sorted(self._tokens)]


def _now() -> datetime:
    return datetime.now(UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLI = timedelta(milliseconds=1)
_MAX_CHUNK = 1 << 20  # as store/logs.py: longer writes are read back as several chunks


@dataclass
class _Log:
    data: bytearray = field(default_factory=bytearray)
    writes: list[tuple[int, datetime, str]] = field(default_factory=list)  # (end, time, stream)


class InMemoryLogWriter:
    """LogWriter for InMemoryLogStore. Times are kept to the millisecond, as on disk."""

    def __init__(
        self, logs: dict[tuple[int, int, int], _Log], key: tuple[int, int, int], lock: threading.Lock
    ) -> None:
        self._logs = logs
        self._key = key
        self._lock = lock
        self._closed = False

    def write(self, data: bytes, at: datetime, stream: str = "out") -> None:
        if self._closed:
            raise ValueError("write to a closed log writer")
        if stream not in ("out", "err"):
            raise ValueError(f"unknown stream {stream!r} (expected 'out' or 'err')")
        if not data:
            return
        time = _EPOCH + ((at - _EPOCH) // _MILLI) * _MILLI
        with self._lock:
            log = self._logs.setdefault(self._key, _Log())  # created on the first byte, as on disk
            log.data += data
            log.writes.append((len(log.data), time, stream))

    def close(self) -> None:
        self._closed = True


class InMemoryLogStore:
    """LogStore in memory; thread-safe. Beyond the protocol: `text()` decodes a whole log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logs: dict[tuple[int, int, int], _Log] = {}

    def writer(self, build_id: int, step: int, index: int) -> InMemoryLogWriter:
        return InMemoryLogWriter(self._logs, (build_id, step, index), self._lock)

    def size(self, build_id: int, step: int, index: int) -> int | None:
        with self._lock:
            log = self._logs.get((build_id, step, index))
            return len(log.data) if log is not None else None

    def chunks(self, build_id: int, step: int, index: int, *, offset: int = 0) -> Iterator[LogChunk]:
        with self._lock:
            log = self._logs.get((build_id, step, index))
            if log is None:
                return
            writes = list(log.writes)  # the writes so far; later ones wait for the next call
        start = 0
        for end, time, stream in writes:
            begin = max(start, offset)
            while begin < end:
                piece_end = min(end, start + ((begin - start) // _MAX_CHUNK + 1) * _MAX_CHUNK)
                with self._lock:
                    piece = bytes(log.data[begin:piece_end])
                yield LogChunk(type=stream, time=time, data=piece, offset=begin)
                begin += len(piece)
            start = end

    def read(
        self, build_id: int, step: int, index: int, *, offset: int = 0, length: int | None = None
    ) -> bytes:
        with self._lock:
            log = self._logs.get((build_id, step, index))
            if log is None or (length is not None and length <= 0):
                return b""
            offset = max(offset, 0)
            return bytes(log.data[offset : None if length is None else offset + length])

    def delete_build(self, build_id: int) -> None:
        with self._lock:
            for key in [k for k in self._logs if k[0] == build_id]:
                del self._logs[key]

    def text(self, build_id: int, step: int, index: int) -> str:
        """The whole log decoded as UTF-8 (with replacement characters)."""
        return self.read(build_id, step, index).decode("utf-8", "replace")


# ================================================================ end of storage fakes


# ================================================================ source fakes
# FakeSourceHost (SourceHost, CheckoutSource): repositories a test builds in memory, read with the
# semantics of vcs/git.py (contract tests: tests/contract/test_source_host.py).

# The same checks as vcs/git.py (the fake may not import an adapter).
_HEX = re.compile(r"[0-9a-fA-F]{4,40}")
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock(/|$)")
_IDENT = re.compile(r"([^<>]*?)\s*<([^<>]*)>")
_FAKE_DATES = datetime(2024, 1, 1, tzinfo=UTC)  # commit n is dated n minutes later unless told
_TRACKED = "circlet-fake-tracked.json"  # in dest/.git: the files the last checkout wrote


@dataclass(frozen=True, kw_only=True)
class _FakeCommit:
    commit: Commit
    parent: str | None
    files: dict[str, str]


@dataclass
class _Refs:
    """Branches and tags of an origin or of a project's mirror; a mirror also knows the commits it
    fetched (an origin's commits are every commit made in it)."""

    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: set[str] = field(default_factory=set)


@dataclass
class _FakeRepo:
    default_branch: str | None
    refs: _Refs = field(default_factory=_Refs)
    unreachable: str | None = None  # the error sync and probe give while set


class FakeSourceHost:
    """SourceHost and CheckoutSource over repositories built in memory; thread-safe.

    Reads behave as GitSourceHost's (the same contract tests run on both): each project has a
    mirror (named like git's: by project id, else by slug) that `sync` brings up to date and that
    every read looks at, so commits made after the last sync are not seen; a read without a
    mirror makes it first. `resolve`/`snapshot` prefer revision > tag > branch > the project's
    default branch, accept abbreviated and upper-case revisions, and raise the same
    UnknownRevision/InvalidRequest messages. `checkout` writes the commit's files into `dest`
    with a small `.git` directory (HEAD as git writes it), so a later checkout into it replaces
    the files it wrote and keeps the others, as a fetch into a working copy does.

    A test builds repositories with `add_repo`, `add_commit`, `tag`, `set_branch` and
    `delete_branch`, breaks one with `make_unreachable`, and reads `sync_count(project)`. SHAs are
    fake 40-hex digests of the commit's content and of how many commits the host made before it:
    two hosts built by the same calls have the same SHAs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._repos: dict[str, _FakeRepo] = {}
        self._objects: dict[str, _FakeCommit] = {}
        self._mirrors: dict[str, _Refs] = {}
        self._syncs: dict[str, int] = {}

    # ------------------------------------------------------------ building repositories

    def add_repo(self, repo_url: str, *, default_branch: str | None = "main") -> None:
        """An empty repository whose HEAD names `default_branch` (what `probe` returns)."""
        with self._lock:
            if repo_url in self._repos:
                raise ValueError(f"repository {repo_url} already exists")
            self._repos[repo_url] = _FakeRepo(default_branch=default_branch)

    def add_commit(
        self,
        repo_url: str,
        *,
        branch: str = "main",
        files: dict[str, str | None] | None = None,
        message: str = "A commit",
        author: str = "Ada Author <ada@example.com>",
        author_date: datetime | None = None,
        committer: str | None = None,
        committer_date: datetime | None = None,
        parent: str | None = None,
    ) -> str:
        """Commit on `branch` and return the new SHA; the repository is created if needed.

        The commit has its parent's files changed by `files` (a None value deletes the path).
        The parent is `parent` when given, else the branch's head, else (a new branch) the
        default branch's head, as `git checkout -b` from it would. `author`/`committer` are
        "Name <email>"; dates must be aware (their offsets are kept, seconds only). The message
        is cleaned as `git commit -m` does (trailing spaces, blank lines).
        """
        _check_new_ref(branch, "branch")
        authored = _ident(author)
        committed = _ident(committer) if committer is not None else authored
        text = _clean_message(message)
        with self._lock:
            repo = self._repos.setdefault(repo_url, _FakeRepo(default_branch="main"))
            if parent is None:
                parent = repo.refs.branches.get(branch)
                if parent is None and repo.default_branch is not None:
                    parent = repo.refs.branches.get(repo.default_branch)
            elif parent not in repo.refs.commits:
                raise ValueError(f"no commit {parent} in {repo_url}")
            tree = dict(self._objects[parent].files) if parent is not None else {}
            for path, content in (files or {}).items():
                _check_path(path)
                if content is None:
                    tree.pop(path, None)
                else:
                    tree[path] = content
            _check_tree(tree)
            count = len(self._objects)
            a_date = _git_date(author_date, count)
            c_date = _git_date(committer_date, count) if committer_date is not None else a_date
            digest = hashlib.sha1(
                json.dumps(
                    [repo_url, count, parent, sorted(tree.items()), text, authored, committed, a_date, c_date]
                ).encode()
            ).hexdigest()
            subject, _, body = text.partition("\n")
            commit = Commit(
                sha=digest,
                subject=subject.strip(),
                body=body.strip(),
                author_name=authored[0],
                author_email=authored[1],
                author_date=a_date,
                committer_name=committed[0],
                committer_email=committed[1],
                committer_date=c_date,
            )
            self._objects[digest] = _FakeCommit(commit=commit, parent=parent, files=tree)
            repo.refs.commits.add(digest)
            repo.refs.branches[branch] = digest
            return digest

    def tag(self, repo_url: str, name: str, sha: str) -> None:
        """Create or move the tag `name` to the commit `sha` (annotated or not: both peel to it)."""
        _check_new_ref(name, "tag")
        with self._lock:
            self._origin_commit(repo_url, sha)
            self._repos[repo_url].refs.tags[name] = sha

    def set_branch(self, repo_url: str, name: str, sha: str) -> None:
        """Create or move the branch `name` to the commit `sha`."""
        _check_new_ref(name, "branch")
        with self._lock:
            self._origin_commit(repo_url, sha)
            self._repos[repo_url].refs.branches[name] = sha

    def delete_branch(self, repo_url: str, name: str) -> None:
        with self._lock:
            self._repo(repo_url).refs.branches.pop(name, None)

    def make_unreachable(self, repo_url: str, message: str | None = None) -> None:
        """Make probe and sync fail with RepositoryError(message) until make_reachable."""
        with self._lock:
            self._repo(repo_url).unreachable = (
                message or f"fatal: unable to access '{repo_url}': Could not resolve host"
            )

    def make_reachable(self, repo_url: str) -> None:
        with self._lock:
            self._repo(repo_url).unreachable = None

    # ------------------------------------------------------------ state for assertions

    def sync_count(self, project: Project) -> int:
        """How many times `sync` (or a read that had to make the mirror) updated this project's mirror."""
        with self._lock:
            return self._syncs.get(_mirror_name(project), 0)

    def files(self, sha: str) -> dict[str, str]:
        """Every file of a commit made by add_commit (path -> text)."""
        with self._lock:
            return dict(self._objects[sha].files)

    # ------------------------------------------------------------ SourceHost

    def probe(self, repo_url: str) -> str | None:
        _check_url(repo_url)
        with self._lock:
            return self._reachable(repo_url).default_branch

    def sync(self, project: Project) -> None:
        _check_url(project.repo_url)
        with self._lock:
            self._sync(project)

    def resolve(
        self,
        project: Project,
        *,
        branch: str | None = None,
        tag: str | None = None,
        revision: str | None = None,
    ) -> str:
        kind, name, missing = _fake_spec(project, branch=branch, tag=tag, revision=revision)
        with self._lock:
            sha = _lookup(self._mirror(project), kind, name)
        if sha is None:
            raise UnknownRevision(missing)
        return sha

    def commit(self, project: Project, sha: str) -> Commit:
        _check_fake_sha(sha)
        with self._lock:
            full = _lookup(self._mirror(project), "revision", sha)
            if full is None:
                raise UnknownRevision(f'Revision "{sha}" not found in the repository')
            return self._objects[full].commit

    def snapshot(
        self,
        project: Project,
        *,
        branch: str | None = None,
        tag: str | None = None,
        revision: str | None = None,
        path: str,
    ) -> Snapshot:
        kind, name, missing = _fake_spec(project, branch=branch, tag=tag, revision=revision)
        with self._lock:
            sha = _lookup(self._mirror(project), kind, name)
            if sha is None:
                raise UnknownRevision(missing)
            found = self._objects[sha]
        return Snapshot(sha=sha, commit=found.commit, file_text=found.files.get(_clean_path(path)))

    def read_file(self, project: Project, sha: str, path: str) -> str | None:
        _check_fake_sha(sha)
        with self._lock:
            full = _lookup(self._mirror(project), "revision", sha)
            return self._objects[full].files.get(_clean_path(path)) if full is not None else None

    def checkout(
        self,
        project: Project,
        sha: str,
        dest: Path,
        *,
        branch: str | None = None,
        tag: str | None = None,
    ) -> None:
        _check_fake_sha(sha)
        if branch is not None and (branch.startswith("-") or _BAD_REF.search(branch)):
            raise InvalidRequest(f'Invalid branch "{branch}"')
        dest = Path(dest)
        with self._lock:
            mirror = self._mirror(project)
            if not (dest / ".git").exists() and dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
                raise RepositoryError(
                    f"Directory ({dest}) you are trying to checkout to is not empty and not a git repository"
                )
            full = _lookup(mirror, "revision", sha)
            if full is None:  # a stale mirror: update it and look again, as git does
                full = _lookup(self._sync(project), "revision", sha)
            if full is None:
                raise RepositoryError(f"fatal: remote error: upload-pack: not our ref {sha}")
            files = dict(self._objects[full].files)
        _write_working_copy(dest, files, head=f"ref: refs/heads/{branch}" if branch is not None else full)

    def list_root(self, project: Project, sha: str) -> tuple[str, ...]:
        _check_fake_sha(sha)
        with self._lock:
            full = _lookup(self._mirror(project), "revision", sha)
            if full is None:
                raise UnknownRevision(f'Revision "{sha}" not found in the repository')
            paths = list(self._objects[full].files)
        return tuple(sorted({p.split("/", 1)[0] + ("/" if "/" in p else "") for p in paths}))

    def refs(self, project: Project) -> dict[str, str]:
        with self._lock:
            mirror = self._mirror(project)
            return {
                **{f"refs/heads/{name}": sha for name, sha in mirror.branches.items()},
                **{f"refs/tags/{name}": sha for name, sha in mirror.tags.items()},
            }

    # ------------------------------------------------------------ helpers (called with the lock held)

    def _repo(self, repo_url: str) -> _FakeRepo:
        repo = self._repos.get(repo_url)
        if repo is None:
            raise RepositoryError(
                f"fatal: '{repo_url}' does not appear to be a git repository\n"
                "fatal: Could not read from remote repository."
            )
        return repo

    def _reachable(self, repo_url: str) -> _FakeRepo:
        repo = self._repo(repo_url)
        if repo.unreachable is not None:
            raise RepositoryError(repo.unreachable)
        return repo

    def _origin_commit(self, repo_url: str, sha: str) -> None:
        if sha not in self._repo(repo_url).refs.commits:
            raise ValueError(f"no commit {sha} in {repo_url}")

    def _sync(self, project: Project) -> _Refs:
        """Fetch as `git fetch --prune` into a mirror: refs replaced, objects only added."""
        origin = self._reachable(project.repo_url).refs
        name = _mirror_name(project)
        mirror = self._mirrors.setdefault(name, _Refs())
        mirror.branches = dict(origin.branches)
        mirror.tags = dict(origin.tags)
        todo = [*origin.branches.values(), *origin.tags.values()]
        while todo:  # a fetch brings the commits the refs reach, not every commit ever made
            sha = todo.pop()
            if sha not in mirror.commits:
                mirror.commits.add(sha)
                parent = self._objects[sha].parent
                if parent is not None:
                    todo.append(parent)
        self._syncs[name] = self._syncs.get(name, 0) + 1
        return mirror

    def _mirror(self, project: Project) -> _Refs:
        mirror = self._mirrors.get(_mirror_name(project))
        return mirror if mirror is not None else self._sync(project)


def _mirror_name(project: Project) -> str:
    return str(project.id) if project.id is not None else project.slug


def _check_url(url: str) -> None:
    if not url or url.startswith("-"):
        raise InvalidRequest(f'Invalid repository URL "{url}"')


def _check_fake_sha(sha: str) -> None:
    if not _HEX.fullmatch(sha):
        raise UnknownRevision(f'Revision "{sha}" not found in the repository')


def _bad_ref_name(name: str) -> bool:
    return not name or bool(_BAD_REF.search(name)) or name.endswith((".", "/")) or name.startswith("/")


def _check_new_ref(name: str, what: str) -> None:
    if _bad_ref_name(name) or name.startswith(("-", ".")):
        raise ValueError(f"git would refuse the {what} name {name!r}")


def _check_path(path: str) -> None:
    parts = path.split("/")
    if not path or any(part in ("", ".", "..", ".git") for part in parts):
        raise ValueError(f"git cannot store a file at {path!r}")


def _check_tree(tree: dict[str, str]) -> None:
    for path in tree:
        parts = path.split("/")
        for end in range(1, len(parts)):
            if "/".join(parts[:end]) in tree:
                raise ValueError(f"{'/'.join(parts[:end])!r} cannot be both a file and a directory")


def _clean_path(path: str) -> str:
    clean = path.strip("/")
    while clean.startswith("./"):
        clean = clean[2:]
    return clean


def _ident(text: str) -> tuple[str, str]:
    match = _IDENT.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected 'Name <email>', got {text!r}")
    return match[1], match[2]


def _git_date(when: datetime | None, count: int) -> str:
    """git's strict ISO-8601 (%aI): seconds, the offset kept."""
    if when is None:
        when = _FAKE_DATES + timedelta(minutes=count)
    if when.tzinfo is None:
        raise ValueError("commit dates must be timezone-aware")
    return when.replace(microsecond=0).isoformat()


def _clean_message(message: str) -> str:
    """`git commit -m` cleanup: trailing spaces, leading/trailing and repeated blank lines go."""
    lines: list[str] = []
    for line in message.split("\n"):
        line = line.rstrip()
        if line or (lines and lines[-1]):
            lines.append(line)
    text = "\n".join(lines).strip("\n")
    if not text:
        raise ValueError("git refuses an empty commit message")
    return text


def _fake_spec(
    project: Project, *, branch: str | None, tag: str | None, revision: str | None
) -> tuple[str, str, str]:
    """(kind, name, message when missing), with vcs/git.py's precedence and checks."""
    for what, value in (("branch", branch), ("tag", tag), ("revision", revision)):
        if value is not None and value.startswith("-"):
            raise InvalidRequest(f'Invalid {what} "{value}": it must not start with "-"')
    if revision is not None:
        missing = f'Revision "{revision}" not found in the repository'
        if not _HEX.fullmatch(revision):
            raise UnknownRevision(missing)
        return "revision", revision, missing
    if tag is not None:
        kind, name, missing = "tag", tag, f'Tag "{tag}" not found in the repository'
    else:
        name = branch if branch is not None else project.default_branch
        kind, missing = "branch", f'Branch "{name}" not found in the repository'
    if _bad_ref_name(name):
        raise UnknownRevision(missing)
    return kind, name, missing


def _lookup(refs: _Refs, kind: str, name: str) -> str | None:
    """The commit a name means, as `git rev-parse <name>^{commit}` finds it in a mirror."""
    if kind == "branch":
        return refs.branches.get(name)
    if kind == "tag":
        return refs.tags.get(name)
    wanted = name.lower()
    if len(name) < 40:
        # git tries ref names before abbreviated SHAs (tags first); a ref that does not point at a
        # commit starting with the revision means "not found" (vcs/git.py checks the prefix).
        target = refs.tags.get(name) or refs.branches.get(name)
        if target is not None:
            return target if target.startswith(wanted) else None
    found = [sha for sha in refs.commits if sha.startswith(wanted)]
    return found[0] if len(found) == 1 else None


def _write_working_copy(dest: Path, files: dict[str, str], *, head: str) -> None:
    """Write a commit's files; remove those the previous checkout wrote that it lacks."""
    git_dir = dest / ".git"
    tracked = git_dir / _TRACKED
    before: list[str] = json.loads(tracked.read_text()) if tracked.exists() else []
    for path in before:
        if path not in files:
            target = dest / path
            target.unlink(missing_ok=True)
            parent = target.parent
            while parent != dest and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
    for path, text in files.items():
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git_dir.mkdir(parents=True, exist_ok=True)
    (git_dir / "HEAD").write_text(head + "\n")
    tracked.write_text(json.dumps(sorted(files)))


# --- runner fakes
# RecordingDispatcher (Dispatcher) keeps what the service asks; RecordingReporter (RunReporter)
# keeps what a runner says. Neither runs anything in the background.


class RecordingDispatcher:
    """A Dispatcher that runs nothing by itself and keeps what it is asked, for tests to read.

    `submitted` lists every RunRequest in order, `canceled` every build id passed to cancel,
    `waiting()` the requests neither run nor canceled (keyed by build id, as the local executor:
    submitting a build again replaces its request). `run_next()` plays the oldest waiting build
    through a reporter synchronously: queued, started and, if the reporter lets it start,
    finished with the given outcome. To run real steps, hand a request to a JobRunner instead.
    """

    def __init__(self) -> None:
        self.reporter: RunReporter | None = None
        self.submitted: list[RunRequest] = []
        self.canceled: list[int] = []
        self.stopped = False
        self._waiting: dict[int, RunRequest] = {}
        self._lock = threading.Lock()

    def start(self, reporter: RunReporter) -> None:
        self.reporter = reporter
        self.stopped = False

    def submit(self, request: RunRequest) -> None:
        with self._lock:
            self.submitted.append(request)
            self._waiting[request.build_id] = request

    def cancel(self, build_id: int) -> bool:
        """True when the build was waiting here (it then never runs)."""
        with self._lock:
            self.canceled.append(build_id)
            return self._waiting.pop(build_id, None) is not None

    def stop(self, timeout: float = 10.0) -> None:
        self.stopped = True

    def waiting(self) -> list[RunRequest]:
        with self._lock:
            return list(self._waiting.values())

    def run_next(
        self,
        reporter: RunReporter | None = None,
        *,
        outcome: Outcome = Outcome.SUCCESS,
        at: datetime | None = None,
        worker: str = "fake",
    ) -> RunRequest | None:
        """Take the oldest waiting request and report it run to `reporter` (default: the one given
        to start); None when nothing waits."""
        target = reporter or self.reporter
        if target is None:
            raise RuntimeError("no reporter: pass one or call start() first")
        with self._lock:
            if not self._waiting:
                return None
            build_id = next(iter(self._waiting))
            request = self._waiting.pop(build_id)
        when = at or _now()
        target.build_queued(build_id, when)
        if target.build_started(build_id, when, worker):
            target.build_finished(build_id, outcome, when)
        return request


class RecordingWriter:
    """A LogWriter that counts everything and keeps the first `keep` bytes."""

    def __init__(self, keep: int, on_chunk: Callable[[int], None] | None) -> None:
        self.keep = keep
        self.on_chunk = on_chunk
        self.data = bytearray()
        self.size = 0
        self.chunks = 0
        self.closed = False

    def write(self, data: bytes, at: datetime, stream: str = "out") -> None:
        assert not self.closed, "write after close"
        assert at.tzinfo is not None
        assert stream == "out"
        self.chunks += 1
        self.size += len(data)
        room = self.keep - len(self.data)
        if room > 0:
            self.data += data[:room]
        if self.on_chunk is not None:
            self.on_chunk(len(data))

    def close(self) -> None:
        self.closed = True


@dataclass
class RecordingReporter:
    """A RunReporter that keeps what the runner said, for asserting on the resulting state."""

    allow_start: bool = True
    keep: int = 1 << 20
    on_chunk: Callable[[int], None] | None = None
    on_action_started: Callable[[Action], None] | None = None
    started_builds: list[tuple[int, str]] = field(default_factory=list)
    started: list[Action] = field(default_factory=list)
    finished: dict[tuple[int, int], Action] = field(default_factory=dict)
    writers: dict[tuple[int, int], RecordingWriter] = field(default_factory=dict)
    finished_builds: list[tuple[int, Outcome, datetime, tuple[Message, ...]]] = field(default_factory=list)
    tests: list[tuple[int, list[dict[str, Any]], list[dict[str, Any]]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def build_queued(self, build_id: int, at: datetime) -> None:
        pass

    def build_started(self, build_id: int, at: datetime, worker: str, node: int | None = None) -> bool:
        with self.lock:
            self.started_builds.append((build_id, worker))
        return self.allow_start

    def action_started(self, build_id: int, action: Action) -> None:
        with self.lock:
            self.started.append(action)
        if self.on_action_started is not None:
            self.on_action_started(action)

    def log_writer(self, build_id: int, step: int, index: int) -> RecordingWriter:
        writer = RecordingWriter(self.keep, self.on_chunk)
        with self.lock:
            self.writers[(step, index)] = writer
        return writer

    def action_finished(self, build_id: int, action: Action) -> None:
        with self.lock:
            assert (action.step, action.index) not in self.finished
            self.finished[(action.step, action.index)] = action

    def test_results(
        self, build_id: int, index: int, tests: list[dict[str, Any]], exceptions: list[dict[str, Any]]
    ) -> None:
        self.tests.append((index, list(tests), list(exceptions)))

    def build_finished(
        self,
        build_id: int,
        outcome: Outcome,
        at: datetime,
        messages: tuple[Message, ...] = (),
        node: int | None = None,  # (a whole build here: JobRunner's node is None)
    ) -> None:
        with self.lock:
            self.finished_builds.append((build_id, outcome, at, messages))

    # helpers
    def log(self, step: int, index: int = 0) -> str:
        return self.writers[(step, index)].data.decode()

    def steps(self, index: int = 0) -> list[int]:
        return sorted(step for step, i in self.finished if i == index)

    def status(self, step: int, index: int = 0) -> ActionStatus:
        return self.finished[(step, index)].status


# ================================================================ webhook deliveries
# InMemoryDeliveryStore (DeliveryStore): a dict behind a lock, with the semantics of
# store/deliveries_sql.py (contract tests: tests/contract/test_delivery_store.py).


class InMemoryDeliveryStore:
    """DeliveryStore in a dict; thread-safe.

    Given the build store it sits beside (as the table sits beside `builds`), it also behaves
    like the database's foreign key: NotFound for a delivery of an unknown build, and the
    `project_id` filter of `list_deliveries` (without one, that filter keeps nothing).
    """

    def __init__(self, builds: BuildStore | None = None) -> None:
        self._lock = threading.Lock()
        self._builds = builds
        self._deliveries: dict[int, Delivery] = {}
        self._next_id = 1

    def add_delivery(self, delivery: Delivery) -> Delivery:
        if self._builds is not None and self._builds.get_build_by_id(delivery.build_id) is None:
            raise NotFound(f"no build with id {delivery.build_id}")
        with self._lock:
            delivery = replace(delivery, id=self._next_id, created_at=delivery.created_at or _now())
            self._next_id += 1
            self._deliveries[delivery.id or 0] = delivery
        return delivery

    def save_delivery(self, delivery: Delivery) -> None:
        if delivery.id is None:
            raise ValueError("save_delivery needs a stored delivery (id is None)")
        with self._lock:
            if delivery.id not in self._deliveries:
                raise NotFound(f"no delivery with id {delivery.id}")
            self._deliveries[delivery.id] = delivery

    def due_deliveries(self, now: datetime, limit: int = 100) -> list[Delivery]:
        with self._lock:
            due = [
                d
                for _, d in sorted(self._deliveries.items())
                if d.state is DeliveryState.PENDING
                and (d.next_attempt_at is None or d.next_attempt_at <= now)
            ]
        return due[: max(limit, 0)]

    def list_deliveries(
        self, *, build_id: int | None = None, project_id: int | None = None, limit: int = 100
    ) -> list[Delivery]:
        with self._lock:
            found = [d for _, d in sorted(self._deliveries.items(), reverse=True)]
        if build_id is not None:
            found = [d for d in found if d.build_id == build_id]
        if project_id is not None:
            found = [d for d in found if self._project_of(d.build_id) == project_id]
        return found[: max(limit, 0)]

    def _project_of(self, build_id: int) -> int | None:
        build = self._builds.get_build_by_id(build_id) if self._builds is not None else None
        return build.project_id if build is not None else None


# ================================================================ project settings
# InMemoryProjectSettingsStore (ProjectSettingsStore): dicts behind a lock, with the semantics of
# store/settings_sql.py (contract tests: tests/contract/test_settings_store.py).


class InMemoryProjectSettingsStore:
    """ProjectSettingsStore in dicts; thread-safe. Like SqlProjectSettingsStore, stored objects
    without `created_at` get the current time and overwriting a variable keeps its `created_at`.
    It knows no projects or users, so it cannot refuse unknown ones as the database does."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: dict[tuple[int, int], Role] = {}
        self._follows: set[tuple[int, int]] = set()
        self._env: dict[tuple[int, str], EnvVar] = {}
        self._checkout_keys: dict[int, CheckoutKey] = {}
        self._ssh_keys: dict[int, SshKey] = {}
        self._webhooks: dict[int, Webhook] = {}
        self._ids: dict[str, int] = {}

    def _new_id(self, kind: str) -> int:
        self._ids[kind] = self._ids.get(kind, 0) + 1
        return self._ids[kind]

    # members

    def set_member(self, project_id: int, user_id: int, role: Role) -> None:
        with self._lock:
            self._members[(project_id, user_id)] = role

    def remove_member(self, project_id: int, user_id: int) -> bool:
        with self._lock:
            return self._members.pop((project_id, user_id), None) is not None

    def member_role(self, project_id: int, user_id: int) -> Role | None:
        with self._lock:
            return self._members.get((project_id, user_id))

    # follows

    def follow(self, project_id: int, user_id: int) -> bool:
        with self._lock:
            new = (project_id, user_id) not in self._follows
            self._follows.add((project_id, user_id))
            return new

    def unfollow(self, project_id: int, user_id: int) -> bool:
        with self._lock:
            if (project_id, user_id) not in self._follows:
                return False
            self._follows.discard((project_id, user_id))
            return True

    def followed_projects(self, user_id: int) -> list[int]:
        with self._lock:
            return sorted(p for p, u in self._follows if u == user_id)

    # environment variables

    def set_env_var(self, project_id: int, var: EnvVar) -> EnvVar:
        with self._lock:
            old = self._env.get((project_id, var.name))
            created = old.created_at if old is not None else (var.created_at or _now())
            var = replace(var, created_at=created)
            self._env[(project_id, var.name)] = var
            return var

    def get_env_var(self, project_id: int, name: str) -> EnvVar | None:
        with self._lock:
            return self._env.get((project_id, name))

    def list_env_vars(self, project_id: int) -> list[EnvVar]:
        with self._lock:
            return [v for (p, name), v in sorted(self._env.items()) if p == project_id]

    def delete_env_var(self, project_id: int, name: str) -> bool:
        with self._lock:
            return self._env.pop((project_id, name), None) is not None

    # checkout keys

    def add_checkout_key(self, key: CheckoutKey) -> CheckoutKey:
        with self._lock:
            key = replace(key, id=self._new_id("checkout"), created_at=key.created_at or _now())
            self._checkout_keys[key.id or 0] = key
            return key

    def list_checkout_keys(self, project_id: int) -> list[CheckoutKey]:
        with self._lock:
            return [k for _, k in sorted(self._checkout_keys.items()) if k.project_id == project_id]

    def delete_checkout_key(self, project_id: int, key_id: int) -> bool:
        with self._lock:
            key = self._checkout_keys.get(key_id)
            if key is None or key.project_id != project_id:
                return False
            del self._checkout_keys[key_id]
            return True

    # SSH keys

    def add_ssh_key(self, key: SshKey) -> SshKey:
        with self._lock:
            key = replace(key, id=self._new_id("ssh"), created_at=key.created_at or _now())
            self._ssh_keys[key.id or 0] = key
            return key

    def list_ssh_keys(self, project_id: int) -> list[SshKey]:
        with self._lock:
            return [k for _, k in sorted(self._ssh_keys.items()) if k.project_id == project_id]

    def delete_ssh_key(self, project_id: int, fingerprint: str, hostname: str) -> bool:
        with self._lock:
            doomed = [
                i
                for i, k in self._ssh_keys.items()
                if k.project_id == project_id and k.fingerprint == fingerprint and k.hostname == hostname
            ]
            for i in doomed:
                del self._ssh_keys[i]
            return bool(doomed)

    # webhooks

    def add_webhook(self, hook: Webhook) -> Webhook:
        with self._lock:
            hook = replace(hook, id=self._new_id("webhook"), created_at=hook.created_at or _now())
            self._webhooks[hook.id or 0] = hook
            return hook

    def list_webhooks(self, project_id: int) -> list[Webhook]:
        with self._lock:
            return [h for _, h in sorted(self._webhooks.items()) if h.project_id == project_id]

    def delete_webhook(self, project_id: int, hook_id: int) -> bool:
        with self._lock:
            hook = self._webhooks.get(hook_id)
            if hook is None or hook.project_id != project_id:
                return False
            del self._webhooks[hook_id]
            return True
