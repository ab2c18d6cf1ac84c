"""One contract for every SourceHost: FakeSourceHost and GitSourceHost on a real repository.

Each test gets a `World`: a host, an origin repository built through the same few calls for both
(the fake's builder, or `git` in tmp_path), and a project reading it. The origin starts as:

    main       first (tag v1, annotated) -- second
    feature/x                                 \\-- feature

Nothing is synced up front: like the real host, the fake makes a project's mirror on first use.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol

import pytest

from circlet.core.errors import InvalidRequest, RepositoryError, UnknownRevision
from circlet.core.model import Project, VcsType
from circlet.core.ports import SourceHost
from circlet.testing import FakeSourceHost
from circlet.vcs.git import GitSourceHost

AUTHOR = "Ada Author <ada@example.com>"
COMMITTER = "Carl Committer <carl@example.com>"
AUTHOR_DATE = datetime(2024, 3, 1, 10, 20, 30, tzinfo=timezone(timedelta(hours=1)))
COMMITTER_DATE = datetime(2024, 3, 2, 11, 0, 0, tzinfo=timezone(timedelta(hours=-5)))
CONFIG = "version: 2\njobs: {}\n"
APP = "print('hi')\n"

# ------------------------------------------------------------------ building origins


class Origin(Protocol):
    """A repository a test changes: the fake's builder or a real git repository."""

    url: str

    def commit(
        self,
        files: dict[str, str | None],
        message: str,
        *,
        branch: str = "main",
        author: str = AUTHOR,
        author_date: datetime = AUTHOR_DATE,
        committer: str = COMMITTER,
        committer_date: datetime = COMMITTER_DATE,
    ) -> str:
        """Commit on `branch` (a new branch starts at main's head); None deletes a file."""
        ...

    def tag(self, name: str, sha: str) -> None: ...

    def set_branch(self, name: str, sha: str) -> None: ...

    def delete_branch(self, name: str) -> None: ...


class FakeOrigin:
    def __init__(self, host: FakeSourceHost, url: str) -> None:
        self.host = host
        self.url = url
        host.add_repo(url, default_branch="main")

    def commit(
        self,
        files: dict[str, str | None],
        message: str,
        *,
        branch: str = "main",
        author: str = AUTHOR,
        author_date: datetime = AUTHOR_DATE,
        committer: str = COMMITTER,
        committer_date: datetime = COMMITTER_DATE,
    ) -> str:
        return self.host.add_commit(
            self.url,
            branch=branch,
            files=files,
            message=message,
            author=author,
            author_date=author_date,
            committer=committer,
            committer_date=committer_date,
        )

    def tag(self, name: str, sha: str) -> None:
        self.host.tag(self.url, name, sha)

    def set_branch(self, name: str, sha: str) -> None:
        self.host.set_branch(self.url, name, sha)

    def delete_branch(self, name: str) -> None:
        self.host.delete_branch(self.url, name)


def _person(text: str) -> tuple[str, str]:
    name, _, email = text.partition(" <")
    return name, email.rstrip(">")


class GitOrigin:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = str(path)
        path.mkdir()
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str, env: dict[str, str] | None = None) -> str:
        full_env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", **(env or {})}
        full_env.setdefault("GIT_AUTHOR_NAME", "Setup")
        full_env.setdefault("GIT_AUTHOR_EMAIL", "setup@example.com")
        full_env.setdefault("GIT_COMMITTER_NAME", "Setup")
        full_env.setdefault("GIT_COMMITTER_EMAIL", "setup@example.com")
        result = subprocess.run(
            ["git", *args], cwd=self.path, env=full_env, capture_output=True, text=True, check=True
        )
        return result.stdout.strip()

    def _has(self, ref: str) -> bool:
        return (
            subprocess.run(
                ["git", "rev-parse", "--verify", "-q", ref], cwd=self.path, capture_output=True
            ).returncode
            == 0
        )

    def commit(
        self,
        files: dict[str, str | None],
        message: str,
        *,
        branch: str = "main",
        author: str = AUTHOR,
        author_date: datetime = AUTHOR_DATE,
        committer: str = COMMITTER,
        committer_date: datetime = COMMITTER_DATE,
    ) -> str:
        if self._has(f"refs/heads/{branch}"):
            self.git("checkout", "-q", "-f", branch)
        elif self._has("refs/heads/main"):
            self.git("checkout", "-q", "-f", "-b", branch, "main")
        else:
            self.git("symbolic-ref", "HEAD", f"refs/heads/{branch}")
        for path, text in files.items():
            target = self.path / path
            if text is None:
                self.git("rm", "-q", "--", path)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
        self.git("add", "-A")
        a_name, a_email = _person(author)
        c_name, c_email = _person(committer)
        self.git(
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            message,
            env={
                "GIT_AUTHOR_NAME": a_name,
                "GIT_AUTHOR_EMAIL": a_email,
                "GIT_AUTHOR_DATE": author_date.isoformat(),
                "GIT_COMMITTER_NAME": c_name,
                "GIT_COMMITTER_EMAIL": c_email,
                "GIT_COMMITTER_DATE": committer_date.isoformat(),
            },
        )
        sha = self.git("rev-parse", "HEAD")
        if branch != "main" and self._has("refs/heads/main"):
            self.git("checkout", "-q", "-f", "main")  # HEAD names the default branch, as in a forge
        return sha

    def tag(self, name: str, sha: str) -> None:
        self.git("tag", "-f", "-a", name, "-m", f"release {name}", sha)

    def set_branch(self, name: str, sha: str) -> None:
        self.git("update-ref", f"refs/heads/{name}", sha)

    def delete_branch(self, name: str) -> None:
        self.git("update-ref", "-d", f"refs/heads/{name}")


@dataclass
class World:
    host: SourceHost
    origin: Origin
    project: Project
    first: str
    second: str
    feature: str
    missing_url: str


SECOND_MESSAGE = "Add the readme\n\nA body line.\n\nSecond paragraph.  \n\n"


@pytest.fixture(params=["fake", "git"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> World:
    url = tmp_path / "origin"
    origin: Origin
    host: SourceHost
    if request.param == "fake":
        fake = FakeSourceHost()
        host, origin = fake, FakeOrigin(fake, str(url))
    else:
        host, origin = GitSourceHost(tmp_path / "mirrors"), GitOrigin(url)
    first = origin.commit({".circleci/config.yml": CONFIG, "src/app.py": APP}, "First commit")
    origin.tag("v1", first)
    second = origin.commit({"README.md": "hello\n"}, SECOND_MESSAGE)
    feature = origin.commit({"feature.txt": "x\n", "src/app.py": None}, "Feature work", branch="feature/x")
    project = Project(id=7, vcs_type=VcsType.GITHUB, username="acme", reponame="widget", repo_url=origin.url)
    return World(
        host=host,
        origin=origin,
        project=project,
        first=first,
        second=second,
        feature=feature,
        missing_url=str(tmp_path / "nope"),
    )


def shas(world: World) -> dict[str, str]:
    """Placeholders test tables use for the world's SHAs."""
    return {
        "first": world.first,
        "first8": world.first[:8],
        "FIRST": world.first.upper(),
        "second": world.second,
        "feature": world.feature,
    }


def fill(kwargs: dict[str, str], world: World) -> dict[str, str]:
    return {key: value.format(**shas(world)) for key, value in kwargs.items()}


# ------------------------------------------------------------------ probe and sync


def test_probe_returns_the_default_branch(world: World) -> None:
    assert world.host.probe(world.origin.url) == "main"


def test_probe_and_sync_of_a_missing_repository_raise(world: World) -> None:
    with pytest.raises(RepositoryError) as info:
        world.host.probe(world.missing_url)
    assert "does not appear to be a git repository" in info.value.message
    with pytest.raises(RepositoryError):
        world.host.sync(replace(world.project, repo_url=world.missing_url))


@pytest.mark.parametrize("url", ["", "--upload-pack=touch /tmp/pwned"], ids=["empty", "option-like"])
def test_option_like_urls_are_refused(world: World, url: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        world.host.probe(url)
    assert info.value.message == f'Invalid repository URL "{url}"'
    with pytest.raises(InvalidRequest):
        world.host.sync(replace(world.project, repo_url=url))


def test_reads_see_the_mirror_as_of_the_last_sync(world: World) -> None:
    host, project = world.host, world.project
    assert host.resolve(project) == world.second  # the first read makes the mirror
    third = world.origin.commit({"third.txt": "3\n"}, "Third")
    world.origin.set_branch("later", third)
    assert host.resolve(project, branch="main") == world.second
    with pytest.raises(UnknownRevision):
        host.resolve(project, branch="later")
    with pytest.raises(UnknownRevision):
        host.commit(project, third)
    host.sync(project)
    assert host.resolve(project, branch="main") == third
    assert host.resolve(project, branch="later") == third
    assert host.commit(project, third).subject == "Third"


def test_sync_prunes_deleted_branches_but_keeps_their_commits(world: World) -> None:
    host, project = world.host, world.project
    host.sync(project)
    world.origin.delete_branch("feature/x")
    host.sync(project)
    with pytest.raises(UnknownRevision) as info:
        host.resolve(project, branch="feature/x")
    assert info.value.message == 'Branch "feature/x" not found in the repository'
    assert host.resolve(project, revision=world.feature) == world.feature
    assert host.read_file(project, world.feature, "feature.txt") == "x\n"


# ------------------------------------------------------------------ resolve


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({}, "second", id="default-branch"),
        pytest.param({"branch": "main"}, "second", id="branch"),
        pytest.param({"branch": "feature/x"}, "feature", id="branch-with-slash"),
        pytest.param({"tag": "v1"}, "first", id="annotated-tag-peeled"),
        pytest.param({"revision": "{first}"}, "first", id="revision"),
        pytest.param({"revision": "{first8}"}, "first", id="abbreviated-revision"),
        pytest.param({"revision": "{FIRST}"}, "first", id="upper-case-revision"),
        pytest.param({"branch": "feature/x", "revision": "{first}"}, "first", id="revision-over-branch"),
        pytest.param({"tag": "v1", "revision": "{second}"}, "second", id="revision-over-tag"),
        pytest.param({"branch": "feature/x", "tag": "v1"}, "first", id="tag-over-branch"),
    ],
)
def test_resolve(world: World, kwargs: dict[str, str], expected: str) -> None:
    assert world.host.resolve(world.project, **fill(kwargs, world)) == shas(world)[expected]


def test_resolve_without_arguments_uses_the_projects_default_branch(world: World) -> None:
    project = replace(world.project, default_branch="feature/x")
    assert world.host.resolve(project) == world.feature
    with pytest.raises(UnknownRevision) as info:
        world.host.resolve(replace(world.project, default_branch="trunk"))
    assert info.value.message == 'Branch "trunk" not found in the repository'


RESOLVE_ERRORS = [
    pytest.param({"branch": "nope"}, 'Branch "nope" not found in the repository', id="branch"),
    pytest.param({"tag": "v9"}, 'Tag "v9" not found in the repository', id="tag"),
    pytest.param({"revision": "abc0"}, 'Revision "abc0" not found in the repository', id="revision"),
    pytest.param({"revision": "main"}, 'Revision "main" not found in the repository', id="revision-not-hex"),
    pytest.param({"revision": "abc"}, 'Revision "abc" not found in the repository', id="revision-too-short"),
    pytest.param(
        {"revision": "f" * 40}, f'Revision "{"f" * 40}" not found in the repository', id="full-sha-missing"
    ),
    pytest.param({"branch": "main~1"}, 'Branch "main~1" not found in the repository', id="branch-expression"),
    pytest.param({"branch": "main^{tree}"}, 'Branch "main^{tree}" not found in the repository', id="peel"),
    pytest.param({"branch": "a b"}, 'Branch "a b" not found in the repository', id="branch-with-space"),
    pytest.param({"tag": "v1..main"}, 'Tag "v1..main" not found in the repository', id="tag-range"),
    pytest.param({"tag": "v1", "branch": "nope"}, None, id="tag-wins-even-over-a-missing-branch"),
    pytest.param(
        {"branch": "main", "revision": "0000000"},
        'Revision "0000000" not found in the repository',
        id="missing-revision-with-branch",
    ),
]


@pytest.mark.parametrize(("kwargs", "message"), RESOLVE_ERRORS)
def test_resolve_and_snapshot_errors(world: World, kwargs: dict[str, str], message: str | None) -> None:
    if message is None:  # a control row: nothing is wrong
        assert world.host.resolve(world.project, **kwargs) == world.first
        return
    with pytest.raises(UnknownRevision) as info:
        world.host.resolve(world.project, **kwargs)
    assert info.value.message == message
    with pytest.raises(UnknownRevision) as info:
        world.host.snapshot(world.project, path=".circleci/config.yml", **kwargs)
    assert info.value.message == message


def test_a_ref_named_like_a_revision_hides_that_revision(world: World) -> None:
    """git reads a short hex name as a ref first; a ref that points elsewhere means "not found"."""
    hex_name = world.second[:8]
    world.origin.set_branch(hex_name, world.first)
    world.host.sync(world.project)
    with pytest.raises(UnknownRevision) as info:
        world.host.resolve(world.project, revision=hex_name)
    assert info.value.message == f'Revision "{hex_name}" not found in the repository'
    assert world.host.resolve(world.project, revision=world.second[:9]) == world.second
    assert world.host.resolve(world.project, branch=hex_name) == world.first


@pytest.mark.parametrize("kind", ["branch", "tag", "revision"])
def test_option_like_names_are_refused(world: World, kind: str) -> None:
    name = "--output=/tmp/x"
    expected = f'Invalid {kind} "{name}": it must not start with "-"'
    with pytest.raises(InvalidRequest) as info:
        world.host.resolve(world.project, **{kind: name})
    assert not isinstance(info.value, UnknownRevision)
    assert info.value.message == expected
    with pytest.raises(InvalidRequest) as info:
        world.host.snapshot(world.project, path="x", **{kind: name})
    assert not isinstance(info.value, UnknownRevision)
    assert info.value.message == expected


# ------------------------------------------------------------------ snapshot


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="default-branch"),
        pytest.param({"branch": "feature/x"}, id="branch-with-slash"),
        pytest.param({"tag": "v1"}, id="annotated-tag"),
        pytest.param({"revision": "{first8}"}, id="abbreviated-revision"),
        pytest.param({"branch": "feature/x", "revision": "{first}"}, id="revision-wins"),
    ],
)
def test_snapshot_agrees_with_the_separate_calls(world: World, kwargs: dict[str, str]) -> None:
    args = fill(kwargs, world)
    snap = world.host.snapshot(world.project, path=".circleci/config.yml", **args)
    sha = world.host.resolve(world.project, **args)
    assert snap.sha == sha
    assert snap.commit == world.host.commit(world.project, sha)
    assert snap.file_text == world.host.read_file(world.project, sha, ".circleci/config.yml") == CONFIG


@pytest.mark.parametrize(
    ("path", "text"),
    [
        pytest.param(".circleci/config.yml", CONFIG, id="present"),
        pytest.param("./.circleci/config.yml", CONFIG, id="dot-slash"),
        pytest.param("src/app.py", APP, id="inherited-from-the-parent"),
        pytest.param("nothing/here.yml", None, id="absent"),
        pytest.param(".circleci", None, id="directory"),
    ],
)
def test_snapshot_file(world: World, path: str, text: str | None) -> None:
    assert world.host.snapshot(world.project, branch="main", path=path).file_text == text


# ------------------------------------------------------------------ commit


def test_commit_fields(world: World) -> None:
    commit = world.host.commit(world.project, world.second)
    assert commit.sha == world.second
    assert (commit.subject, commit.body) == ("Add the readme", "A body line.\n\nSecond paragraph.")
    assert (commit.author_name, commit.author_email) == ("Ada Author", "ada@example.com")
    assert (commit.committer_name, commit.committer_email) == ("Carl Committer", "carl@example.com")
    assert commit.author_date == "2024-03-01T10:20:30+01:00"  # the offset is kept, not made UTC
    assert commit.committer_date == "2024-03-02T11:00:00-05:00"
    first = world.host.commit(world.project, world.first)
    assert (first.subject, first.body) == ("First commit", "")


def test_commit_by_abbreviated_sha_gives_the_full_one(world: World) -> None:
    assert world.host.commit(world.project, world.second[:10]).sha == world.second


@pytest.mark.parametrize(
    ("message", "subject", "body"),
    [
        pytest.param("One line", "One line", "", id="subject-only"),
        pytest.param("Subject\n\nBody\n", "Subject", "Body", id="subject-and-body"),
        pytest.param("Line one\nline two\n\nBody", "Line one", "line two\n\nBody", id="two-line-subject"),
        pytest.param(
            "  Ünïcode subject\twith tab  \n\n\n\nbody\x01control   \n\n\n\nlast\n\n\n",
            "Ünïcode subject\twith tab",
            "body\x01control\n\nlast",
            id="unicode-tabs-and-blank-lines",
        ),
        pytest.param("\n\nLate subject\n   \nbody", "Late subject", "body", id="leading-blank-lines"),
    ],
)
def test_commit_subject_and_body(world: World, message: str, subject: str, body: str) -> None:
    sha = world.origin.commit({"odd.txt": message}, message)
    world.host.sync(world.project)
    commit = world.host.commit(world.project, sha)
    assert (commit.subject, commit.body) == (subject, body)


@pytest.mark.parametrize(
    "sha", ["0" * 40, "0000", "xyz", ""], ids=["missing", "short-missing", "not-hex", "empty"]
)
def test_commit_unknown(world: World, sha: str) -> None:
    with pytest.raises(UnknownRevision) as info:
        world.host.commit(world.project, sha)
    assert info.value.message == f'Revision "{sha}" not found in the repository'


# ------------------------------------------------------------------ read_file


@pytest.mark.parametrize(
    ("at", "path", "text"),
    [
        pytest.param("{first}", ".circleci/config.yml", CONFIG, id="present"),
        pytest.param("{first}", "./.circleci/config.yml", CONFIG, id="dot-slash"),
        pytest.param("{first}", "/.circleci/config.yml", CONFIG, id="leading-slash"),
        pytest.param("{first8}", ".circleci/config.yml", CONFIG, id="abbreviated-sha"),
        pytest.param("{first}", "README.md", None, id="absent"),
        pytest.param("{second}", "README.md", "hello\n", id="added-later"),
        pytest.param("{second}", "src/app.py", APP, id="inherited"),
        pytest.param("{feature}", "src/app.py", None, id="deleted"),
        pytest.param("{second}", ".circleci", None, id="directory"),
        pytest.param("{second}", "src", None, id="directory-of-a-file"),
        pytest.param("0" * 40, "README.md", None, id="unknown-sha"),
    ],
)
def test_read_file(world: World, at: str, path: str, text: str | None) -> None:
    assert world.host.read_file(world.project, at.format(**shas(world)), path) == text


def test_read_file_with_a_name_that_is_not_a_sha(world: World) -> None:
    with pytest.raises(UnknownRevision) as info:
        world.host.read_file(world.project, "main", "README.md")
    assert info.value.message == 'Revision "main" not found in the repository'


# ------------------------------------------------------------------ checkout


def working_files(dest: Path) -> dict[str, str]:
    """Every file under dest but .git, by relative path."""
    return {
        str(p.relative_to(dest)): p.read_text()
        for p in dest.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(dest).parts
    }


def test_checkout_of_a_branch_writes_the_commits_files(world: World, tmp_path: Path) -> None:
    dest = tmp_path / "ws" / "project"
    world.host.checkout(world.project, world.feature, dest, branch="feature/x")
    assert working_files(dest) == {
        ".circleci/config.yml": CONFIG,
        "README.md": "hello\n",
        "feature.txt": "x\n",
    }
    assert (dest / ".git" / "HEAD").read_text() == "ref: refs/heads/feature/x\n"


@pytest.mark.parametrize("tag", [None, "v1"], ids=["revision", "tag"])
def test_checkout_without_a_branch_detaches_head(world: World, tmp_path: Path, tag: str | None) -> None:
    world.host.checkout(world.project, world.first, tmp_path / "co", tag=tag)
    assert working_files(tmp_path / "co") == {".circleci/config.yml": CONFIG, "src/app.py": APP}
    assert (tmp_path / "co" / ".git" / "HEAD").read_text() == f"{world.first}\n"


def test_checkout_into_an_empty_directory(world: World, tmp_path: Path) -> None:
    dest = tmp_path / "empty"
    dest.mkdir()
    world.host.checkout(world.project, world.second, dest, branch="main")
    assert working_files(dest)["README.md"] == "hello\n"


def test_checkout_into_a_previous_checkout(world: World, tmp_path: Path) -> None:
    """Tracked files follow the new commit (local changes dropped); untracked files stay."""
    dest = tmp_path / "ws"
    world.host.checkout(world.project, world.second, dest, branch="main")
    (dest / "README.md").write_text("local change\n")
    (dest / "untracked.txt").write_text("kept\n")
    world.host.checkout(world.project, world.feature, dest, branch="feature/x")
    assert working_files(dest) == {
        ".circleci/config.yml": CONFIG,
        "README.md": "hello\n",
        "feature.txt": "x\n",
        "untracked.txt": "kept\n",
    }
    assert not (dest / "src").exists()  # its only file was deleted on the branch
    assert (dest / ".git" / "HEAD").read_text() == "ref: refs/heads/feature/x\n"


def test_checkout_of_a_commit_newer_than_the_mirror(world: World, tmp_path: Path) -> None:
    world.host.sync(world.project)
    newer = world.origin.commit({"new.txt": "n\n"}, "Newer")
    world.host.checkout(world.project, newer, tmp_path / "co", branch="main")
    assert working_files(tmp_path / "co")["new.txt"] == "n\n"


def test_checkout_refuses_a_busy_directory(world: World, tmp_path: Path) -> None:
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "file").write_text("x")
    with pytest.raises(RepositoryError) as info:
        world.host.checkout(world.project, world.second, dest)
    assert info.value.message == (
        f"Directory ({dest}) you are trying to checkout to is not empty and not a git repository"
    )


def test_checkout_of_an_unknown_commit_fails(world: World, tmp_path: Path) -> None:
    with pytest.raises(RepositoryError):
        world.host.checkout(world.project, "1" * 40, tmp_path / "x")


def test_checkout_refuses_option_like_branches(world: World, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest) as info:
        world.host.checkout(world.project, world.second, tmp_path / "x", branch="--force")
    assert info.value.message == 'Invalid branch "--force"'
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ the fake's own extras


URL = "https://git.example/acme/widget.git"
PROJECT = Project(id=1, vcs_type=VcsType.GITHUB, username="acme", reponame="widget", repo_url=URL)


def test_fake_counts_syncs_and_a_first_read_makes_the_mirror() -> None:
    fake = FakeSourceHost()
    fake.add_commit(URL, files={"a": "1"})
    assert fake.sync_count(PROJECT) == 0
    fake.resolve(PROJECT)
    assert fake.sync_count(PROJECT) == 1
    fake.sync(PROJECT)
    assert fake.sync_count(PROJECT) == 2
    assert fake.sync_count(replace(PROJECT, id=2)) == 0  # another project has its own mirror


def test_fake_unreachable_repository() -> None:
    fake = FakeSourceHost()
    sha = fake.add_commit(URL, files={"a": "1"})
    fake.sync(PROJECT)
    fake.make_unreachable(URL, "fatal: the network is down")
    for call in (lambda: fake.sync(PROJECT), lambda: fake.probe(URL)):
        with pytest.raises(RepositoryError) as info:
            call()
        assert info.value.message == "fatal: the network is down"
    assert fake.resolve(PROJECT) == sha  # the mirror still answers, as git's does
    with pytest.raises(RepositoryError):
        fake.resolve(replace(PROJECT, id=2))  # no mirror yet: making it needs the network
    fake.make_reachable(URL)
    fake.sync(PROJECT)
    assert fake.sync_count(PROJECT) == 2


def test_fake_shas_are_deterministic_hex() -> None:
    def build() -> list[str]:
        fake = FakeSourceHost()
        return [fake.add_commit(URL, files={"a": str(n)}, message=f"commit {n}") for n in range(3)]

    first, again = build(), build()
    assert first == again
    assert len(set(first)) == 3
    assert all(len(sha) == 40 and int(sha, 16) >= 0 for sha in first)


def test_fake_files_and_parents() -> None:
    fake = FakeSourceHost()
    fake.add_repo(URL, default_branch="trunk")
    base = fake.add_commit(URL, branch="trunk", files={"a": "1", "d/b": "2"})
    side = fake.add_commit(URL, branch="side", files={"d/b": None, "c": "3"})
    other = fake.add_commit(URL, branch="other", parent=base, files={})
    assert fake.files(side) == {"a": "1", "c": "3"}
    assert fake.files(other) == fake.files(base) == {"a": "1", "d/b": "2"}
    assert fake.probe(URL) == "trunk"


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda f: f.add_commit(URL, files={"a/../b": "x"}), id="path-with-dot-dot"),
        pytest.param(lambda f: f.add_commit(URL, files={"a": "x", "a/b": "y"}), id="file-and-directory"),
        pytest.param(lambda f: f.add_commit(URL, message=" \n\n "), id="empty-message"),
        pytest.param(lambda f: f.add_commit(URL, author="nobody"), id="author-without-email"),
        pytest.param(lambda f: f.add_commit(URL, author_date=datetime(2024, 1, 1)), id="naive-date"),
        pytest.param(lambda f: f.add_commit(URL, branch="-x"), id="option-like-branch"),
        pytest.param(lambda f: f.tag(URL, "v1", "0" * 40), id="tag-of-an-unknown-commit"),
        pytest.param(lambda f: f.add_commit(URL, parent="0" * 40), id="unknown-parent"),
    ],
)
def test_fake_refuses_what_git_could_not_store(build: object) -> None:
    fake = FakeSourceHost()
    fake.add_repo(URL)
    with pytest.raises(ValueError):
        build(fake)  # type: ignore[operator]


# ------------------------------------------------------------------ list_root and refs (inference, poller)


@pytest.mark.parametrize(
    ("at", "names"),
    [
        pytest.param("first", (".circleci/", "src/"), id="first"),
        pytest.param("second", (".circleci/", "README.md", "src/"), id="second"),
        pytest.param("feature", (".circleci/", "README.md", "feature.txt"), id="feature-dropped-src"),
    ],
)
def test_list_root(world: World, at: str, names: tuple[str, ...]) -> None:
    assert world.host.list_root(world.project, shas(world)[at]) == names


@pytest.mark.parametrize(
    ("at", "under", "names"),
    [
        pytest.param("first", "src", ("app.py",), id="directory"),
        pytest.param("first", "src/", ("app.py",), id="trailing-slash"),
        pytest.param("feature", "src", (), id="gone-directory"),
        pytest.param("first", "src/app.py", (), id="a-file"),
        pytest.param("first", "", (".circleci/", "src/"), id="top-level"),
    ],
)
def test_list_root_under_a_directory(world: World, at: str, under: str, names: tuple[str, ...]) -> None:
    assert world.host.list_root(world.project, shas(world)[at], under) == names  # general.build_dir


def test_list_root_of_an_unknown_commit(world: World) -> None:
    with pytest.raises(UnknownRevision):
        world.host.list_root(world.project, "0" * 40)


def test_refs_as_of_the_last_sync(world: World) -> None:
    expected = {
        "refs/heads/main": world.second,
        "refs/heads/feature/x": world.feature,
        "refs/tags/v1": world.first,  # the annotated tag, peeled to its commit
    }
    assert world.host.refs(world.project) == expected
    newer = world.origin.commit({"n.txt": "n\n"}, "Newer")
    world.origin.delete_branch("feature/x")
    assert world.host.refs(world.project) == expected  # not synced yet
    world.host.sync(world.project)
    assert world.host.refs(world.project) == {"refs/heads/main": newer, "refs/tags/v1": world.first}
