"""End to end: the 2.0 job-level `branches` rule on a real server (config.md 5.5, docs/workflows.md)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from circlet.harness import ServerProcess, commit_files, git, make_repo

pytestmark = pytest.mark.timeout(120)

SLUG = "gh/acme/widget"
CONFIG = """\
version: 2
jobs:
  build:
    docker: [{image: cimg/base:stable}]
    branches:
      only: [main, /release-.*/]
    steps: [{run: echo built}]
"""


def push(server: ServerProcess, repo: Path, branch: str, sha: str) -> tuple[int, Any]:
    body = {
        "ref": f"refs/heads/{branch}",
        "before": "0" * 40,
        "after": sha,
        "repository": {"full_name": "acme/widget", "clone_url": str(repo)},
    }
    req = urllib.request.Request(
        server.base + "/api/v1.1/hooks/push", data=json.dumps(body).encode(), method="POST"
    )
    req.add_header("Content-Type", "application/json")
    req.add_header("X-GitHub-Event", "push")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_push_of_a_branch_the_build_job_excludes_does_not_run(tmp_path: Path) -> None:
    repo = tmp_path / "widget"
    make_repo(repo, {".circleci/config.yml": CONFIG})
    with ServerProcess(tmp_path / "data") as server:
        server.cli("project", "add", SLUG, "--repo", str(repo))
        server.make_token()
        git(repo, "checkout", "-q", "-b", "feature")
        sha = commit_files(repo, {"f.txt": "f\n"}, message="Feature")
        status, answer = push(server, repo, "feature", sha)
        assert status == 201, answer
        [made] = answer["builds"]
        assert (made["lifecycle"], made["dont_build"]) == ("not_run", "branch-not-whitelisted")
        status, build = server.request("GET", f"/api/v1.1/project/{SLUG}/{made['build_num']}")
        assert status == 200
        assert (build["status"], build["outcome"], build["why"]) == ("not_run", None, "github")
        # the same branch through the API is built: API triggers are not filtered
        status, body = server.request("POST", f"/api/v1.1/project/{SLUG}/tree/feature")
        assert status == 201, body
        assert server.wait_finished(SLUG, body["build_num"])["outcome"] == "success"
        git(repo, "checkout", "-q", "-b", "release-1")
        sha = commit_files(repo, {"r.txt": "r\n"}, message="Release")
        status, answer = push(server, repo, "release-1", sha)
        assert status == 201 and answer["builds"][0]["dont_build"] is None
        assert server.wait_finished(SLUG, answer["builds"][0]["build_num"])["outcome"] == "success"
