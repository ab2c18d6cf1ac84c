"""Fixtures shared by end-to-end tests: a project repository and a server that builds it.

A test file that needs another set-up defines its own `repo`/`server`, which take precedence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from circlet.harness import ServerProcess, make_repo

SLUG = "gh/acme/widget"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with one commit (a README), no CircleCI config yet."""
    path = tmp_path / "widget"
    make_repo(path, {"README.md": "hello\n"})
    return path


@pytest.fixture
def server(tmp_path: Path, repo: Path) -> Iterator[ServerProcess]:
    """`circlet serve` (2 slots) with `repo` added as gh/acme/widget and an API token."""
    srv = ServerProcess(tmp_path / "data", slots=2)
    with srv:
        srv.cli("project", "add", SLUG, "--repo", str(repo))
        srv.make_token()
        yield srv
