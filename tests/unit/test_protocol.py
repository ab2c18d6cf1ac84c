"""executors/protocol.py: what crosses the pipe to a runner process survives JSON unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from circlet.core import config as config_mod
from circlet.core.model import Action, ActionStatus, Message, Project, VcsType
from circlet.core.plan import JobPlan, PlannedStep, StepKind, When
from circlet.core.ports import RunRequest
from circlet.executors import protocol

PACIFIC = timezone(timedelta(hours=-7))
WHEN = datetime(2024, 5, 1, 10, 3, 49, 123456, tzinfo=UTC)

CONFIG = """\
version: 2
jobs:
  build:
    docker: [{image: cimg/python:3.11, environment: {PRIMARY: "1"}}]
    parallelism: 2
    working_directory: ~/app
    steps:
      - checkout
      - restore_cache: {keys: [v1-deps, v1-]}
      - run: {name: Tests, command: make test, background: true, when: always,
              environment: {B: "2"}, no_output_timeout: 5m, shell: /bin/sh}
      - save_cache: {key: v1-deps, paths: [a, b]}
      - store_test_results: {path: results}
      - store_artifacts: {path: out, destination: build}
      - add_ssh_keys
"""

PROJECT = Project(
    id=3,
    vcs_type=VcsType.BITBUCKET,
    username="acme",
    reponame="widget",
    repo_url="/srv/git/widget",
    default_branch="trunk",
    oss=True,
    created_at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=PACIFIC),
)

HANDMADE_PLAN = JobPlan(
    name="deploy",
    steps=(
        PlannedStep(kind=StepKind.CHECKOUT, name="Checkout code", type="checkout"),
        PlannedStep(
            kind=StepKind.RUN,
            name="ship it",
            command="echo ship\necho it",
            shell="/bin/bash -e",
            environment={"STAGE": "prod", "EMPTY": ""},
            working_directory="sub/dir",
            no_output_timeout=12.5,
            background=False,
            when=When.ON_FAIL,
        ),
        PlannedStep(kind=StepKind.ATTACH_WORKSPACE, name="Attaching workspace", args={"at": "/tmp/ws"}),
        PlannedStep(kind=StepKind.NOOP, name="Setup a remote Docker engine", source=""),
    ),
    environment={"JOB": "x"},
    shell="/bin/zsh",
    executor_kind="machine",
    image=None,
    resource_class="large",
)


def through_json(data: Any) -> Any:
    """What the other side of the pipe parses: also proves the encoded form is JSON."""
    return json.loads(json.dumps(data))


def request(**changes: Any) -> RunRequest:
    values: dict[str, Any] = {
        "build_id": 41,
        "project": PROJECT,
        "build_num": 7,
        "revision": "a" * 40,
        "branch": "trunk",
        "tag": None,
        "plan": config_mod.plan_job(config_mod.load_config(CONFIG, filename="c.yml"), "build"),
        "environment": {"CIRCLE_BUILD_NUM": "7", "UNICODE": "héllo ✓", "MULTI": "a\nb"},
        "parallelism": 2,
    }
    values.update(changes)
    return RunRequest(**values)


@pytest.mark.parametrize(
    "original",
    [
        pytest.param(request(), id="compiled-config-every-step-kind"),
        pytest.param(request(plan=HANDMADE_PLAN, parallelism=1), id="handmade-plan"),
        pytest.param(request(branch=None, tag="v1.2.3"), id="tag-no-branch"),
        pytest.param(request(environment={}), id="empty-environment"),
        pytest.param(request(workflow_id="wf-1", upstream_build_ids=(3, 1, 2)), id="workflow-and-upstreams"),
        pytest.param(request(no_dependency_cache=True), id="retried-without-cache"),
        pytest.param(
            request(
                project=Project(id=None, vcs_type=VcsType.GITHUB, username="u", reponame="r", repo_url="x")
            ),
            id="project-without-id-or-created-at",
        ),
    ],
)
def test_run_request_round_trip(original: RunRequest) -> None:
    decoded = protocol.decode_request(through_json(protocol.encode_request(original)))
    assert decoded == original
    assert decoded.plan.steps == original.plan.steps
    assert all(type(s.kind) is StepKind and type(s.when) is When for s in decoded.plan.steps)
    assert type(decoded.project.vcs_type) is VcsType
    assert decoded.project.created_at == original.project.created_at
    if original.project.created_at is not None:
        assert decoded.project.created_at is not None
        assert decoded.project.created_at.utcoffset() == original.project.created_at.utcoffset()


def test_request_without_newer_fields_decodes_with_their_defaults() -> None:
    """A message from a sender older than the optional fields (timings, workflows, no-cache)."""
    data = through_json(protocol.encode_request(request(no_dependency_cache=True, workflow_id="wf")))
    for name in ("timings", "workflow_id", "upstream_build_ids", "no_dependency_cache"):
        del data[name]
    decoded = protocol.decode_request(data)
    assert decoded == request()
    assert decoded.no_dependency_cache is False


def test_compiled_plan_keeps_its_step_kinds() -> None:
    kinds = [s.kind for s in request().plan.steps]
    assert kinds == [
        StepKind.CHECKOUT,
        StepKind.RESTORE_CACHE,
        StepKind.RUN,
        StepKind.SAVE_CACHE,
        StepKind.STORE_TEST_RESULTS,
        StepKind.STORE_ARTIFACTS,
        StepKind.NOOP,
    ]


FULL_ACTION = Action(
    step=103,
    index=2,
    name="Tests",
    type="test",
    source="config",
    bash_command="#!/bin/sh\nmake test",
    status=ActionStatus.TIMEDOUT,
    exit_code=143,
    start_time=WHEN,
    end_time=datetime(2024, 5, 1, 3, 4, 0, 1, tzinfo=PACIFIC),
    background=True,
    parallel=False,
    has_output=True,
    truncated=True,
    messages=("Too long with no output (exceeded 5m0s): context deadline exceeded", "second"),
)


@pytest.mark.parametrize(
    "original",
    [
        pytest.param(FULL_ACTION, id="every-field-set"),
        pytest.param(Action(step=0, name="Spin up Environment", source=None), id="defaults-none-times"),
        pytest.param(Action(step=101, name="running", start_time=WHEN), id="started-not-ended"),
        *[
            pytest.param(Action(step=101, name="s", status=status, exit_code=1), id=f"status-{status.value}")
            for status in ActionStatus
        ],
    ],
)
def test_action_round_trip(original: Action) -> None:
    decoded = protocol.decode_action(through_json(protocol.encode_action(original)))
    assert decoded == original
    assert type(decoded.status) is ActionStatus
    assert isinstance(decoded.messages, tuple)
    for name in ("start_time", "end_time"):
        before, after = getattr(original, name), getattr(decoded, name)
        if before is None:
            assert after is None
        else:
            assert after.utcoffset() == before.utcoffset()
    assert decoded.run_time_millis == original.run_time_millis


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param((), id="none"),
        pytest.param((Message(type="error", message="boom", reason="infrastructure"),), id="with-reason"),
        pytest.param(
            (Message(type="warning", message="w"), Message(type="error", message="e ✓\nline two")),
            id="several-without-reason",
        ),
    ],
)
def test_messages_round_trip(messages: tuple[Message, ...]) -> None:
    assert protocol.decode_messages(through_json(protocol.encode_messages(messages))) == messages


def test_messages_without_a_reason_key_decode() -> None:
    assert protocol.decode_messages([{"type": "error", "message": "old sender"}]) == (
        Message(type="error", message="old sender", reason=None),
    )


@pytest.mark.parametrize(
    "moment",
    [
        pytest.param(WHEN, id="utc-microseconds"),
        pytest.param(datetime(2024, 12, 31, 23, 59, 59, tzinfo=PACIFIC), id="negative-offset"),
        pytest.param(datetime(2024, 3, 31, 2, 30, tzinfo=timezone(timedelta(hours=5, minutes=45))), id="odd"),
    ],
)
def test_time_round_trip_keeps_the_instant_and_offset(moment: datetime) -> None:
    decoded = protocol.decode_time(through_json(protocol.encode_time(moment)))
    assert decoded == moment
    assert decoded.utcoffset() == moment.utcoffset()
