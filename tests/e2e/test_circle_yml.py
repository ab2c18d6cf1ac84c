"""End to end: circle.yml's general.branches and tag pushes, $CIRCLE_TEST_REPORTS and
$CIRCLE_ARTIFACTS, cache_directories and 1.0 parallel defaults (config.md 12), on a real server
with real git repositories, webhooks and processes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest

from circlet.harness import ServerProcess, commit_files, git

pytestmark = pytest.mark.timeout(180)

SLUG = "gh/acme/widget"
P = f"/api/v1.1/project/{SLUG}"


def trigger(server: ServerProcess, branch: str = "main", body: Any = None) -> dict[str, Any]:
    status, build = server.request("POST", f"{P}/tree/{branch}", body)
    assert status == 201, build
    return server.wait_finished(SLUG, build["build_num"], timeout=60)  # type: ignore[no-any-return]


def push(server: ServerProcess, repo: Path, ref: str, sha: str) -> dict[str, Any]:
    """A GitHub push delivery; the answer's `builds` entry for the project."""
    body = {
        "ref": ref,
        "after": sha,
        "repository": {"full_name": "acme/widget", "clone_url": str(repo)},
        "head_commit": {"id": sha, "message": "push"},
    }
    req = urllib.request.Request(
        server.base + "/api/v1.1/hooks/push", data=json.dumps(body).encode(), method="POST"
    )
    req.add_header("Content-Type", "application/json")
    req.add_header("X-GitHub-Event", "push")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raise AssertionError(err.read()) from None
    (result,) = answer["builds"]
    return dict(result)


def output(action: dict[str, Any]) -> str:
    with urllib.request.urlopen(action["output_url"] + "&file=true") as resp:
        text: str = resp.read().decode()
        return text


def step(build: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in build["steps"] if s["name"] == name)


# ------------------------------------------------------------------ general.branches, tag pushes

BRANCHES = """\
general:
  branches:
    ignore:
      - /wip-.*/
test:
  override:
    - echo tests
deployment:
  release:
    tag: /v[0-9]+/
    commands:
      - echo deploying $CIRCLE_TAG
"""


def test_pushes_follow_general_branches_and_deployment_tags(server: ServerProcess, repo: Path) -> None:
    commit_files(repo, {"circle.yml": BRANCHES}, message="1.0")
    git(repo, "checkout", "-q", "-b", "wip-thing")
    sha = commit_files(repo, {"w.txt": "w\n"}, message="Work in progress")
    ignored = push(server, repo, "refs/heads/wip-thing", sha)
    assert (ignored["lifecycle"], ignored["dont_build"]) == ("not_run", "branch-blacklisted")
    _, build = server.request("GET", f"{P}/{ignored['build_num']}")
    assert (build["status"], build["dont_build"], build["branch"]) == (
        "not_run",
        "branch-blacklisted",
        "wip-thing",
    )
    assert build["steps"] == []
    assert build["circle_yml"] == {"string": BRANCHES}  # the config, as a build that ran shows it
    # An API trigger builds the branch anyway, as the 2.0 rule does.
    forced = trigger(server, "wip-thing")
    assert (forced["outcome"], forced["dont_build"]) == ("success", None)
    # A branch the rule allows builds on push.
    git(repo, "checkout", "-q", "main")
    allowed = push(server, repo, "refs/heads/main", git(repo, "rev-parse", "HEAD"))
    assert allowed["dont_build"] is None
    assert server.wait_finished(SLUG, allowed["build_num"])["outcome"] == "success"
    # Tags: only one a deployment section's `tag` matches builds; another builds nothing.
    git(repo, "tag", "nightly")
    git(repo, "tag", "v2")
    sha = git(repo, "rev-parse", "HEAD")
    assert push(server, repo, "refs/tags/nightly", sha)["build_num"] is None
    tagged = server.wait_finished(SLUG, push(server, repo, "refs/tags/v2", sha)["build_num"])
    assert (tagged["vcs_tag"], tagged["outcome"]) == ("v2", "success")
    assert "deploying v2" in output(step(tagged, "echo deploying $CIRCLE_TAG")["actions"][0])
    _, listed = server.request("GET", P + "?limit=100")
    assert sorted(b["build_num"] for b in listed) == [1, 2, 3, 4]  # the nightly push recorded nothing


# ------------------------------------------------------------------ test reports and artifacts

JUNIT = (
    '<testsuite name="unit"><testcase classname="widget" name="adds" time="0.5"/>'
    '<testcase classname="widget" name="breaks"><failure message="boom">trace</failure></testcase>'
    "</testsuite>"
)
REPORTS = f"""\
general:
  artifacts:
    - out/report.txt
test:
  override:
    - mkdir -p $CIRCLE_TEST_REPORTS/junit && echo '{JUNIT}' > $CIRCLE_TEST_REPORTS/junit/results.xml
    - mkdir -p $CIRCLE_ARTIFACTS/sub out && echo hello from 1.0 > $CIRCLE_ARTIFACTS/sub/hello.txt
    - echo report > out/report.txt
    - "false"
"""


def test_reports_and_artifacts_are_collected_after_the_last_phase(server: ServerProcess, repo: Path) -> None:
    commit_files(repo, {"circle.yml": REPORTS}, message="1.0 reports")
    build = trigger(server)
    assert build["outcome"] == "failed"  # a test failed; the teardown still ran
    teardown = [(s["name"], s["actions"][0]["type"], s["actions"][0]["status"]) for s in build["steps"][-3:]]
    assert teardown == [
        ("Collect test metadata", "teardown", "success"),
        ("Collect artifacts", "teardown", "success"),
        ("Collect artifacts: out/report.txt", "teardown", "success"),
    ]
    num = build["build_num"]
    status, tests = server.request("GET", f"{P}/{num}/tests")
    assert status == 200
    assert sorted((t["name"], t["result"], t["source"]) for t in tests["tests"]) == [
        ("adds", "success", "junit"),
        ("breaks", "failure", "junit"),
    ]
    status, artifacts = server.request("GET", f"{P}/{num}/artifacts")
    assert status == 200
    assert [(a["path"], a["pretty_path"], a["node_index"]) for a in artifacts] == [
        ("$CIRCLE_ARTIFACTS/sub/hello.txt", "$CIRCLE_ARTIFACTS/sub/hello.txt", 0),
        ("widget/out/report.txt", "widget/out/report.txt", 0),
    ]
    with httpx.Client(timeout=30) as http:
        assert http.get(artifacts[0]["url"]).content == b"hello from 1.0\n"
        assert http.get(artifacts[1]["url"]).content == b"report\n"


def test_a_failed_dependency_phase_still_collects_the_artifacts(server: ServerProcess, repo: Path) -> None:
    circle = "dependencies:\n  override:\n    - echo partial > $CIRCLE_ARTIFACTS/log.txt && exit 3\n"
    commit_files(repo, {"circle.yml": circle + "test:\n  override:\n    - echo never\n"}, message="Broken")
    build = trigger(server)
    assert build["outcome"] == "failed"
    names = [s["name"] for s in build["steps"]]
    assert "echo never" not in names  # config.md 12.1: the failure stops the phases
    assert names[-2:] == ["Collect test metadata", "Collect artifacts"]
    _, artifacts = server.request("GET", f"{P}/{build['build_num']}/artifacts")
    assert [a["path"] for a in artifacts] == ["$CIRCLE_ARTIFACTS/log.txt"]


# ------------------------------------------------------------------ cache_directories

CACHED = """\
dependencies:
  cache_directories:
    - vendor
  override:
    - test -f vendor/stamp && echo restored $(cat vendor/stamp) || echo fresh
    - mkdir -p vendor && echo from-$CIRCLE_BUILD_NUM > vendor/stamp
test:
  override:
    - echo tests
"""
LOOK = "test -f vendor/stamp && echo restored $(cat vendor/stamp) || echo fresh"


def test_cache_directories_come_back_in_the_next_build(server: ServerProcess, repo: Path) -> None:
    commit_files(repo, {"circle.yml": CACHED}, message="Cached")
    first = trigger(server)
    assert first["outcome"] == "success"
    names = [s["name"] for s in first["steps"]]
    assert names[2:7] == ["Restore cache", LOOK, names[4], "Save cache", "echo tests"]
    save = step(first, "Save cache")["actions"]
    assert [(a["source"], a["type"], a["status"]) for a in save] == [("cache", "dependencies", "success")]
    assert output(step(first, LOOK)["actions"][0]).strip() == "fresh"
    # Another branch falls back to the default branch's cache (config.md 12.1 DECISION).
    git(repo, "checkout", "-q", "-b", "topic")
    second = trigger(server, "topic")
    assert second["outcome"] == "success"
    assert output(step(second, LOOK)["actions"][0]).strip() == f"restored from-{first['build_num']}"
    # The newest cache wins: topic's own, saved by the second build.
    third = trigger(server, "topic")
    assert output(step(third, LOOK)["actions"][0]).strip() == f"restored from-{second['build_num']}"


# ------------------------------------------------------------------ parallel defaults

PARALLEL = """\
dependencies:
  override:
    - echo deps on $CIRCLE_NODE_INDEX
test:
  override:
    - echo first node only $CIRCLE_NODE_INDEX
    - echo every node $CIRCLE_NODE_INDEX:
        parallel: true
"""


def test_test_commands_run_on_node_0_unless_parallel(server: ServerProcess, repo: Path) -> None:
    commit_files(repo, {"circle.yml": PARALLEL}, message="Parallel")
    build = trigger(server, body={"parallel": 2})
    assert (build["outcome"], build["parallel"]) == ("success", 2)
    shown = {
        s["name"]: [(a["index"], a["parallel"]) for a in s["actions"]] for s in build["steps"] if s["actions"]
    }
    assert shown["echo deps on $CIRCLE_NODE_INDEX"] == [(0, True), (1, True)]
    assert shown["echo first node only $CIRCLE_NODE_INDEX"] == [(0, False)]
    assert shown["echo every node $CIRCLE_NODE_INDEX"] == [(0, True), (1, True)]
    assert shown["Collect artifacts"] == [(0, True), (1, True)]
    only = step(build, "echo first node only $CIRCLE_NODE_INDEX")["actions"][0]
    assert output(only).strip() == "first node only 0"


# ------------------------------------------------------------------ build_dir, owner, inference-only tags

BUILD_DIR = """\
general:
  build_dir: app
dependencies:
  pre:
    - pwd && test -f ../circle.yml && echo whole checkout
deployment:
  theirs:
    branch: main
    owner: someone-else
    commands:
      - echo wrong owner
  ours:
    branch: main
    owner: ACME
    commands:
      - echo deploying from $(pwd)
"""


def test_build_dir_runs_commands_and_inference_inside_the_whole_checkout(
    server: ServerProcess, repo: Path
) -> None:
    commit_files(
        repo,
        {
            "circle.yml": BUILD_DIR,
            "Makefile": "test:\n\techo root tests\n",  # inference looks in build_dir, not here
            "app/Makefile": "test:\n\techo app tests in $$(pwd)\n",
        },
        message="build_dir",
    )
    build = trigger(server)
    assert build["outcome"] == "success", build["messages"]
    checkout = output(step(build, "Checkout code")["actions"][0])
    pre = output(step(build, "pwd && test -f ../circle.yml && echo whole checkout")["actions"][0]).split()
    assert pre[0].endswith("/widget/app") and pre[-2:] == ["whole", "checkout"]
    assert f"Cloning into '{pre[0][: -len('/app')]}'" in checkout  # the repository's top level
    tests = step(build, "make test")["actions"][0]
    assert (tests["source"], tests["type"]) == ("inference", "test")
    assert f"app tests in {pre[0]}" in output(tests)
    # `owner` (config.md 12.1): only the section of the project's username (acme) deploys.
    names = [s["name"] for s in build["steps"]]
    assert "echo wrong owner" not in names
    assert f"deploying from {pre[0]}" in output(step(build, "echo deploying from $(pwd)")["actions"][0])


def test_a_tag_push_without_circle_yml_builds_nothing(server: ServerProcess, repo: Path) -> None:
    sha = commit_files(repo, {"Makefile": "test:\n\techo tests\n"}, message="Inference alone")
    git(repo, "tag", "v1")
    assert push(server, repo, "refs/tags/v1", sha)["build_num"] is None  # spec 12.1, trap 4
    _, listed = server.request("GET", P + "?limit=100")
    assert listed == []
    # A branch push still builds, and so does an API trigger of the tag.
    pushed = push(server, repo, "refs/heads/main", sha)
    assert server.wait_finished(SLUG, pushed["build_num"])["outcome"] == "success"
    status, answer = server.request("POST", f"{P}/build", {"tag": "v1"})
    assert (status, answer) == (200, {"status": 200, "body": "Build created"})
    _, listed = server.request("GET", P + "?limit=100")
    (num,) = [b["build_num"] for b in listed if b["vcs_tag"] == "v1"]
    tagged = server.wait_finished(SLUG, num, timeout=60)
    assert (tagged["vcs_tag"], tagged["outcome"]) == ("v1", "success")
