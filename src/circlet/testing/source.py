"""FakeSourceHost: the fake of core/ports.py SourceHost and CheckoutSource (contract:
tests/contract/test_source_host.py)."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import datetime
from pathlib import Path

from circlet.core.errors import InvalidRequest, RepositoryError, UnknownRevision
from circlet.core.model import Commit, Project
from circlet.core.ports import Snapshot
from circlet.testing.source_rules import (
    _BAD_REF,
    _check_fake_sha,
    _check_new_ref,
    _check_path,
    _check_tree,
    _check_url,
    _clean_message,
    _clean_path,
    _fake_spec,
    _FakeCommit,
    _FakeRepo,
    _git_date,
    _ident,
    _lookup,
    _mirror_name,
    _Refs,
    _write_working_copy,
)

# ================================================================ source fakes
# FakeSourceHost (SourceHost, CheckoutSource): repositories a test builds in memory, read with the
# semantics of vcs/git.py (contract tests: tests/contract/test_source_host.py).


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

    def list_root(self, project: Project, sha: str, under: str = "") -> tuple[str, ...]:
        _check_fake_sha(sha)
        prefix = under.strip("/") + "/" if under.strip("/") else ""
        with self._lock:
            full = _lookup(self._mirror(project), "revision", sha)
            if full is None:
                raise UnknownRevision(f'Revision "{sha}" not found in the repository')
            paths = [p[len(prefix) :] for p in self._objects[full].files if p.startswith(prefix)]
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
