"""End to end: circle.yml's deployment runs on container 0 only when every container passed
(config.md 12.1), on a real server with a real git repository and processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from circlet.harness import ServerProcess, commit_files

pytestmark = pytest.mark.timeout(180)

SLUG = "gh/acme/widget"
CIRCLE = """\
test:
  override:
    - '{test}':
        parallel: true
deployment:
  production:
    branch: main
    commands:
      - echo deploying from $CIRCLE_NODE_INDEX
"""
DEPLOY = "echo deploying from $CIRCLE_NODE_INDEX"


def build_with(server: ServerProcess, repo: Path, test: str) -> dict[str, Any]:
    commit_files(repo, {"circle.yml": CIRCLE.format(test=test)}, message=test)
    status, build = server.request("POST", f"/api/v1.1/project/{SLUG}/tree/main", {"parallel": 2})
    assert status == 201, build
    return server.wait_finished(SLUG, build["build_num"], timeout=60)  # type: ignore[no-any-return]


def actions(build: dict[str, Any]) -> dict[str, list[tuple[int, str]]]:
    return {s["name"]: [(a["index"], a["status"]) for a in s["actions"]] for s in build["steps"]}


def test_deployment_waits_for_every_container(server: ServerProcess, repo: Path) -> None:
    failing = build_with(server, repo, '[ "$CIRCLE_NODE_INDEX" = 0 ] || { sleep 1; exit 1; }')
    assert failing["outcome"] == "failed"
    shown = actions(failing)
    assert shown.get(DEPLOY, []) == []  # container 1 failed: container 0 does not deploy
    for teardown in ("Collect test metadata", "Collect artifacts"):
        assert shown[teardown] == [(0, "success"), (1, "success")]

    passing = build_with(server, repo, "sleep 0.5")
    assert passing["outcome"] == "success"
    shown = actions(passing)
    assert shown[DEPLOY] == [(0, "success")]
    assert shown["Collect artifacts"] == [(0, "success"), (1, "success")]
