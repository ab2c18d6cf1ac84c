"""End to end: repositories without .circleci/config.yml (inference, circle.yml), the no_tests
outcome, and the trigger's `parallel` on a real server with real git repositories and processes."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from circlet.harness import ServerProcess, commit_files, config_yaml

pytestmark = pytest.mark.timeout(180)

SLUG = "gh/acme/widget"
P = f"/api/v1.1/project/{SLUG}"
PACKAGE = json.dumps({"name": "widget", "version": "1.0.0", "scripts": {"test": "node test.js"}})


def trigger(server: ServerProcess, body: Any = None) -> dict[str, Any]:
    status, build = server.request("POST", P + "/tree/main", body)
    assert status == 201, build
    return dict(build)


def output(action: dict[str, Any]) -> str:
    with urllib.request.urlopen(action["output_url"] + "&file=true") as resp:
        text: str = resp.read().decode()
        return text


# What every 1.0 build does after its last phase (config.md 12.3).
TEARDOWN = [
    ("Collect test metadata", "teardown", "template", None),
    ("Collect artifacts", "teardown", "template", None),
]


def steps(build: dict[str, Any]) -> list[tuple[str, str, str | None, str | None]]:
    """(name, type, source, bash_command) of each step's first action."""
    return [
        (s["name"], s["actions"][0]["type"], s["actions"][0]["source"], s["actions"][0]["bash_command"])
        for s in build["steps"]
    ]


def test_a_node_project_is_inferred(server: ServerProcess, repo: Path) -> None:
    commit_files(
        repo,
        {"package.json": PACKAGE, "package-lock.json": "{}\n", "test.js": "console.log('node tests ran')\n"},
        message="Node",
    )
    summary = trigger(server)
    build = server.wait_finished(SLUG, summary["build_num"], timeout=90)
    assert (build["outcome"], build["status"]) == ("success", "success"), build["messages"]
    assert steps(build) == [
        ("Spin up Environment", "infrastructure", None, None),
        ("Checkout code", "checkout", "template", None),
        ("npm ci", "dependencies", "inference", "npm ci"),
        ("npm test", "test", "inference", "npm test"),
        *TEARDOWN,
    ]
    assert "node tests ran" in output(build["steps"][3]["actions"][0])
    assert build["messages"] == []


def test_nothing_to_infer_ends_no_tests_then_a_test_target_fixes_it(
    server: ServerProcess, repo: Path
) -> None:
    first = server.wait_finished(SLUG, trigger(server)["build_num"])
    assert (first["outcome"], first["status"], first["failed"]) == ("no_tests", "no_tests", None)
    assert [s["name"] for s in first["steps"]] == [
        "Spin up Environment",
        "Checkout code",
        "Collect test metadata",
        "Collect artifacts",
    ]
    (message,) = first["messages"]
    assert message["type"] == "warning"
    assert "package.json" in message["message"] and "Makefile" in message["message"]
    commit_files(repo, {"Makefile": "test:\n\ttest -f README.md && echo make-tests-ran\n"}, message="Tests")
    second = server.wait_finished(SLUG, trigger(server)["build_num"])
    assert (second["outcome"], second["status"]) == ("success", "fixed")
    assert steps(second)[-3] == ("make test", "test", "inference", "make test")
    assert "make-tests-ran" in output(second["steps"][-3]["actions"][0])


def test_a_python_dependency_failure_stops_the_build(server: ServerProcess, repo: Path) -> None:
    commit_files(repo, {"requirements.txt": "./no-such-package\n", "tests/test_a.py": ""}, message="Py")
    build = server.wait_finished(SLUG, trigger(server)["build_num"], timeout=120)
    assert build["outcome"] == "failed"
    by_name = {s["name"]: s["actions"][0] for s in build["steps"]}
    assert by_name["python3 -m venv ~/venv"]["status"] == "success"
    assert by_name["pip install -r requirements.txt"]["status"] == "failed"
    assert "pytest" not in by_name  # config.md 12.1: a dependencies failure stops the build


CIRCLE_YML = """\
machine:
  environment:
    GREETING: hello
dependencies:
  override:
    - echo deps $GREETING
test:
  override:
    - "false"
    - echo second test ran in $(basename $PWD)
"""


def test_circle_yml_runs_its_phases(server: ServerProcess, repo: Path) -> None:
    commit_files(repo, {"circle.yml": CIRCLE_YML, "package.json": PACKAGE}, message="1.0")
    build = server.wait_finished(SLUG, trigger(server)["build_num"])
    assert build["outcome"] == "failed"
    assert steps(build)[1:] == [
        ("Checkout code", "checkout", "template", None),
        ("echo deps $GREETING", "dependencies", "config", "echo deps $GREETING"),  # override: no npm
        ("false", "test", "config", "false"),
        (
            "echo second test ran in $(basename $PWD)",
            "test",
            "config",
            "echo second test ran in $(basename $PWD)",
        ),
        *TEARDOWN,
    ]
    assert "deps hello" in output(build["steps"][2]["actions"][0])
    # Every test command runs, even after one failed (config.md 12.1), in ~/<reponame>.
    assert "second test ran in widget" in output(build["steps"][4]["actions"][0])


def test_a_broken_circle_yml_makes_a_failed_build_saying_where(server: ServerProcess, repo: Path) -> None:
    commit_files(repo, {"circle.yml": "test:\n  overide: [x]\n"}, message="Typo")
    build = server.wait_finished(SLUG, trigger(server)["build_num"])
    assert build["outcome"] == "failed"
    assert build["messages"][0]["message"].startswith("circle.yml:2 (test.overide): unknown key `overide`")


# ------------------------------------------------------------------ the trigger's `parallel`

NODES_CONFIG = config_yaml(
    ["checkout", {"run": {"name": "where", "command": "echo node=$CIRCLE_NODE_INDEX/$CIRCLE_NODE_TOTAL"}}]
)


def test_parallel_runs_that_many_containers(server: ServerProcess, repo: Path) -> None:
    commit_files(repo, {".circleci/config.yml": NODES_CONFIG}, message="2.0")
    summary = trigger(server, {"parallel": 3})
    build = server.wait_finished(SLUG, summary["build_num"])
    assert (build["outcome"], build["parallel"]) == ("success", 3)
    for step in build["steps"]:
        assert [a["index"] for a in step["actions"]] == [0, 1, 2], step["name"]
    where = next(s for s in build["steps"] if s["name"] == "where")
    assert [output(a).strip() for a in where["actions"]] == ["node=0/3", "node=1/3", "node=2/3"]
    status, answer = server.request("POST", P + "/tree/main", {"parallel": 101})
    assert (status, answer) == (400, {"message": "parallel must be at most 100"})
    assert server.wait_finished(SLUG, trigger(server)["build_num"])["parallel"] == 1  # the job's own


def test_cancel_stops_every_container(server: ServerProcess, repo: Path, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    config = config_yaml(
        [{"run": {"name": "wait", "command": f"echo $$ > {pids}/$CIRCLE_NODE_INDEX; sleep 60"}}]
    )
    commit_files(repo, {".circleci/config.yml": config}, message="Slow")
    num = trigger(server, {"parallel": 3})["build_num"]
    deadline = time.monotonic() + 30
    while len(list(pids.iterdir())) < 3:
        assert time.monotonic() < deadline, "the three containers did not start"
        time.sleep(0.05)
    status, _ = server.request("POST", f"{P}/{num}/cancel")
    assert status == 200
    build = server.wait_finished(SLUG, num)
    assert build["outcome"] == "canceled"
    wait = next(s for s in build["steps"] if s["name"] == "wait")
    assert sorted((a["index"], a["status"]) for a in wait["actions"]) == [(i, "canceled") for i in range(3)]
    for pid_file in pids.iterdir():
        pid = int(pid_file.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
