"""The local executor with CIRCLET_SANDBOX=bwrap: builds run, a report written to /tmp is
found, and a step cannot read the server's secrets (its environment, its /proc, its data dir)."""

from __future__ import annotations

import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from circlet.harness import ServerProcess, config_yaml, make_repo

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed"),
]

SLUG = "gh/acme/boxed"
SECRET = "s3cr3t-database-password-4242"
DEPS = "cat ~/deps/f 2>/dev/null || true; mkdir -p ~/deps && echo cached > ~/deps/f"
JUNIT = '<testsuite><testcase classname="a" name="fails"><failure message="no"/></testcase></testsuite>'


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    repo = tmp_path / "boxed"
    # The secret never appears in the step's own text or command lines: grep reads it, reversed
    # back, from its stdin (else grep would find it in its own /proc/self/cmdline).
    pattern = f"echo {SECRET[::-1]} | rev"
    data = tmp_path / "data"
    hunt = (
        f"! {pattern} | grep -rqsf - /proc/*/environ /proc/*/cmdline ~ /tmp"
        f" && ! env | grep -qf <({pattern}) && ! {pattern} | grep -rqsf - {data}"
    )
    make_repo(
        repo,
        {
            ".circleci/config.yml": config_yaml(
                [
                    {"run": {"name": "hunt", "command": hunt}},
                    {"run": f"mkdir -p /tmp/results && echo '{JUNIT}' > /tmp/results/junit.xml"},
                    {"store_test_results": {"path": "/tmp/results"}},
                    {"restore_cache": {"keys": ["deps-"]}},
                    {"run": {"name": "deps", "command": DEPS}},
                    {"save_cache": {"key": "deps-{{ .BuildNum }}", "paths": ["~/deps"]}},
                    {"store_artifacts": {"path": "/tmp/results"}},
                ]
            )
        },
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "secret.toml").write_text(f'database_url = "{SECRET}"\n')
    srv = ServerProcess(
        tmp_path / "data",
        slots=1,
        env={"CIRCLET_SANDBOX": "bwrap", "CIRCLET_TEST_SECRET": SECRET},
    )
    with srv:
        srv.cli("project", "add", SLUG, "--repo", str(repo))
        srv.make_token()
        yield srv


def test_sandboxed_local_build_runs_and_cannot_find_secrets(server: ServerProcess) -> None:
    status, build = server.request("POST", f"/api/v1.1/project/{SLUG}/tree/main")
    assert status == 201, build
    done: dict[str, Any] = server.wait_finished(SLUG, build["build_num"], timeout=60)
    hunt = done["steps"][1]["actions"][0]
    if hunt["status"] != "success":
        with urllib.request.urlopen(hunt["output_url"] + "&file=true") as resp:
            pytest.fail(f"the step found a secret or failed: {resp.read().decode()!r}")
    assert done["outcome"] == "success", done["messages"]
    status, tests = server.request("GET", f"/api/v1.1/project/{SLUG}/{build['build_num']}/tests")
    assert status == 200
    assert [(t["name"], t["result"]) for t in tests["tests"]] == [("fails", "failure")]


def output(action: dict[str, Any]) -> str:
    with urllib.request.urlopen(action["output_url"] + "&file=true") as resp:
        return str(resp.read().decode())


def test_sandboxed_file_steps_use_the_builds_tmp_and_restore_caches(server: ServerProcess) -> None:
    nums = []
    for _ in range(2):
        status, build = server.request("POST", f"/api/v1.1/project/{SLUG}/tree/main")
        assert status == 201, build
        done: dict[str, Any] = server.wait_finished(SLUG, build["build_num"], timeout=60)
        failed = [
            (st["name"], output(st["actions"][0]))
            for st in done["steps"]
            if st["actions"][0]["status"] != "success"
        ]
        assert done["outcome"] == "success", failed
        nums.append(build["build_num"])
    status, artifacts = server.request("GET", f"/api/v1.1/project/{SLUG}/{nums[0]}/artifacts")
    assert status == 200
    assert [a["path"] for a in artifacts] == ["tmp/results/junit.xml"]  # /tmp is the build's own
    second = server.request("GET", f"/api/v1.1/project/{SLUG}/{nums[1]}")[1]
    by_name = {step["name"]: step["actions"][0] for step in second["steps"]}
    assert f"Found a cache from build {nums[0]}" in output(by_name["Restoring Cache"])
    assert output(by_name["deps"]).strip() == "cached"  # restored by a tar run in the sandbox
