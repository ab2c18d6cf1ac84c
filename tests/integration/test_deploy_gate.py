"""1.0 deployment waits for every node (config.md 12.1): a real JobRunner, real processes and the
filesystem blob store (the teardown stores artifacts)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from circlet.agent import HALT_FILE_ENV
from circlet.core.model import ActionStatus, Outcome, Project, VcsType
from circlet.core.phases import Command, Phase, command_step, plan_1_0
from circlet.core.plan import JobPlan, PlannedStep, StepKind
from circlet.core.ports import RunRequest
from circlet.runner.gate import deployment_start
from circlet.runner.run import JobRunner
from circlet.store.blobs_fs import FileBlobStore
from circlet.testing import RecordingReporter

pytestmark = pytest.mark.timeout(60)

PROJECT = Project(id=1, vcs_type=VcsType.GITHUB, username="acme", reponame="widget", repo_url="/x")
ONLY_0_PASSES = '[ "$CIRCLE_NODE_INDEX" = 0 ] || { sleep 1; exit 1; }'
# Steps 101 (the phase command), 102 (deploy), then the teardown: 103 and 104 on every node.
DEPLOY, TEARDOWN = 102, [103, 104]


def step(command: str, phase: Phase, *, parallel: bool = True) -> PlannedStep:
    return command_step(Command(command=command), phase, source="config", parallel=parallel)


def deploy() -> PlannedStep:
    return step('echo "$CIRCLE_NODE_INDEX" >> "$DEPLOYS"', Phase.DEPLOYMENT, parallel=False)


def request(first: PlannedStep, deploys: Path) -> RunRequest:
    plan = plan_1_0("build", (first, deploy()), reponame="widget", parallelism=2)
    return RunRequest(
        build_id=42,
        project=PROJECT,
        build_num=7,
        revision="a" * 40,
        branch="main",
        tag=None,
        plan=plan,
        environment={"DEPLOYS": str(deploys)},
        parallelism=2,
    )


def runner(tmp_path: Path, reporter: RecordingReporter, node: int | None = None) -> JobRunner:
    return JobRunner(
        workspace_root=tmp_path / "ws",
        source=None,  # type: ignore[arg-type]  # no checkout step
        reporter=reporter,
        blobs=FileBlobStore(tmp_path / "blobs"),
        node=node,
    )


def deployed(deploys: Path) -> list[str]:
    return deploys.read_text().split() if deploys.exists() else []


def assert_teardown_everywhere(reporter: RecordingReporter) -> None:
    for index in (0, 1):
        assert [reporter.status(n, index) for n in TEARDOWN] == [ActionStatus.SUCCESS] * 2


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(step(ONLY_0_PASSES, Phase.TEST), id="a-test-fails-on-node-1"),
        pytest.param(step(ONLY_0_PASSES, Phase.DEPENDENCIES), id="a-dependency-fails-on-node-1"),
    ],
)
def test_a_failure_on_another_node_stops_the_deployment(tmp_path: Path, first: PlannedStep) -> None:
    reporter, deploys = RecordingReporter(), tmp_path / "deploys"
    outcome = runner(tmp_path, reporter).run(request(first, deploys))
    assert outcome is Outcome.FAILED
    assert deployed(deploys) == []
    assert (reporter.status(101, 0), reporter.status(101, 1)) == (ActionStatus.SUCCESS, ActionStatus.FAILED)
    assert DEPLOY not in reporter.steps(0) + reporter.steps(1)
    assert_teardown_everywhere(reporter)


def test_when_every_node_passes_node_0_deploys_once(tmp_path: Path) -> None:
    reporter, deploys = RecordingReporter(), tmp_path / "deploys"
    outcome = runner(tmp_path, reporter).run(request(step("sleep 0.5", Phase.TEST), deploys))
    assert outcome is Outcome.SUCCESS
    assert deployed(deploys) == ["0"]
    assert reporter.steps(0) == [0, 101, DEPLOY, *TEARDOWN]
    assert reporter.steps(1) == [0, 101, *TEARDOWN]
    assert reporter.finished[(DEPLOY, 0)].parallel is False
    assert_teardown_everywhere(reporter)


def test_a_node_that_halts_before_the_deployment_does_not_hold_node_0(tmp_path: Path) -> None:
    # `circleci step halt` ends node 1 successfully before it reaches the deployment steps.
    reporter, deploys = RecordingReporter(), tmp_path / "deploys"
    halt = f'[ "$CIRCLE_NODE_INDEX" = 0 ] || {{ sleep 0.5; touch "${HALT_FILE_ENV}"; }}'
    outcome = runner(tmp_path, reporter).run(request(step(halt, Phase.TEST), deploys))
    assert outcome is Outcome.SUCCESS
    assert deployed(deploys) == ["0"]
    assert reporter.steps(1) == [0, 101]


def test_a_cancel_while_node_0_waits_at_the_gate_ends_promptly(tmp_path: Path) -> None:
    reporter, deploys = RecordingReporter(), tmp_path / "deploys"
    run = runner(tmp_path, reporter)
    slow_node_1 = '[ "$CIRCLE_NODE_INDEX" = 0 ] || sleep 1000'
    result: list[Outcome] = []
    thread = threading.Thread(
        target=lambda: result.append(run.run(request(step(slow_node_1, Phase.TEST), deploys)))
    )
    thread.start()
    deadline = time.monotonic() + 10
    while (101, 0) not in reporter.finished:
        assert time.monotonic() < deadline, "node 0's test never ended"
        time.sleep(0.01)
    time.sleep(0.3)
    assert [a.step for a in reporter.started if a.index == 0] == [0, 101]  # node 0 waits
    asked = time.monotonic()
    run.cancel()
    thread.join(10)
    assert time.monotonic() - asked < 1.5
    assert result == [Outcome.CANCELED]
    assert deployed(deploys) == []
    assert reporter.status(101, 1) is ActionStatus.CANCELED
    assert DEPLOY not in reporter.steps(0)


def test_a_runner_of_one_container_cannot_wait_for_the_others(tmp_path: Path) -> None:
    # The celery executor runs each container in its own task: node 0 sees only itself.
    reporter, deploys = RecordingReporter(), tmp_path / "deploys"
    outcome = runner(tmp_path, reporter, node=0).run(request(step(ONLY_0_PASSES, Phase.TEST), deploys))
    assert outcome is Outcome.SUCCESS
    assert deployed(deploys) == ["0"]
    assert reporter.steps(0) == [0, 101, DEPLOY, *TEARDOWN]


@pytest.mark.parametrize(
    ("version", "types", "start"),
    [
        pytest.param("1.0", ["test", "deployment", "deployment", "teardown"], 1, id="1.0-first-deployment"),
        pytest.param("1.0", ["dependencies", "test", "teardown"], None, id="1.0-without-deployment"),
        pytest.param("2.1", ["deployment"], None, id="2.x-never"),
    ],
)
def test_deployment_start(version: str, types: list[str], start: int | None) -> None:
    plan = JobPlan(
        name="build",
        steps=tuple(PlannedStep(kind=StepKind.RUN, name=t, command="true", type=t) for t in types),
        config_version=version,
    )
    assert deployment_start(plan) == start
