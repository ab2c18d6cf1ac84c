"""End to end: "retry without cache" (api-v1.1.md 8.2) on a real server with a real git
repository and real runner processes: the retry records `no_dependency_cache: true`, its
restore_cache steps (2.0 and circle.yml's cache_directories) skip with a log line, and its
save_cache steps still save."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest
from test_circle_yml import CACHED  # type: ignore[import-not-found]
from test_circle_yml import LOOK as CACHED_LOOK

from circlet.harness import ServerProcess, commit_files
from circlet.runner.cache import SKIPPED_RESTORE

pytestmark = pytest.mark.timeout(180)

SLUG = "gh/acme/widget"
P = f"/api/v1.1/project/{SLUG}"


def finished(server: ServerProcess, answer: tuple[int, Any]) -> dict[str, Any]:
    status, build = answer
    assert status in (200, 201), build
    return server.wait_finished(SLUG, build["build_num"], timeout=60)  # type: ignore[no-any-return]


def output(build: dict[str, Any], name: str) -> str:
    (action,) = next(s for s in build["steps"] if s["name"] == name)["actions"]
    with urllib.request.urlopen(action["output_url"] + "&file=true") as resp:
        text: str = resp.read().decode()
        return text


CONFIG = """\
version: 2
jobs:
  build:
    docker: [{image: cimg/base:stable}]
    steps:
      - restore_cache: {keys: ['v1-{{ .Branch }}']}
      - run: {name: Look, command: 'cat ~/deps/stamp 2>/dev/null || echo absent'}
      - run: {name: Make, command: 'mkdir -p ~/deps && echo from-$CIRCLE_BUILD_NUM > ~/deps/stamp'}
      - save_cache: {key: 'v1-{{ .Branch }}-{{ .BuildNum }}', paths: [~/deps]}
"""


def test_a_retry_without_cache_skips_restore_and_still_saves(server: ServerProcess, repo: Path) -> None:
    commit_files(repo, {".circleci/config.yml": CONFIG}, message="Cached")
    first = finished(server, server.request("POST", f"{P}/tree/main"))
    assert first["outcome"] == "success"
    assert output(first, "Look").strip() == "absent"
    assert "Stored Cache to v1-main-1" in output(first, "Saving Cache")

    normal = finished(server, server.request("POST", f"{P}/1/retry"))
    assert (normal["outcome"], normal["no_dependency_cache"]) == ("success", False)
    assert "Found a cache from build 1 at v1-main-1" in output(normal, "Restoring Cache")
    assert output(normal, "Look").strip() == "from-1"

    bare = finished(server, server.request("POST", f"{P}/1/retry", {"no-cache": "true"}))
    num = bare["build_num"]
    assert (bare["outcome"], bare["retry_of"], bare["no_dependency_cache"]) == ("success", 1, True)
    restore = output(bare, "Restoring Cache")
    assert SKIPPED_RESTORE in restore and "Found a cache" not in restore
    assert output(bare, "Look").strip() == "absent"
    assert f"Stored Cache to v1-main-{num}" in output(bare, "Saving Cache")

    # The cache the no-cache retry saved is the newest: the next build restores it.
    after = finished(server, server.request("POST", f"{P}/tree/main"))
    assert output(after, "Look").strip() == f"from-{num}"
    assert after["no_dependency_cache"] is False


CIRCLE_YML, LOOK = CACHED, CACHED_LOOK  # (test_circle_yml.py's cache_directories project)


def test_a_circle_yml_retry_without_cache_by_query_skips_cache_directories(
    server: ServerProcess, repo: Path
) -> None:
    commit_files(repo, {"circle.yml": CIRCLE_YML}, message="1.0 cached")
    first = finished(server, server.request("POST", f"{P}/tree/main"))
    assert first["outcome"] == "success"
    assert output(first, LOOK).strip() == "fresh"

    bare = finished(server, server.request("POST", f"{P}/1/retry?no-cache=true"))
    assert (bare["outcome"], bare["no_dependency_cache"]) == ("success", True)
    assert SKIPPED_RESTORE in output(bare, "Restore cache")
    assert output(bare, LOOK).strip() == "fresh"
    assert "Stored Cache to" in output(bare, "Save cache")
