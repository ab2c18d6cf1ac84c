"""Pipelines and workflows end to end: a real `circlet serve`, real git repositories, real steps.

One server for the module; each test registers a project of its own, so tests do not see each
other's builds. Steps are tiny shell commands that fail when what they check is wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from circlet.harness import ServerProcess, git, make_repo

pytestmark = pytest.mark.timeout(240)

ENV = "docker: [{image: cimg/base:stable}]"


@dataclass
class World:
    srv: ServerProcess
    root: Path

    def project(self, name: str, config: str) -> str:
        """A repository with this config, registered as gh/acme/<name>; returns the API prefix."""
        repo = self.root / name
        make_repo(repo, {".circleci/config.yml": config})
        self.srv.cli("project", "add", f"gh/acme/{name}", "--repo", str(repo))
        return f"/api/v1.1/project/gh/acme/{name}"

    def build(self, prefix: str, body: Any = None) -> None:
        status, answer = self.srv.request("POST", prefix + "/build", body)
        assert (status, answer) == (200, {"status": 200, "body": "Build created"}), answer

    def builds(self, prefix: str) -> list[dict[str, Any]]:
        status, found = self.srv.request("GET", prefix + "?limit=100")
        assert status == 200, found
        return sorted(found, key=lambda b: b["build_num"])

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = check()
            if found:
                return found
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    def workflow(self, workflow_id: str) -> dict[str, Any]:
        status, found = self.srv.request("GET", f"/api/v1.1/workflow/{workflow_id}")
        assert status == 200, found
        return found  # type: ignore[no-any-return]

    def settled(self, prefix: str, count: int) -> list[dict[str, Any]]:
        """Wait until the project has `count` builds, all finished or not run."""

        def done() -> list[dict[str, Any]] | None:
            found = self.builds(prefix)
            ok = len(found) == count and all(b["lifecycle"] in ("finished", "not_run") for b in found)
            return found if ok else None

        return self.wait(f"{count} finished builds", done)  # type: ignore[no-any-return]

    def workflow_status(self, workflow_id: str, status: str) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            found = self.workflow(workflow_id)
            return found if found["status"] == status else None

        return self.wait(f"workflow {status}", reached)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("pipelines")
    srv = ServerProcess(root / "data", slots=2)
    with srv:
        srv.make_token()
        yield World(srv=srv, root=root)


def jobs_of(workflow: dict[str, Any]) -> dict[str, tuple[str, int | None]]:
    return {j["name"]: (j["status"], j["build_num"]) for j in workflow["jobs"]}


FAN = f"""\
version: 2.1
parameters:
  greeting: {{type: string, default: nobody}}
executors:
  sh: {{{ENV}}}
jobs:
  build:
    executor: sh
    steps: [{{run: 'test "<< pipeline.parameters.greeting >>" = hello && test "$CIRCLE_WORKFLOW_ID" != ""'}}]
  test:
    executor: sh
    parameters: {{shard: {{type: integer}}}}
    steps: [{{run: "echo shard << parameters.shard >>"}}]
  deploy: {{executor: sh, steps: [{{run: 'true'}}]}}
  lint: {{executor: sh, steps: [{{run: 'true'}}]}}
workflows:
  main:
    jobs:
      - build
      - test: {{requires: [build], matrix: {{parameters: {{shard: [1, 2]}}}}}}
      - deploy: {{requires: [test]}}
  style:
    jobs: [lint]
"""


def test_fan_out_fan_in_two_workflows_and_pipeline_parameters(world: World) -> None:
    prefix = world.project("fan", FAN)
    world.build(prefix, {"parameters": {"greeting": "hello"}})
    builds = world.settled(prefix, 5)
    assert {b["outcome"] for b in builds} == {"success"}, [(b["job_name"], b["messages"]) for b in builds]
    by_job = {b["workflows"]["job_name"]: b for b in builds}
    assert set(by_job) == {"build", "test-1", "test-2", "deploy", "lint"}
    assert {b["workflows"]["workflow_name"] for b in builds} == {"main", "style"}
    assert by_job["lint"]["workflows"]["workflow_id"] != by_job["build"]["workflows"]["workflow_id"]
    deploy = by_job["deploy"]["workflows"]
    assert sorted(deploy["upstream_job_ids"]) == sorted(
        by_job[t]["workflows"]["job_id"] for t in ("test-1", "test-2")
    )
    assert deploy["workspace_id"] == deploy["workflow_id"]
    assert deploy["upstream_concurrency_map"] == {}
    # the fan-in started only after both tests ended
    assert by_job["deploy"]["start_time"] >= max(by_job[t]["stop_time"] for t in ("test-1", "test-2"))
    workflow = world.workflow(deploy["workflow_id"])
    assert workflow["status"] == "success" and workflow["name"] == "main"
    assert jobs_of(workflow) == {
        name: ("success", by_job[name]["build_num"]) for name in ("build", "test-1", "test-2", "deploy")
    }
    # /projects tells the branch uses workflows, and how each one last ended
    assert world.srv.request("POST", prefix + "/follow")[0] == 200
    [entry] = [p for p in world.srv.request("GET", "/api/v1.1/projects")[1] if p["reponame"] == "fan"]
    main = entry["branches"]["main"]
    assert main["is_using_workflows"] is True
    assert {k: v["status"] for k, v in main["latest_workflows"].items()} == {
        "main": "success",
        "style": "success",
    }
    assert main["latest_workflows"]["main"]["id"] == workflow["id"]
    # a bad parameter errors the pipeline: one finished failed build says why
    world.build(prefix, {"parameters": {"greting": "hello"}})
    failed = world.settled(prefix, 6)[-1]
    assert failed["outcome"] == "failed" and "greting" in failed["messages"][0]["message"]
    status, answer = world.srv.request("POST", prefix + "/build", {"parameters": ["greeting"]})
    assert status == 400 and "parameters" in answer["message"]
    # the single-job endpoints refuse 2.1
    status, answer = world.srv.request("POST", prefix + "/tree/main")
    assert status == 400 and "version: 2.1" in answer["message"]


FILTERED = f"""\
version: 2
jobs:
  everywhere: {{{ENV}, steps: [{{run: 'true'}}]}}
  main-only: {{{ENV}, steps: [{{run: 'true'}}]}}
  release: {{{ENV}, steps: [{{run: 'test "$CIRCLE_TAG" = v1.0'}}]}}
workflows:
  version: 2
  w:
    jobs:
      - everywhere
      - main-only: {{filters: {{branches: {{only: main}}}}}}
      - release: {{filters: {{branches: {{ignore: /.*/}}, tags: {{only: '/^v[0-9.]+/'}}}}}}
"""


def test_filters_on_branches_and_tags(world: World) -> None:
    prefix = world.project("filters", FILTERED)
    repo = world.root / "filters"
    git(repo, "branch", "feature/x")
    git(repo, "tag", "v1.0")
    world.build(prefix, {"branch": "feature/x"})
    [feature] = world.settled(prefix, 1)
    assert (feature["workflows"]["job_name"], feature["branch"]) == ("everywhere", "feature/x")
    world.build(prefix, {"tag": "v1.0"})
    release = world.settled(prefix, 2)[-1]
    assert (release["workflows"]["job_name"], release["vcs_tag"], release["outcome"]) == (
        "release",
        "v1.0",
        "success",
    )
    world.build(prefix)
    assert sorted(b["workflows"]["job_name"] for b in world.settled(prefix, 4)[2:]) == [
        "everywhere",
        "main-only",
    ]


APPROVAL = f"""\
version: 2.1
jobs:
  build: {{{ENV}, steps: [{{run: 'true'}}]}}
  deploy: {{{ENV}, steps: [{{run: 'test "$TOKEN" = s3cret'}}]}}
workflows:
  ship:
    jobs:
      - build
      - hold: {{type: approval, requires: [build]}}
      - deploy: {{requires: [hold], context: prod}}
"""


def test_approval_through_the_api_and_the_cli_and_contexts(world: World) -> None:
    srv = world.srv
    assert srv.request("PUT", "/api/v1.1/contexts/prod")[0] == 201
    assert srv.request("PUT", "/api/v1.1/contexts/prod")[0] == 409
    status, var = srv.request("PUT", "/api/v1.1/contexts/prod/envvar/TOKEN", {"value": "s3cret"})
    assert status == 200 and var["value"] != "s3cret"  # masked
    prefix = world.project("approve", APPROVAL)
    world.build(prefix)
    [build] = world.settled(prefix, 1)
    workflow_id = build["workflows"]["workflow_id"]
    held = world.workflow_status(workflow_id, "on_hold")
    assert jobs_of(held)["hold"] == ("on_hold", None)
    assert jobs_of(held)["deploy"] == ("blocked", None)
    status, wrong = srv.request("POST", f"{prefix}/workflow/{workflow_id}/approve/build")
    assert status == 400 and "not an approval" in wrong["message"]
    status, answer = srv.request("POST", f"{prefix}/workflow/{workflow_id}/approve/hold")
    assert status == 200 and jobs_of(answer)["hold"][0] == "success"
    done = world.workflow_status(workflow_id, "success")
    deploy_num = jobs_of(done)["deploy"][1]
    assert deploy_num is not None
    status, deploy = srv.request("GET", f"{prefix}/{deploy_num}")
    assert deploy["outcome"] == "success"
    # the CLI records an approval; the running server applies it
    world.build(prefix)
    second = world.settled(prefix, 3)[-1]
    second_id = second["workflows"]["workflow_id"]
    world.workflow_status(second_id, "on_hold")
    srv.cli("workflow", "approve", second_id, "hold")
    world.workflow_status(second_id, "success")
    shown = srv.cli("workflow", "show", second_id).stdout
    assert "ship\tsuccess" in shown and "hold\tapproval\tsuccess" in shown
    # an unknown context fails the job that names it, saying so
    srv.request("DELETE", "/api/v1.1/contexts/prod")
    world.build(prefix)
    third = world.settled(prefix, 5)[-1]
    world.srv.request("POST", f"{prefix}/workflow/{third['workflows']['workflow_id']}/approve/hold")
    failed = world.wait(
        "the deploy without its context",
        lambda: (b := world.builds(prefix)) and len(b) == 6 and b[-1]["lifecycle"] == "finished" and b[-1],
    )
    assert failed["outcome"] == "failed" and "prod" in failed["messages"][0]["message"]


FAILING = f"""\
version: 2
jobs:
  a: {{{ENV}, steps: [{{run: 'exit 3'}}]}}
  b: {{{ENV}, steps: [{{run: 'true'}}]}}
  c: {{{ENV}, steps: [{{run: 'true'}}]}}
  cleanup: {{{ENV}, steps: [{{run: 'true'}}]}}
workflows:
  version: 2
  w:
    jobs:
      - a
      - b: {{requires: [a]}}
      - c: {{requires: [b]}}
      - cleanup: {{requires: [{{a: failed}}]}}
"""


def test_failing_upstream_leaves_dependants_not_run_and_retry_reruns_the_job(world: World) -> None:
    prefix = world.project("failing", FAILING)
    world.build(prefix)
    builds = world.settled(prefix, 2)
    assert {b["workflows"]["job_name"]: b["outcome"] for b in builds} == {"a": "failed", "cleanup": "success"}
    workflow = world.workflow_status(builds[0]["workflows"]["workflow_id"], "failed")
    assert jobs_of(workflow) == {
        "a": ("failed", builds[0]["build_num"]),
        "b": ("not_run", None),
        "c": ("not_run", None),
        "cleanup": ("success", builds[1]["build_num"]),
    }
    status, retried = world.srv.request("POST", f"{prefix}/{builds[0]['build_num']}/retry")
    assert status == 200 and retried["retry_of"] == builds[0]["build_num"]
    assert retried["workflows"]["workflow_id"] == workflow["id"]
    again = world.settled(prefix, 3)[-1]
    assert again["outcome"] == "failed"
    assert jobs_of(world.workflow(workflow["id"]))["a"] == ("failed", again["build_num"])


def test_a_cycle_is_a_config_error_with_the_path(world: World) -> None:
    job = f"{{{ENV}, steps: [{{run: 'true'}}]}}"
    config = f"version: 2\njobs:\n  a: {job}\n  b: {job}\n"
    config += "workflows:\n  version: 2\n  w:\n    jobs: [{a: {requires: [b]}}, {b: {requires: [a]}}]\n"
    prefix = world.project("cycle", config)
    world.build(prefix)
    [build] = world.settled(prefix, 1)
    assert build["outcome"] == "failed"
    [message] = build["messages"]
    assert "workflows.w.jobs[0].a.requires" in message["message"] and "cycle" in message["message"]


def test_workflow_endpoints_answer_404_and_contexts_need_an_admin(world: World) -> None:
    srv = world.srv
    assert srv.request("GET", "/api/v1.1/workflow/00000000-0000-0000-0000-000000000000")[0] == 404
    assert srv.request("GET", "/api/v1.1/workflow/nope")[0] == 404
    srv.cli("user", "add", "eve")
    eve = srv.cli("token", "create", "--user", "eve").stdout.strip()
    assert srv.request("GET", "/api/v1.1/contexts", token=eve)[0] == 403
    srv.cli("context", "create", "shared")
    srv.cli("context", "env", "set", "shared", "KEY", "value1")
    assert "KEY" in srv.cli("context", "env", "list", "shared").stdout
    status, found = srv.request("GET", "/api/v1.1/contexts/shared")
    assert status == 200 and [v["name"] for v in found["variables"]] == ["KEY"]


RESTART = f"""\
version: 2
jobs:
  slow: {{{ENV}, steps: [{{run: 'sleep 60'}}]}}
  waits: {{{ENV}, steps: [{{run: 'true'}}]}}
  after-waits: {{{ENV}, steps: [{{run: 'true'}}]}}
  after-slow: {{{ENV}, steps: [{{run: 'true'}}]}}
workflows:
  version: 2
  w:
    jobs:
      - slow
      - waits
      - after-waits: {{requires: [waits]}}
      - after-slow: {{requires: [slow]}}
"""


def test_a_restart_loses_and_doubles_no_workflow_job(tmp_path: Path) -> None:
    """One slot: `slow` runs, `waits` waits for the slot when the server stops. After the
    restart `slow` ended infrastructure_fail (its dependant is not run), `waits` runs, and the
    job that required it gets exactly one build."""
    srv = ServerProcess(tmp_path / "data", slots=1)
    repo = tmp_path / "restart"
    make_repo(repo, {".circleci/config.yml": RESTART})
    world = World(srv=srv, root=tmp_path)
    prefix = "/api/v1.1/project/gh/acme/restart"
    with srv:
        srv.cli("project", "add", "gh/acme/restart", "--repo", str(repo))
        srv.make_token()
        world.build(prefix)
        world.wait("slow to run", lambda: any(b["lifecycle"] == "running" for b in world.builds(prefix)))
        assert len(world.builds(prefix)) == 2
    with srv:
        builds = world.settled(prefix, 3)
        by_job = {b["workflows"]["job_name"]: b for b in builds}
        assert set(by_job) == {"slow", "waits", "after-waits"}
        assert by_job["slow"]["outcome"] == "infrastructure_fail"
        assert by_job["waits"]["outcome"] == by_job["after-waits"]["outcome"] == "success"
        workflow = world.workflow_status(by_job["slow"]["workflows"]["workflow_id"], "failed")
        assert jobs_of(workflow)["after-slow"] == ("not_run", None)
        time.sleep(1.5)  # a sweep or two later, still nothing doubled
        assert len(world.builds(prefix)) == 3


def test_cancel_a_workflow_waiting_for_approval(world: World) -> None:
    prefix = world.project("cancel", APPROVAL)
    world.build(prefix)
    [build] = world.settled(prefix, 1)
    workflow_id = build["workflows"]["workflow_id"]
    world.workflow_status(workflow_id, "on_hold")
    status, answer = world.srv.request("POST", f"{prefix}/workflow/{workflow_id}/cancel")
    assert status == 200 and answer["status"] == "canceled"
    assert jobs_of(answer) == {
        "build": ("success", 1),
        "hold": ("canceled", None),
        "deploy": ("not_run", None),
    }
    status, refused = world.srv.request("POST", f"{prefix}/workflow/{workflow_id}/approve/hold")
    assert status == 400 and "canceled" in refused["message"]
    assert world.srv.request("POST", f"/api/v1.1/project/gh/acme/fan/workflow/{workflow_id}/cancel")[0] == 404
