"""Containers of a build run as separate celery tasks (`parallelism: N`): the core rules
(core/workers.py, table-driven) and the service + fleet on fakes, with a clock the test moves."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from textwrap import dedent

import pytest

from circlet.core.model import Build, Lifecycle, Message, Outcome, Project
from circlet.core.ports import BuildQuery
from circlet.core.workers import (
    WorkerInfo,
    build_workers,
    combine_outcomes,
    finish_container,
    running_workers,
    start_container,
    to_cancel,
    waiting_message,
)
from circlet.fleet import Fleet
from circlet.service import Circlet
from circlet.testing import (
    FakeSourceHost,
    InMemoryBuildStore,
    InMemoryLogStore,
    InMemoryProjectSettingsStore,
    RecordingDispatcher,
)
from circlet.testing.workers import InMemoryWorkerStore

T0 = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
URL = "https://git.example/acme/widget.git"
CONFIG = dedent(
    """\
    version: 2
    jobs:
      build:
        docker: [{image: cimg/base:stable}]
        parallelism: 3
        steps: [{run: make test}]
    """
)
S, F, C, INFRA, T, N = (
    Outcome.SUCCESS,
    Outcome.FAILED,
    Outcome.CANCELED,
    Outcome.INFRASTRUCTURE_FAIL,
    Outcome.TIMEDOUT,
    Outcome.NO_TESTS,
)

# ------------------------------------------------------------------ core rules


@pytest.mark.parametrize(
    ("outcomes", "worst"),
    [
        pytest.param([S, S, S], S, id="all-pass"),
        pytest.param([S, F, S], F, id="one-fails"),
        pytest.param([F, T, S], T, id="timedout-beats-failed"),
        pytest.param([T, INFRA, F], INFRA, id="infrastructure-beats-timedout"),
        pytest.param([INFRA, C, S], C, id="canceled-beats-all"),
        pytest.param([N, S], N, id="no-tests-beats-success"),
        pytest.param([N, F], F, id="failed-beats-no-tests"),
    ],
)
def test_build_outcome_is_the_worst_container(outcomes: list[Outcome], worst: Outcome) -> None:
    assert combine_outcomes(outcomes) is worst


def _build(**fields: object) -> Build:
    base = Build(
        id=1,
        project_id=1,
        build_num=1,
        lifecycle=Lifecycle.QUEUED,
        parallel=3,
        queued_at=T0,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def test_first_container_starts_the_build_and_a_container_never_starts_twice() -> None:
    first = start_container(_build(), 1, "w1", T0)
    assert first is not None
    assert (first.lifecycle, first.worker, first.start_time) == (Lifecycle.RUNNING, "w1", T0)
    second = start_container(first, 0, "w2", T0 + timedelta(seconds=1))
    assert second is not None
    assert (second.worker, second.start_time) == ("w1", T0)  # the first container's
    assert build_workers(second) == {"w1", "w2"}

    assert start_container(second, 1, "w3", T0) is None  # a redelivered message
    assert start_container(second, 1, "w1", T0 + timedelta(seconds=5)) is None  # ... to the same worker
    assert start_container(second, 1, "w1", T0) is second  # the same call resent: yes again
    assert start_container(second, 3, "w3", T0) is None  # out of range
    assert start_container(replace(second, outcome=Outcome.CANCELED), 2, "w3", T0) is None


def test_build_ends_with_its_last_container_and_ignores_resends() -> None:
    build = _build()
    for node, worker in enumerate(("w1", "w2", "w1")):
        started = start_container(build, node, worker, T0)
        assert started is not None
        build = started
    oops = Message(type="error", message="node 1 broke")

    build, final = _finish(build, 0, S)
    assert final is None
    assert running_workers(build) == {"w1", "w2"}
    build, final = _finish(build, 1, F, (oops,))
    assert final is None and build.messages == (oops,)
    assert finish_container(build, 1, S) == (None, None)  # a resend changes nothing
    build, final = _finish(build, 2, S)
    assert final is F
    assert running_workers(build) == frozenset()


def _finish(
    build: Build, node: int, outcome: Outcome, messages: tuple[Message, ...] = ()
) -> tuple[Build, Outcome | None]:
    saved, final = finish_container(build, node, outcome, messages)
    assert saved is not None
    return saved, final


def test_every_worker_of_a_build_may_run_it() -> None:
    build = start_container(_build(), 0, "w1", T0)
    assert build is not None
    build = start_container(build, 1, "w2", T0)
    assert build is not None

    assert to_cancel("w2", {1: build}) == ()
    assert to_cancel("w3", {1: build}) == (1,)
    assert to_cancel("w2", {1: replace(build, outcome=Outcome.CANCELED)}) == (1,)


# ------------------------------------------------------------------ the service and the fleet


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def svc() -> Iterator[tuple[Circlet, Fleet, InMemoryBuildStore, Clock, Project]]:
    source = FakeSourceHost()
    source.add_commit(URL, files={".circleci/config.yml": CONFIG}, message="First")
    store, clock = InMemoryBuildStore(), Clock()
    fleet = Fleet(InMemoryWorkerStore(), lost_after=30.0, resubmit_after=60.0, sweeping=True, clock=clock)
    circlet = Circlet(
        store=store,
        logs=InMemoryLogStore(),
        source=source,
        dispatcher=RecordingDispatcher(),
        settings=InMemoryProjectSettingsStore(),
        base_url="https://ci.example.com",
        clock=clock,
        fleet=fleet,
    )
    project = circlet.add_project(vcs_type="gh", username="acme", reponame="widget", repo_url=URL)
    fleet.start()
    fleet.stop()
    yield circlet, fleet, store, clock, project


def _info(name: str, running: tuple[int, ...]) -> WorkerInfo:
    return WorkerInfo(
        name=name, host="ci", pid=1, resource_classes=("medium",), slots=2, busy=len(running), running=running
    )


def test_service_runs_until_the_last_container_reports(
    svc: tuple[Circlet, Fleet, InMemoryBuildStore, Clock, Project],
) -> None:
    circlet, _, store, clock, project = svc
    build = circlet.trigger(project)
    bid = build.id or 0
    assert build.parallel == 3

    assert circlet.build_started(bid, clock(), "w1", node=0)
    assert circlet.build_started(bid, clock(), "w2", node=1)
    assert not circlet.build_started(bid, clock(), "w3", node=1)  # never twice
    assert circlet.build_started(bid, clock(), "w2", node=2)
    circlet.build_finished(bid, S, clock(), (), node=0)
    circlet.build_finished(bid, F, clock(), (), node=2)
    assert (store.get_build_by_id(bid) or build).lifecycle is Lifecycle.RUNNING

    circlet.build_finished(bid, S, clock(), (), node=1)

    done = store.get_build_by_id(bid)
    assert done is not None
    assert (done.lifecycle, done.outcome, done.worker) == (Lifecycle.FINISHED, Outcome.FAILED, "w1")


def test_cancel_before_a_container_starts_still_ends_the_build(
    svc: tuple[Circlet, Fleet, InMemoryBuildStore, Clock, Project],
) -> None:
    circlet, _, store, clock, project = svc
    bid = circlet.trigger(project).id or 0
    assert circlet.build_started(bid, clock(), "w1", node=0)
    circlet.cancel(project, 1)
    circlet.build_finished(bid, C, clock(), (), node=0)

    assert not circlet.build_started(bid, clock(), "w2", node=1)  # refused: counts as canceled
    assert not circlet.build_started(bid, clock(), "w2", node=2)

    done = store.get_build_by_id(bid)
    assert done is not None
    assert (done.lifecycle, done.outcome) == (Lifecycle.FINISHED, Outcome.CANCELED)


def test_a_lost_worker_fails_the_build_once_and_it_is_retried_once(
    svc: tuple[Circlet, Fleet, InMemoryBuildStore, Clock, Project],
) -> None:
    circlet, fleet, store, clock, project = svc
    bid = circlet.trigger(project).id or 0
    for node, worker in enumerate(("w1", "w2", "w2")):
        assert circlet.build_started(bid, clock(), worker, node=node)
    circlet.worker_heartbeat(_info("w1", (bid,)))
    circlet.worker_heartbeat(_info("w2", (bid,)))
    clock.now += timedelta(seconds=20)
    circlet.worker_heartbeat(_info("w1", (bid,)))  # w1 keeps beating; w2 goes silent
    clock.now += timedelta(seconds=15)

    assert fleet.sweep() == ["w2"]
    assert fleet.sweep() == []

    lost = store.get_build_by_id(bid)
    assert lost is not None
    assert lost.outcome is Outcome.INFRASTRUCTURE_FAIL
    assert sum("worker w2" in m.message for m in lost.messages) == 1
    builds = store.list_builds(BuildQuery(limit=10))
    assert sorted(b.build_num for b in builds) == [1, 2]  # exactly one retry
    assert circlet.worker_heartbeat(_info("w1", (bid,))).cancel == (bid,)  # w1 stops its container
    circlet.build_finished(bid, C, clock(), (), node=0)  # its late report changes nothing
    assert (store.get_build_by_id(bid) or lost).outcome is Outcome.INFRASTRUCTURE_FAIL


def test_the_note_that_no_worker_serves_the_class_goes_when_a_container_starts() -> None:
    other = Message(type="warning", message="kept", reason="config")
    waiting = _build(messages=(waiting_message("large"), other))
    started = start_container(waiting, 0, "big", T0)
    assert started is not None and started.messages == (other,)
