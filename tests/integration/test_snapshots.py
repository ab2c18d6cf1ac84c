"""A trigger of a commit the mirror already has does not fetch (snapshots.py), on real git."""

from __future__ import annotations

from pathlib import Path

import pytest

from circlet.core.errors import InvalidRequest, UnknownRevision
from circlet.core.model import Project, VcsType
from circlet.harness import commit_files, git, make_repo
from circlet.snapshots import build_snapshot
from circlet.vcs.git import GitSourceHost

CONFIG = ".circleci/config.yml"


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


@pytest.fixture
def project(tmp_path: Path) -> Project:
    repo = tmp_path / "repo"
    make_repo(repo, {CONFIG: "version: 2\n", "README": "x\n"})
    return Project(id=1, vcs_type=VcsType.GITHUB, username="a", reponame="r", repo_url=str(repo))


def test_a_known_full_sha_is_built_without_fetching(tmp_path: Path, project: Project) -> None:
    source = GitSourceHost(tmp_path / "mirrors")
    first = build_snapshot(source, project, branch="main", path=CONFIG)  # makes the mirror
    repo = Path(project.repo_url)
    repo.rename(tmp_path / "gone")  # from now on any fetch fails

    again = build_snapshot(source, project, branch="main", revision=first.sha, path=CONFIG)

    assert (again.sha, again.file_text) == (first.sha, "version: 2\n")
    with pytest.raises(InvalidRequest, match="Could not fetch"):
        build_snapshot(source, project, branch="main", path=CONFIG)  # a branch: fetched
    with pytest.raises(InvalidRequest, match="Could not fetch"):
        build_snapshot(source, project, revision=first.sha[:12], path=CONFIG)  # abbreviated: fetched


def test_a_new_sha_is_fetched_first(tmp_path: Path, project: Project) -> None:
    source = GitSourceHost(tmp_path / "mirrors")
    build_snapshot(source, project, branch="main", path=CONFIG)
    repo = Path(project.repo_url)
    commit_files(repo, {CONFIG: "version: 2.1\n"}, message="newer")

    snap = build_snapshot(source, project, revision=head(repo), path=CONFIG)

    assert (snap.sha, snap.file_text) == (head(repo), "version: 2.1\n")
    with pytest.raises(UnknownRevision):
        build_snapshot(source, project, revision="0" * 40, path=CONFIG)
