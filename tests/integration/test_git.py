"""GitSourceHost against real repositories made in tmp_path with `git init`."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from circlet.core.errors import InvalidRequest, RepositoryError, UnknownRevision
from circlet.core.model import Project, VcsType
from circlet.vcs.git import GitSourceHost

AUTHOR = {
    "GIT_AUTHOR_NAME": "Ada Author",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_AUTHOR_DATE": "2024-03-01T10:20:30+0100",
    "GIT_COMMITTER_NAME": "Carl Committer",
    "GIT_COMMITTER_EMAIL": "carl@example.com",
    "GIT_COMMITTER_DATE": "2024-03-02T11:00:00-0500",
}


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    full_env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        **AUTHOR,
        **(env or {}),
    }
    result = subprocess.run(
        ["git", *args], cwd=repo, env=full_env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def commit_file(repo: Path, path: str, text: str, message: str, env: dict[str, str] | None = None) -> str:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)
    git(repo, "add", path)
    git(repo, "commit", "-q", "-m", message, env=env)
    return git(repo, "rev-parse", "HEAD")


class Repo:
    """An origin repository: main (2 commits), tag v1 on the first, feature/x one commit ahead."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()
        git(path, "init", "-q", "-b", "main")
        self.first = commit_file(path, ".circleci/config.yml", "version: 2.1\n", "First commit")
        git(path, "tag", "-a", "v1", "-m", "release 1")
        self.second = commit_file(
            path, "README.md", "hello\n", "Add the readme\n\nA body line.\n\nSecond paragraph.  \n"
        )
        git(path, "checkout", "-q", "-b", "feature/x")
        self.feature = commit_file(path, "feature.txt", "x\n", "Feature work")
        git(path, "checkout", "-q", "main")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "origin")


@pytest.fixture
def host(tmp_path: Path) -> GitSourceHost:
    return GitSourceHost(tmp_path / "mirrors")


@pytest.fixture
def project(repo: Repo) -> Project:
    return Project(id=7, vcs_type=VcsType.GITHUB, username="acme", reponame="widget", repo_url=str(repo.path))


# ------------------------------------------------------------------ probe


def test_probe_returns_default_branch(host: GitSourceHost, repo: Repo) -> None:
    assert host.probe(str(repo.path)) == "main"
    git(repo.path, "symbolic-ref", "HEAD", "refs/heads/feature/x")
    assert host.probe(str(repo.path)) == "feature/x"


def test_probe_bad_repository_raises_with_git_words(host: GitSourceHost, tmp_path: Path) -> None:
    with pytest.raises(RepositoryError) as info:
        host.probe(str(tmp_path / "nope"))
    assert "does not appear to be a git repository" in info.value.message


def test_probe_rejects_option_like_url(host: GitSourceHost) -> None:
    with pytest.raises(InvalidRequest):
        host.probe("--upload-pack=touch /tmp/pwned")


# ------------------------------------------------------------------ sync and resolve


def test_sync_creates_mirror_and_picks_up_new_commits(
    host: GitSourceHost, repo: Repo, project: Project
) -> None:
    host.sync(project)
    assert (host.mirror_path(project) / "HEAD").exists()
    assert host.resolve(project, branch="main") == repo.second
    third = commit_file(repo.path, "new.txt", "3\n", "Third")
    git(repo.path, "branch", "-q", "later")
    assert host.resolve(project, branch="main") == repo.second  # not synced yet
    host.sync(project)
    assert host.resolve(project, branch="main") == third
    assert host.resolve(project, branch="later") == third


def test_sync_prunes_deleted_branches(host: GitSourceHost, repo: Repo, project: Project) -> None:
    host.sync(project)
    git(repo.path, "branch", "-q", "-D", "feature/x")
    host.sync(project)
    with pytest.raises(UnknownRevision):
        host.resolve(project, branch="feature/x")


def test_sync_of_unreadable_repository_raises(host: GitSourceHost, project: Project, tmp_path: Path) -> None:
    with pytest.raises(RepositoryError):
        host.sync(replace(project, repo_url=str(tmp_path / "missing")))


def test_resolve_each_kind(host: GitSourceHost, repo: Repo, project: Project) -> None:
    host.sync(project)
    assert host.resolve(project, branch="main") == repo.second
    assert host.resolve(project, branch="feature/x") == repo.feature
    assert host.resolve(project, tag="v1") == repo.first  # annotated tag peeled to its commit
    assert host.resolve(project, revision=repo.first) == repo.first
    assert host.resolve(project, revision=repo.first[:8]) == repo.first
    assert host.resolve(project, revision=repo.first.upper()) == repo.first
    # With a branch and a revision, the revision wins (the branch is a label).
    assert host.resolve(project, branch="feature/x", revision=repo.first) == repo.first
    assert host.resolve(project) == repo.second  # the default branch


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"branch": "nope"}, 'Branch "nope" not found in the repository', id="branch"),
        pytest.param({"tag": "v9"}, 'Tag "v9" not found in the repository', id="tag"),
        pytest.param({"revision": "abc0"}, 'Revision "abc0" not found in the repository', id="revision"),
        pytest.param(
            {"revision": "main"}, 'Revision "main" not found in the repository', id="revision-not-hex"
        ),
        pytest.param({"revision": "f" * 40}, f'Revision "{"f" * 40}" not found', id="full-sha-missing"),
        pytest.param({"branch": "main~1"}, 'Branch "main~1" not found', id="branch-expression"),
        pytest.param({"branch": "main^{tree}"}, 'Branch "main^{tree}" not found', id="branch-peel"),
        pytest.param({"tag": "v1..main"}, 'Tag "v1..main" not found', id="tag-range"),
        pytest.param({"branch": "x", "revision": "0000000"}, 'Revision "0000000" not found', id="both"),
    ],
)
def test_resolve_errors(host: GitSourceHost, project: Project, kwargs: dict[str, str], message: str) -> None:
    host.sync(project)
    with pytest.raises(UnknownRevision) as info:
        host.resolve(project, **kwargs)
    assert message in info.value.message


def test_resolve_revision_must_be_a_commit(host: GitSourceHost, repo: Repo, project: Project) -> None:
    tree = git(repo.path, "rev-parse", "HEAD^{tree}")
    host.sync(project)
    with pytest.raises(UnknownRevision):
        host.resolve(project, revision=tree)


@pytest.mark.parametrize("kind", ["branch", "tag", "revision"])
def test_resolve_rejects_option_like_names(host: GitSourceHost, project: Project, kind: str) -> None:
    host.sync(project)
    with pytest.raises(InvalidRequest) as info:
        host.resolve(project, **{kind: "--output=/tmp/x"})
    assert not isinstance(info.value, UnknownRevision)


def test_resolve_without_sync_creates_the_mirror(host: GitSourceHost, repo: Repo, project: Project) -> None:
    assert host.resolve(project, branch="main") == repo.second


def test_project_without_id_gets_a_slug_named_mirror(
    host: GitSourceHost, repo: Repo, project: Project
) -> None:
    unsaved = replace(project, id=None)
    host.sync(unsaved)
    assert host.mirror_path(unsaved).name == "gh--acme--widget.git"
    assert host.resolve(unsaved, tag="v1") == repo.first


def test_concurrent_syncs_of_one_project(host: GitSourceHost, repo: Repo, project: Project) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                host.sync(project)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    commit_file(repo.path, "during.txt", "x\n", "During the syncs")
    for t in threads:
        t.join()
    assert errors == []
    host.sync(project)
    assert host.resolve(project, branch="main") == git(repo.path, "rev-parse", "HEAD")


def test_concurrent_syncs_from_two_hosts_sharing_mirrors(
    repo: Repo, project: Project, tmp_path: Path
) -> None:
    """Two GitSourceHost objects stand for two processes: only the file lock serializes them."""
    hosts = [GitSourceHost(tmp_path / "shared"), GitSourceHost(tmp_path / "shared")]
    errors: list[BaseException] = []

    def work(h: GitSourceHost) -> None:
        try:
            for _ in range(3):
                h.sync(project)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(hosts[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert hosts[1].resolve(project, branch="main") == repo.second


class _CountingHost(GitSourceHost):
    """Counts mirror fetches; `hold` (when set) keeps each fetch open after git is done."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.fetches = 0
        self.fetched = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def _fetch_mirror(self, project: Project, mirror: Path) -> None:
        super()._fetch_mirror(project, mirror)
        self.fetches += 1
        self.fetched.set()
        assert self.release.wait(30)


def test_concurrent_syncs_share_fetches(repo: Repo, project: Project, tmp_path: Path) -> None:
    """Eight triggers arriving together cost one or two fetches, not eight (single flight)."""
    counting = _CountingHost(tmp_path / "counted")
    counting.sync(project)  # creates the mirror (a clone, not counted)
    counting.release.clear()
    start = threading.Barrier(9)

    def work() -> None:
        start.wait()
        counting.sync(project)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    start.wait()
    time.sleep(0.3)  # every thread has asked while the first fetch is held open
    counting.release.set()
    for t in threads:
        t.join(30)
    assert counting.fetches in (1, 2)


def test_sync_never_reuses_a_fetch_that_started_before_it(
    repo: Repo, project: Project, tmp_path: Path
) -> None:
    """A commit pushed before a sync is asked for is seen, even while an older fetch runs."""
    counting = _CountingHost(tmp_path / "counted")
    counting.sync(project)
    counting.release.clear()
    counting.fetched.clear()
    older = threading.Thread(target=counting.sync, args=(project,))
    older.start()
    assert counting.fetched.wait(30)  # the older fetch has read the origin already
    pushed = commit_file(repo.path, "pushed.txt", "p\n", "Pushed before the trigger")
    seen: list[str] = []
    newer = threading.Thread(
        target=lambda: (counting.sync(project), seen.append(counting.resolve(project, branch="main")))
    )
    newer.start()
    time.sleep(0.2)
    counting.release.set()
    older.join(30)
    newer.join(30)
    assert seen == [pushed]
    assert counting.fetches == 2


# ------------------------------------------------------------------ commit and read_file


def test_commit_metadata(host: GitSourceHost, repo: Repo, project: Project) -> None:
    host.sync(project)
    commit = host.commit(project, repo.second)
    assert commit.sha == repo.second
    assert commit.subject == "Add the readme"
    assert commit.body == "A body line.\n\nSecond paragraph."
    assert commit.author_name == "Ada Author"
    assert commit.author_email == "ada@example.com"
    assert commit.author_date == "2024-03-01T10:20:30+01:00"
    assert commit.committer_name == "Carl Committer"
    assert commit.committer_email == "carl@example.com"
    assert commit.committer_date == "2024-03-02T11:00:00-05:00"
    first = host.commit(project, repo.first)
    assert (first.subject, first.body) == ("First commit", "")


def test_commit_with_odd_message(host: GitSourceHost, repo: Repo, project: Project) -> None:
    message = "Ünïcode subject with\ttab\n\nbody with NUL-free\x01control and trailing spaces   \n\n\n"
    sha = commit_file(repo.path, "odd.txt", "x", message)
    host.sync(project)
    commit = host.commit(project, sha)
    assert commit.subject == "Ünïcode subject with\ttab"
    assert commit.body == "body with NUL-free\x01control and trailing spaces"


def test_commit_unknown(host: GitSourceHost, project: Project) -> None:
    host.sync(project)
    with pytest.raises(UnknownRevision):
        host.commit(project, "0" * 40)


def test_read_file(host: GitSourceHost, repo: Repo, project: Project) -> None:
    host.sync(project)
    assert host.read_file(project, repo.first, ".circleci/config.yml") == "version: 2.1\n"
    assert host.read_file(project, repo.first, "./.circleci/config.yml") == "version: 2.1\n"
    assert host.read_file(project, repo.first, "README.md") is None
    assert host.read_file(project, repo.second, "README.md") == "hello\n"
    assert host.read_file(project, repo.second, ".circleci") is None  # a directory
    assert host.read_file(project, "0" * 40, "README.md") is None


# ------------------------------------------------------------------ snapshot (one process)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="default-branch"),
        pytest.param({"branch": "feature/x"}, id="branch-with-slash"),
        pytest.param({"tag": "v1"}, id="annotated-tag"),
        pytest.param({"revision": "FIRST8"}, id="abbreviated-revision"),
        pytest.param({"branch": "feature/x", "revision": "FIRST"}, id="revision-wins"),
    ],
)
def test_snapshot_agrees_with_the_separate_calls(
    host: GitSourceHost, repo: Repo, project: Project, kwargs: dict[str, str]
) -> None:
    commit_file(repo.path, "odd.txt", "x", "Ünïcode subject\twith tab\n\nbody  \n\n")
    host.sync(project)
    args = {
        k: repo.first if v == "FIRST" else repo.first[:8] if v == "FIRST8" else v for k, v in kwargs.items()
    }
    snap = host.snapshot(project, path=".circleci/config.yml", **args)
    sha = host.resolve(project, **args)
    assert snap.sha == sha
    assert snap.commit == host.commit(project, sha)
    assert snap.file_text == host.read_file(project, sha, ".circleci/config.yml")


def test_snapshot_of_a_missing_file_and_errors(host: GitSourceHost, repo: Repo, project: Project) -> None:
    host.sync(project)
    assert host.snapshot(project, branch="main", path="nothing/here.yml").file_text is None
    assert host.snapshot(project, branch="main", path=".circleci").file_text is None  # a directory
    for kwargs, message in (
        ({"branch": "nope"}, 'Branch "nope" not found'),
        ({"tag": "v9"}, 'Tag "v9"'),
        ({"revision": "0" * 40}, "not found"),
        ({"branch": "a b"}, 'Branch "a b"'),
    ):
        with pytest.raises(UnknownRevision) as info:
            host.snapshot(project, path="x", **kwargs)
        assert message in info.value.message


def test_parse_commit_keeps_other_encodings_and_offsets() -> None:
    from circlet.vcs.git import parse_commit

    raw = (
        "tree " + "a" * 40 + "\nparent " + "b" * 40 + "\n"
        "author J\xf6rg <j@x.org> 1714582969 +0530\ncommitter C <c@x.org> 0 -0000\n"
        "encoding ISO-8859-1\n\nS\xfcbject\n\nBody\n"
    ).encode("latin-1")
    commit = parse_commit("c" * 40, raw)
    assert (commit.author_name, commit.author_email) == ("Jörg", "j@x.org")
    assert commit.author_date == "2024-05-01T22:32:49+05:30"
    assert commit.committer_date == "1970-01-01T00:00:00+00:00"
    assert (commit.subject, commit.body) == ("Sübject", "Body")


# ------------------------------------------------------------------ checkout


def head(dest: Path) -> str:
    return git(dest, "rev-parse", "HEAD")


def current_branch(dest: Path) -> str:
    return git(dest, "rev-parse", "--abbrev-ref", "HEAD")


def test_checkout_branch_into_new_dir(
    host: GitSourceHost, repo: Repo, project: Project, tmp_path: Path
) -> None:
    host.sync(project)
    dest = tmp_path / "ws" / "project"
    host.checkout(project, repo.feature, dest, branch="feature/x")
    assert head(dest) == repo.feature
    assert current_branch(dest) == "feature/x"
    assert (dest / "feature.txt").read_text() == "x\n"
    assert git(dest, "config", "remote.origin.url") == project.repo_url
    assert git(dest, "config", "gc.auto") == "0"
    assert git(dest, "status", "--porcelain") == ""
    # The clone owns its objects: it survives the mirror being deleted.
    import shutil

    shutil.rmtree(host.mirror_path(project))
    assert git(dest, "fsck", "--no-progress") == ""


def test_checkout_tag_and_revision_are_detached(
    host: GitSourceHost, repo: Repo, project: Project, tmp_path: Path
) -> None:
    host.sync(project)
    host.checkout(project, repo.first, tmp_path / "t", tag="v1")
    assert head(tmp_path / "t") == repo.first
    assert current_branch(tmp_path / "t") == "HEAD"
    assert git(tmp_path / "t", "describe", "--tags") == "v1"
    host.checkout(project, repo.second, tmp_path / "r")
    assert head(tmp_path / "r") == repo.second
    assert current_branch(tmp_path / "r") == "HEAD"


def test_checkout_into_empty_existing_dir(
    host: GitSourceHost, repo: Repo, project: Project, tmp_path: Path
) -> None:
    dest = tmp_path / "empty"
    dest.mkdir()
    host.checkout(project, repo.second, dest, branch="main")
    assert head(dest) == repo.second


def test_checkout_into_existing_repo_fetches(
    host: GitSourceHost, repo: Repo, project: Project, tmp_path: Path
) -> None:
    dest = tmp_path / "ws"
    host.checkout(project, repo.first, dest, branch="main")
    assert head(dest) == repo.first
    (dest / "README.md").write_text("local change\n")
    (dest / "untracked.txt").write_text("kept\n")
    newer = commit_file(repo.path, "n.txt", "n\n", "Newer")
    host.sync(project)
    host.checkout(project, newer, dest, branch="main")
    assert head(dest) == newer
    assert current_branch(dest) == "main"
    assert (dest / "README.md").read_text() == "hello\n"
    assert (dest / "untracked.txt").read_text() == "kept\n"
    host.checkout(project, repo.feature, dest, branch="feature/x")
    assert (head(dest), current_branch(dest)) == (repo.feature, "feature/x")
    host.checkout(project, repo.first, dest, tag="v1")
    assert (head(dest), current_branch(dest)) == (repo.first, "HEAD")


def test_checkout_refuses_non_empty_non_repo(
    host: GitSourceHost, repo: Repo, project: Project, tmp_path: Path
) -> None:
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "file").write_text("x")
    with pytest.raises(RepositoryError) as info:
        host.checkout(project, repo.second, dest)
    assert info.value.message == (
        f"Directory ({dest}) you are trying to checkout to is not empty and not a git repository"
    )


def test_checkout_with_stale_mirror_syncs(
    host: GitSourceHost, repo: Repo, project: Project, tmp_path: Path
) -> None:
    """A worker whose mirror predates the commit still checks it out (it updates the mirror)."""
    host.sync(project)
    newer = commit_file(repo.path, "n.txt", "n\n", "Newer")
    host.checkout(project, newer, tmp_path / "new", branch="main")
    assert head(tmp_path / "new") == newer
    dest = tmp_path / "existing"
    host.checkout(project, repo.first, dest, branch="main")
    newest = commit_file(repo.path, "m.txt", "m\n", "Newest")
    host.checkout(project, newest, dest, branch="main")
    assert head(dest) == newest


def test_checkout_unknown_sha_fails(host: GitSourceHost, project: Project, tmp_path: Path) -> None:
    host.sync(project)
    with pytest.raises(RepositoryError):
        host.checkout(project, "1" * 40, tmp_path / "x")


def test_checkout_of_unreachable_commit(
    host: GitSourceHost, repo: Repo, project: Project, tmp_path: Path
) -> None:
    """A commit whose branch was deleted after the trigger can still be checked out."""
    host.sync(project)
    dest = tmp_path / "ws"
    host.checkout(project, repo.first, dest, branch="main")
    git(repo.path, "branch", "-q", "-D", "feature/x")
    host.sync(project)
    host.checkout(project, repo.feature, dest, branch="feature/x")
    assert head(dest) == repo.feature


# ------------------------------------------------------------------ timings


def test_git_calls_and_timings(
    host: GitSourceHost, repo: Repo, project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The W2 path (sync, resolve, commit, read, checkout) uses one git call per step (three for
    a fresh checkout); its time is printed (about 25 ms on an idle machine, budget 100 ms) but
    only loosely bounded, since a shared test machine can be much slower."""
    host.sync(project)
    calls: list[str] = []
    real_git = host._git

    def counting_git(args: Any, **kwargs: Any) -> Any:
        calls.append(args[0] if args[0] != "-c" else args[2])
        return real_git(args, **kwargs)

    monkeypatch.setattr(host, "_git", counting_git)
    timings: dict[str, list[float]] = {}
    counts: dict[str, list[str]] = {}

    def timed(name: str, fn: Callable[..., object], *args: object, **kwargs: object) -> None:
        calls.clear()
        start = time.perf_counter()
        fn(*args, **kwargs)
        timings.setdefault(name, []).append((time.perf_counter() - start) * 1000)
        counts[name] = list(calls)

    for i in range(5):
        timed("sync", host.sync, project)
        timed("resolve", host.resolve, project, branch="main")
        timed("commit", host.commit, project, repo.second)
        timed("read_file", host.read_file, project, repo.second, ".circleci/config.yml")
        timed("checkout", host.checkout, project, repo.second, tmp_path / f"co{i}", branch="main")
    assert counts == {
        "sync": ["fetch"],
        "resolve": ["rev-parse"],
        "commit": ["show"],
        "read_file": ["cat-file"],
        "checkout": ["clone", "config", "checkout"],
    }
    medians = {name: sorted(values)[len(values) // 2] for name, values in timings.items()}
    print("git timings (ms, median of 5):", {k: round(v, 1) for k, v in medians.items()})
    assert sum(medians.values()) < 1000


def test_git_timeout_kills_git_and_its_helpers(tmp_path: Path) -> None:
    pidfile = tmp_path / "helper.pid"
    fake_git = tmp_path / "slow-git"
    fake_git.write_text(f"#!/bin/sh\nsleep 30 &\necho $! > {pidfile}\nwait\n")
    fake_git.chmod(0o755)
    host = GitSourceHost(tmp_path / "mirrors", git=str(fake_git), network_timeout=0.5)
    began = time.monotonic()
    with pytest.raises(RepositoryError, match=r"timed out after 0\.5s"):
        host.probe("https://example.invalid/repo.git")
    assert time.monotonic() - began < 3
    helper = int(pidfile.read_text())
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            os.kill(helper, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{helper}/stat") as f:  # a zombie waiting for its reaper is dead too
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.02)
    else:
        raise AssertionError("the helper survived the timeout")
