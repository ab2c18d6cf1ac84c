"""End to end: scheduled workflows on a real server, a real git repository and real builds.

The server's clock cannot be set from outside, so the minute is driven the way an operator
would: `circlet schedule run-due --at TIME` records the runs due then, and the running server
(CIRCLET_SCHEDULER=off: its own clock is stopped) starts them. A second test lets the server's
own clock run an every-minute schedule, across a restart.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from circlet.harness import ServerProcess, commit_files, make_repo

pytestmark = pytest.mark.timeout(180)

SLUG = "gh/acme/widget"
P = f"/api/v1.1/project/{SLUG}"


def config(cron: str) -> str:
    return f"""\
version: 2
jobs:
  build:
    docker: [{{image: cimg/base:stable}}]
    steps: [{{run: {{name: commit, command: echo commit}}}}]
  coverage:
    docker: [{{image: cimg/base:stable}}]
    steps: [{{run: {{name: nightly, command: echo "nightly $CIRCLE_BRANCH"}}}}]
workflows:
  version: 2
  commit:
    jobs: [build]
  nightly:
    triggers:
      - schedule:
          cron: "{cron}"
          filters: {{branches: {{only: [main]}}}}
    jobs: [coverage]
"""


def builds(server: ServerProcess) -> list[dict[str, Any]]:
    status, found = server.request("GET", f"{P}?limit=100")
    assert status == 200, found
    return sorted(found, key=lambda b: b["build_num"])


def scheduled(server: ServerProcess, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [b for b in builds(server) if b["why"] == "scheduled_pipeline"]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} scheduled builds did not appear: {builds(server)}")
        time.sleep(0.1)


def test_run_due_runs_the_scheduled_workflow_once_on_accepted_branches(tmp_path: Path) -> None:
    repo = tmp_path / "widget"
    make_repo(repo, {".circleci/config.yml": config("0 3 * * *"), "README.md": "hi\n"})
    head = commit_files(repo, {"README.md": "docs\n"}, message="Docs only [ci skip]")
    server = ServerProcess(tmp_path / "data", env={"CIRCLET_SCHEDULER": "off"}).start()
    try:
        server.cli("project", "add", SLUG, "--repo", str(repo))
        server.make_token()
        # an API trigger runs the commit workflow, never the scheduled one
        status, body = server.request("POST", f"{P}/build", {"branch": "main"})
        assert (status, body) == (200, {"status": 200, "body": "Build created"})
        [pushed] = builds(server)
        assert pushed["workflows"]["workflow_name"] == "commit"
        server.wait_finished(SLUG, pushed["build_num"])

        assert server.cli("schedule", "run-due", "--at", "2026-11-28T04:00:00Z").stdout == ""
        ran = server.cli("schedule", "run-due", "--at", "2026-11-28T03:00:42Z")
        assert ran.stdout.split("\t")[:5] == ["pending", SLUG, "nightly", "main", "2026-11-28T03:00Z"]
        [build] = scheduled(server, 1)
        done = server.wait_finished(SLUG, build["build_num"])
        assert (done["outcome"], done["branch"], done["vcs_revision"]) == ("success", "main", head)
        assert done["workflows"]["workflow_name"] == "nightly" and done["dont_build"] is None
        assert [s["name"] for s in done["steps"]][-1] == "nightly"

        again = server.cli("schedule", "run-due", "--at", "2026-11-28T03:00:00Z")
        assert again.stdout == "" and "nothing new is due" in again.stderr
        listed = server.cli("schedule", "list").stdout.splitlines()
        assert listed == [f"done\t{SLUG}\tnightly\tmain\t2026-11-28T03:00Z\t{done['build_num']}"]
        nxt = server.cli("schedule", "next", SLUG).stdout.split("\t")
        assert nxt[1:] == ["nightly", "main", "0 3 * * *\n"] and nxt[0].endswith("T03:00Z")
        time.sleep(0.5)
        assert len(scheduled(server, 1)) == 1  # nothing more ran
    finally:
        server.stop()


def test_the_servers_clock_runs_each_minute_once_across_a_restart(tmp_path: Path) -> None:
    repo = tmp_path / "widget"
    make_repo(repo, {".circleci/config.yml": config("* * * * *"), "README.md": "hi\n"})
    server = ServerProcess(tmp_path / "data")
    server.cli("project", "add", SLUG, "--repo", str(repo))  # before the start: the first tick sees it
    server.start()
    try:
        server.make_token()
        [first] = scheduled(server, 1, timeout=30)
        server.wait_finished(SLUG, first["build_num"])
        server.stop()
        server.start()  # a restart, most often within the same minute
        time.sleep(3)  # a tick or two
        minutes = [line.split("\t")[4] for line in server.cli("schedule", "list").stdout.splitlines()]
        assert minutes and len(minutes) == len(set(minutes))  # never twice for one minute
        assert len(scheduled(server, 1)) == len(minutes)
    finally:
        server.stop()
