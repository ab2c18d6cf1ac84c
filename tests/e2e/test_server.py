"""End to end: a real `circlet serve` on loopback, real git repositories, real processes,
the CLI as a user runs it, and the published pycircleci client."""

from __future__ import annotations

import re
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from circlet.harness import ServerProcess, commit_files, config_yaml, git, make_repo

pytestmark = pytest.mark.timeout(180)

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
P = "/api/v1.1/project/gh/acme/widget"

# Every key of the seed's trigger example, which is also the summary every endpoint returns.
SEED_SUMMARY_KEYS = {
    "author_name",
    "build_url",
    "reponame",
    "failed",
    "infrastructure_fail",
    "canceled",
    "all_commit_details",
    "previous",
    "ssh_enabled",
    "author_email",
    "why",
    "build_time_millis",
    "committer_email",
    "parallel",
    "retries",
    "compare",
    "dont_build",
    "committer_name",
    "usage_queued_at",
    "branch",
    "body",
    "author_date",
    "node",
    "committer_date",
    "start_time",
    "stop_time",
    "lifecycle",
    "user",
    "subject",
    "messages",
    "job_name",
    "retry_of",
    "previous_successful_build",
    "outcome",
    "status",
    "vcs_revision",
    "build_num",
    "username",
    "vcs_url",
    "timedout",
    "vcs_tag",
    "queued_at",
}
SEED_ACTION_KEYS = {
    "bash_command",
    "run_time_millis",
    "start_time",
    "end_time",
    "name",
    "exit_code",
    "type",
    "index",
    "status",
    "messages",
    "step",
    "source",
    "failed",
    "continue",
    "parallel",
    "timedout",
    "infrastructure_fail",
}


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "widget"
    make_repo(
        path,
        {
            ".circleci/config.yml": config_yaml(
                [
                    "checkout",
                    {
                        "run": {
                            "name": "Say hello",
                            "command": "echo hello from $CIRCLE_JOB on $CIRCLE_BRANCH; ls README",
                        }
                    },
                    {"run": "echo param=$RUN_EXTRA_TESTS; echo to-stderr >&2"},
                ]
            ),
            "README": "widget\n",
        },
        message="Don't explode when the clock shifts\n\nA body line.\nAnother.",
    )
    return path


@pytest.fixture
def server(tmp_path: Path, repo: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "data", slots=2)
    with srv:
        added = srv.cli("project", "add", "gh/acme/widget", "--repo", str(repo))
        assert "added gh/acme/widget" in added.stdout
        srv.make_token()
        yield srv


def test_cli_token_is_printed_alone_and_bad_repo_is_refused(server: ServerProcess, tmp_path: Path) -> None:
    out = server.cli("token", "create").stdout
    assert re.fullmatch(r"ccl_[A-Za-z0-9_-]{30,}\n", out)
    bad = server.cli("project", "add", "gh/acme/nothing", "--repo", str(tmp_path / "missing"), check=False)
    assert bad.returncode != 0
    assert "nothing" in bad.stderr or "missing" in bad.stderr
    assert "does not appear to be a git repository" in bad.stderr or "not" in bad.stderr


def test_trigger_then_full_build_as_the_seed_shows_it(server: ServerProcess, repo: Path) -> None:
    sha = git(repo, "rev-parse", "HEAD")
    req = urllib.request.Request(
        server.base + P + "/tree/main",
        method="POST",
        data=b'{"build_parameters": {"RUN_EXTRA_TESTS": "true"}}',
        headers={
            "Circle-Token": server.token,
            "Content-Type": "application/json",
            "Accept": "application/json",
        },
    )
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 201
        assert resp.headers["Location"] == f"{server.base}/api/v1.1/project/github/acme/widget/1"
        assert resp.headers["Content-Type"] == "application/json;charset=utf-8"
        import json

        summary = json.loads(resp.read())
    assert set(summary) >= SEED_SUMMARY_KEYS
    assert summary["build_num"] == 1
    assert summary["why"] == "api"
    assert summary["build_parameters"] == {"RUN_EXTRA_TESTS": "true"}
    assert summary["lifecycle"] in ("not_running", "queued", "running")
    assert summary["outcome"] is None
    assert ISO_MS.match(summary["usage_queued_at"])
    assert summary["user"]["login"] == "admin" and summary["user"]["is_user"] is True

    build = server.wait_finished("gh/acme/widget", 1)
    assert set(build) >= SEED_SUMMARY_KEYS
    assert build["vcs_url"] == "https://github.com/acme/widget"
    assert build["build_url"] == f"{server.base}/gh/acme/widget/1"
    assert build["branch"] == "main" and build["vcs_revision"] == sha and build["vcs_tag"] is None
    assert build["committer_name"] == "Charles Babbage" and build["committer_email"] == "charles@example.com"
    assert build["author_name"] == "Ada Lovelace"
    assert build["subject"] == "Don't explode when the clock shifts"
    assert build["body"] == "A body line.\nAnother."
    assert build["committer_date"] == "2024-05-01T10:04:50-07:00"
    assert build["all_commit_details"][0]["commit"] == sha
    assert build["dont_build"] is None
    for key in ("queued_at", "start_time", "stop_time", "usage_queued_at"):
        assert ISO_MS.match(build[key]), key
    assert isinstance(build["build_time_millis"], int) and build["build_time_millis"] >= 0
    assert (build["lifecycle"], build["outcome"], build["status"]) == ("finished", "success", "success")
    assert build["failed"] is None and build["timedout"] is False and build["canceled"] is False
    assert build["retry_of"] is None and build["previous"] is None

    names = [s["name"] for s in build["steps"]]
    assert names == [
        "Spin up Environment",
        "Checkout code",
        "Say hello",
        "echo param=$RUN_EXTRA_TESTS; echo to-stderr >&2",
    ]
    run = build["steps"][2]["actions"][0]
    assert set(run) >= SEED_ACTION_KEYS
    assert (
        run["bash_command"]
        == "#!/bin/bash -eo pipefail\necho hello from $CIRCLE_JOB on $CIRCLE_BRANCH; ls README"
    )
    assert run["exit_code"] == 0 and run["status"] == "success" and run["index"] == 0
    assert run["step"] == 102 and run["type"] == "test" and run["failed"] is None
    assert isinstance(run["run_time_millis"], int)
    assert ISO_MS.match(run["start_time"]) and ISO_MS.match(run["end_time"])

    # output_url works with no credentials and serves the spec's chunk format
    with urllib.request.urlopen(run["output_url"]) as resp:
        import json

        chunks = json.loads(resp.read())
    assert "".join(c["message"] for c in chunks) == "hello from build on main\nREADME\n"
    assert all(c["type"] in ("out", "err") and ISO_MS.match(c["time"]) for c in chunks)
    params = build["steps"][3]["actions"][0]
    with urllib.request.urlopen(params["output_url"] + "&file=true") as resp:
        assert resp.read() == b"param=true\nto-stderr\n"
    # a tampered signature is refused
    status, body = server.request(
        "GET", run["output_url"].replace(server.base, "").replace("sig=", "sig=x"), token="nope"
    )
    assert status == 404 and body == {"message": "Project not found"}


def test_failure_then_fix_then_retry(server: ServerProcess, repo: Path) -> None:
    commit_files(
        repo,
        {
            ".circleci/config.yml": config_yaml(
                [
                    {"run": {"name": "fails", "command": "echo about to fail; exit 3"}},
                    {"run": {"name": "skipped", "command": "echo never"}},
                    {"run": {"name": "cleanup", "command": "echo always ran", "when": "always"}},
                    {"run": {"name": "on fail", "command": "echo failure handler", "when": "on_fail"}},
                ]
            )
        },
        message="Break it",
    )
    assert server.request("POST", P + "/tree/main")[0] == 201
    failed = server.wait_finished("gh/acme/widget", 1)
    assert (failed["outcome"], failed["status"], failed["failed"]) == ("failed", "failed", True)
    steps = {s["name"]: s["actions"][0] for s in failed["steps"]}
    assert steps["fails"]["exit_code"] == 3 and steps["fails"]["status"] == "failed"
    assert steps["fails"]["failed"] is True
    assert "skipped" not in steps
    assert steps["cleanup"]["status"] == "success" and steps["on fail"]["status"] == "success"
    with urllib.request.urlopen(steps["fails"]["output_url"] + "&file=true") as resp:
        assert resp.read().decode().endswith("about to fail\nExited with code exit status 3\n")

    commit_files(repo, {".circleci/config.yml": config_yaml([{"run": "true"}])}, message="Fix it")
    assert server.request("POST", P + "/tree/main")[0] == 201
    fixed = server.wait_finished("gh/acme/widget", 2)
    assert (fixed["outcome"], fixed["status"]) == ("success", "fixed")
    assert fixed["previous"] == {
        "build_num": 1,
        "status": "failed",
        "build_time_millis": failed["build_time_millis"],
    }

    status, retried = server.request("POST", P + "/1/retry")
    assert status == 200
    assert retried["build_num"] == 3 and retried["retry_of"] == 1 and retried["why"] == "retry"
    assert retried["vcs_revision"] == failed["vcs_revision"]
    done = server.wait_finished("gh/acme/widget", 3)
    assert done["outcome"] == "failed"  # same revision as build 1
    assert server.request("GET", P + "/1")[1]["retries"] == [3]
    assert server.request("GET", P + "/1")[1]["status"] == "failed"  # a manual retry leaves it alone


def test_cancel_kills_the_step_within_a_second(server: ServerProcess, repo: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    commit_files(
        repo,
        {
            ".circleci/config.yml": config_yaml(
                [
                    {"run": {"name": "long", "command": f"sleep 300 & echo $! > {pidfile}; wait"}},
                ]
            )
        },
        message="Slow",
    )
    assert server.request("POST", P + "/tree/main")[0] == 201
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    pid = int(pidfile.read_text())
    started = time.monotonic()
    status, body = server.request("POST", P + "/1/cancel")
    assert status == 200 and body["outcome"] == "canceled" and body["status"] == "canceled"
    assert body["canceled"] is True
    build = server.wait_finished("gh/acme/widget", 1, timeout=10)
    took = time.monotonic() - started
    assert took < 1.5, took
    assert (build["lifecycle"], build["outcome"]) == ("finished", "canceled")
    assert build["steps"][-1]["actions"][0]["status"] == "canceled"
    deadline = time.monotonic() + 1
    while _alive(pid):  # the sleep must be gone; a zombie awaiting its reaper counts as gone
        assert time.monotonic() < deadline, "the step's child survived the cancel"
        time.sleep(0.02)
    # canceling again changes nothing
    assert server.request("POST", P + "/1/cancel")[1]["stop_time"] == build["stop_time"]


def test_slots_queue_builds_in_order_and_waiting_ones_cancel_cleanly(tmp_path: Path, repo: Path) -> None:
    commit_files(repo, {".circleci/config.yml": config_yaml([{"run": "sleep 1"}])}, message="Sleep")
    with ServerProcess(tmp_path / "one-slot", slots=1) as srv:
        srv.cli("project", "add", "gh/acme/widget", "--repo", str(repo))
        srv.make_token()
        nums = [srv.request("POST", P + "/tree/main")[1]["build_num"] for _ in range(3)]
        assert nums == [1, 2, 3]
        time.sleep(0.3)
        waiting = srv.request("GET", P + "/3")[1]
        assert waiting["lifecycle"] == "not_running" and waiting["status"] == "not_running"
        canceled = srv.request("POST", P + "/3/cancel")[1]
        assert (canceled["lifecycle"], canceled["status"], canceled["start_time"]) == (
            "not_running",
            "canceled",
            None,
        )
        first = srv.wait_finished("gh/acme/widget", 1)
        second = srv.wait_finished("gh/acme/widget", 2)
        assert second["start_time"] >= first["stop_time"]
        time.sleep(0.3)
        still = srv.request("GET", P + "/3")[1]
        assert still["lifecycle"] == "not_running" and still["steps"] == []


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        pytest.param(
            "/tree/main",
            {"revision": "abc", "tag": "v1"},
            400,
            "Cannot specify both revision and tag",
            id="revision-and-tag",
        ),
        pytest.param("/tree/nope", None, 400, 'Branch "nope" not found', id="unknown-branch"),
        pytest.param("", {"tag": "v9"}, 400, 'Tag "v9" not found', id="unknown-tag"),
        pytest.param(
            "", {"revision": "deadbeef"}, 400, 'Revision "deadbeef" not found', id="unknown-revision"
        ),
        pytest.param(
            "/tree/main", {"build_parameters": {"BAD-NAME": "1"}}, 400, "BAD-NAME", id="bad-parameter"
        ),
        pytest.param(
            "/tree/main", {"build_parameters": "x"}, 400, "build_parameters must be", id="params-not-map"
        ),
        pytest.param(
            "/tree/main", {"parallel": 0}, 400, "parallel must be a positive integer", id="bad-parallel"
        ),
        pytest.param(
            "/tree/main", {"job": "deploy"}, 400, "Cannot find a job named `deploy`", id="unknown-job"
        ),
    ],
)
def test_bad_triggers_get_a_clear_400_and_create_nothing(
    server: ServerProcess, path: str, body: Any, status: int, message: str
) -> None:
    got_status, got = server.request("POST", P + path, body)
    assert got_status == status
    assert message in got["message"]
    assert server.request("GET", P)[1] == []


def test_nulls_mean_absent_and_form_bodies_work(server: ServerProcess) -> None:
    status, body = server.request("POST", P + "/tree/main", {"revision": None, "tag": None, "parallel": None})
    assert status == 201 and body["build_num"] == 1
    req = urllib.request.Request(
        server.base + P + "/tree/main",
        method="POST",
        data=b"build_parameters[CIRCLE_JOB]=build&build_parameters[X]=1",
        headers={"Circle-Token": server.token, "Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(req) as resp:
        import json

        assert json.loads(resp.read())["build_parameters"] == {"CIRCLE_JOB": "build", "X": "1"}


def test_auth_failures_answer_as_circleci_does(server: ServerProcess) -> None:
    assert server.request("GET", P + "/1", token="wrong") == (404, {"message": "Project not found"})
    assert server.request("GET", "/api/v1.1/project/gh/acme/nope/1") == (
        404,
        {"message": "Project not found"},
    )
    assert server.request("GET", "/api/v1.1/me", token="wrong") == (
        401,
        {"message": "You must log in first."},
    )
    assert server.request("GET", P + "/99") == (404, {"message": "Build not found"})
    assert server.request("GET", "/api/v1.1/project/svn/acme/widget/1")[0] == 404
    status, body = server.request("GET", "/api/v1.1/nothing/here")
    assert status == 404 and "message" in body


def test_broken_config_finishes_with_messages_saying_where(server: ServerProcess, repo: Path) -> None:
    commit_files(
        repo,
        {
            ".circleci/config.yml": "version: 2\njobs:\n  build:\n    docker: [{image: x}]\n"
            "    steps:\n      - run:\n          name: no command\n"
        },
        message="Broken",
    )
    status, body = server.request("POST", P + "/tree/main")
    assert status == 201
    build = server.wait_finished("gh/acme/widget", body["build_num"])
    assert (build["lifecycle"], build["outcome"], build["status"]) == ("finished", "failed", "failed")
    text = " ".join(m["message"] for m in build["messages"])
    assert ".circleci/config.yml" in text and "command" in text and ":6" in text
    assert build["steps"] == []


def test_build_numbers_are_unique_under_concurrent_triggers(server: ServerProcess, repo: Path) -> None:
    commit_files(repo, {".circleci/config.yml": config_yaml([{"run": "true"}])}, message="Quick")
    results: list[int] = []

    def trigger() -> None:
        status, body = server.request("POST", P + "/tree/main")
        assert status == 201
        results.append(body["build_num"])

    threads = [threading.Thread(target=trigger) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 13))


def test_restart_fails_running_builds_and_runs_waiting_ones(tmp_path: Path, repo: Path) -> None:
    commit_files(repo, {".circleci/config.yml": config_yaml([{"run": "sleep 60"}])}, message="Slow")
    srv = ServerProcess(tmp_path / "restart", slots=1)
    srv.start()
    try:
        srv.cli("project", "add", "gh/acme/widget", "--repo", str(repo))
        srv.make_token()
        srv.request("POST", P + "/tree/main")
        srv.request("POST", P + "/tree/main")
        deadline = time.monotonic() + 20
        while srv.request("GET", P + "/1")[1]["lifecycle"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        srv.stop(signal.SIGKILL)
        commit_files(repo, {".circleci/config.yml": config_yaml([{"run": "true"}])}, message="Quick")
        srv.start()
        lost = srv.wait_finished("gh/acme/widget", 1)
        assert (lost["outcome"], lost["status"]) == ("infrastructure_fail", "infrastructure_fail")
        assert "stopped while this build was running" in lost["messages"][-1]["message"]
        assert all(a["status"] != "running" for s in lost["steps"] for a in s["actions"])
        srv.request("POST", P + "/2/cancel")  # the waiting one was requeued; cancel it to end quickly
        assert srv.request("GET", P + "/2")[1]["outcome"] == "canceled"
    finally:
        srv.stop()


def test_published_client_pycircleci(server: ServerProcess, repo: Path) -> None:
    from pycircleci.api import Api

    api = Api(token=server.token, url=server.base + "/api")
    created = api.trigger_build("acme", "widget", branch="main", params={"build_parameters": {"A": "1"}})
    assert created["build_num"] == 1
    server.wait_finished("gh/acme/widget", 1)
    info = api.get_build_info("acme", "widget", 1)
    assert info["outcome"] == "success" and info["steps"]
    retried = api.retry_build("acme", "widget", 1)
    assert retried["retry_of"] == 1
    server.wait_finished("gh/acme/widget", retried["build_num"])
    summary = api.get_project_build_summary("acme", "widget", limit=10, branch="main")
    assert [b["build_num"] for b in summary] == [2, 1]
    canceled = api.cancel_build("acme", "widget", 2)
    assert canceled["outcome"] == "success"  # already finished: unchanged


def test_job_environment_agrees_with_the_api_and_holds_no_server_settings(tmp_path: Path, repo: Path) -> None:
    commit_files(
        repo,
        {".circleci/config.yml": config_yaml([{"run": {"name": "env", "command": "env | sort"}}])},
        message="Env",
    )
    srv = ServerProcess(tmp_path / "env", env={"CIRCLET_DATABASE_URL": "", "CIRCLET_SECRET_PROBE": "s3cret"})
    with srv:
        srv.cli("project", "add", "gh/acme/widget", "--repo", str(repo))
        srv.make_token()
        srv.request("POST", P + "/tree/main", {"build_parameters": {"CIRCLE_BUILD_NUM": "999", "EXTRA": 5}})
        build = srv.wait_finished("gh/acme/widget", 1)
        with urllib.request.urlopen(build["steps"][-1]["actions"][0]["output_url"] + "&file=true") as resp:
            env = dict(line.split("=", 1) for line in resp.read().decode().splitlines() if "=" in line)
    assert env["CIRCLE_BUILD_URL"] == build["build_url"]
    assert env["CIRCLE_SHA1"] == build["vcs_revision"]
    assert env["CIRCLE_BUILD_NUM"] == "1"  # a build parameter never overrides a built-in
    assert env["EXTRA"] == "5"
    assert env["CIRCLE_BRANCH"] == "main" and env["CIRCLE_JOB"] == "build" and env["CI"] == "true"
    assert env["CIRCLE_NODE_INDEX"] == "0" and env["CIRCLE_NODE_TOTAL"] == "1"
    assert env["HOME"].startswith(str(tmp_path / "env"))  # a home of the build's own
    assert not [name for name in env if name.startswith("CIRCLET_")]
    assert "s3cret" not in "".join(env.values())


def test_seed_neighbours_build_tests_artifacts_and_ssh(server: ServerProcess, repo: Path) -> None:
    import json

    req = urllib.request.Request(
        server.base + P + "/build",
        method="POST",
        data=b'{"branch": "main"}',
        headers={"Circle-Token": server.token, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 200
        assert json.loads(resp.read()) == {"status": 200, "body": "Build created"}
    build = server.wait_finished("gh/acme/widget", 1)
    assert build["outcome"] == "success" and build["branch"] == "main"
    assert server.request("POST", P + "/build", {"tag": "v1", "branch": "main"})[0] == 400
    assert server.request("GET", P + "/1/tests")[1] == {"tests": [], "exceptions": []}
    assert server.request("GET", P + "/9/tests") == (404, {"message": "Build not found"})
    assert server.request("GET", P + "/1/artifacts")[1] == []
    assert server.request("GET", P + "/latest/artifacts?branch=main")[1] == []
    assert server.request("GET", P + "/latest/artifacts?branch=nope") == (404, {"message": "Build not found"})
    status, with_ssh = server.request("POST", P + "/1/ssh-users", {"hostname": None, "private_key": "x"})
    assert status == 200 and [u["login"] for u in with_ssh["ssh_users"]] == ["admin"]
    status, retried = server.request("POST", P + "/1/ssh")
    assert status == 200 and retried["why"] == "ssh" and retried["ssh_disabled"] is False
    assert [u["login"] for u in retried["ssh_users"]] == ["admin"]
    project_token = server.cli("token", "create", "--project", "gh/acme/widget").stdout.strip()
    assert server.request("POST", P + "/build", token=project_token) == (
        403,
        {"message": "Permission denied"},
    )
    assert server.request("POST", P + "/1/ssh-users", token=project_token) == (
        403,
        {"message": "Permission denied"},
    )


JUNIT = """<?xml version="1.0"?>
<testsuites><testsuite name="widgets" file="tests/test_widget.py">
  <testcase classname="tests.test_widget" name="test_spins" time="0.25"/>
  <testcase classname="tests.test_widget" name="test_stops" time="1.5">
    <failure message="assert 1 == 2">Traceback...</failure></testcase>
  <testcase classname="tests.test_widget" name="test_later" time="0"><skipped/></testcase>
</testsuite></testsuites>
"""


def test_store_test_results_reach_the_tests_endpoint(server: ServerProcess, repo: Path) -> None:
    commit_files(
        repo,
        {
            "reports/junit/results.xml": JUNIT,
            "reports/broken.xml": "<testsuite><testcase",
            ".circleci/config.yml": config_yaml(
                [
                    "checkout",
                    {"run": {"name": "tests fail", "command": "exit 1"}},
                    {"store_test_results": {"path": "reports"}},
                    {"store_test_results": {"path": "no/such/folder"}},
                ]
            ),
        },
        message="Tests",
    )
    server.request("POST", P + "/tree/main")
    build = server.wait_finished("gh/acme/widget", 1)
    assert build["outcome"] == "failed"  # the failing step decides, never the reports
    status, body = server.request("GET", P + "/1/tests")
    assert status == 200
    by_name = {t["name"]: t for t in body["tests"]}
    assert set(by_name) == {"test_spins", "test_stops", "test_later"}
    assert by_name["test_stops"] == {
        "message": "assert 1 == 2",
        "file": "tests/test_widget.py",
        "source": "junit",
        "run_time": 1.5,
        "result": "failure",
        "name": "test_stops",
        "classname": "tests.test_widget",
        "source_type": "junit",
    }
    assert by_name["test_later"]["result"] == "skipped" and by_name["test_spins"]["result"] == "success"
    assert [e["file"] for e in body["exceptions"]] == ["broken.xml"]
    steps = {s["name"]: s["actions"][0] for s in build["steps"]}
    assert all(a["status"] == "success" for n, a in steps.items() if n == "Uploading test results")

    from pycircleci.api import Api

    tests = Api(token=server.token, url=server.base + "/api").get_test_metadata("acme", "widget", 1)
    assert len(tests["tests"]) == 3


WRITE_JUNIT = """\
import sys
durations = {"tests/t1.py": 6.0, "tests/t2.py": 1.0, "tests/t3.py": 1.0, "tests/t4.py": 1.0,
             "tests/t5.py": 1.0, "tests/t6.py": 2.0}
cases = "".join(f'<testcase classname="c" name="{f}" file="{f}" time="{durations[f]}"/>'
                for f in sys.stdin.read().split())
print(f"<testsuite>{cases}</testsuite>")
"""


def test_circleci_tests_split_uses_the_last_green_builds_timings(server: ServerProcess, repo: Path) -> None:
    config = config_yaml(
        [
            "checkout",
            {
                "run": {
                    "name": "split",
                    "command": (
                        'circleci tests glob "tests/*.py" \\\n'
                        "  | circleci tests split --split-by=timings > mine.txt\n"
                        "cat mine.txt\nmkdir -p reports/junit\n"
                        "python3 write_junit.py < mine.txt > reports/junit/results.xml"
                    ),
                }
            },
            {"store_test_results": {"path": "reports"}},
            {"run": {"name": "halt", "command": "circleci step halt"}},
            {"run": {"name": "never", "command": "echo never"}},
        ]
    ).replace("    steps:", "    parallelism: 2\n    steps:", 1)
    commit_files(
        repo,
        {
            ".circleci/config.yml": config,
            "write_junit.py": WRITE_JUNIT,
            **{f"tests/t{n}.py": "" for n in range(1, 7)},
        },
        message="Split",
    )
    outputs: list[list[str]] = []
    for num in (1, 2):
        server.request("POST", P + "/tree/main")
        build = server.wait_finished("gh/acme/widget", num)
        assert build["outcome"] == "success", build["messages"]
        names = [s["name"] for s in build["steps"]]
        assert "halt" in names and "never" not in names  # step halt: no further step runs
        split = next(s for s in build["steps"] if s["name"] == "split")
        per_node = []
        for action in sorted(split["actions"], key=lambda a: a["index"]):
            with urllib.request.urlopen(action["output_url"] + "&file=true") as resp:
                per_node.append(resp.read().decode())
        outputs.append(per_node)
    assert "Error reading historical timing data" in "".join(outputs[0])  # no history yet
    second = [sorted(line for line in text.splitlines() if line.startswith("tests/")) for text in outputs[1]]
    assert sorted(second) == [
        ["tests/t1.py"],
        ["tests/t2.py", "tests/t3.py", "tests/t4.py", "tests/t5.py", "tests/t6.py"],
    ]  # 6 s against 6 s: balanced by timings
    assert len(server.request("GET", P + "/2/tests")[1]["tests"]) == 6
