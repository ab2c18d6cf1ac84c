"""The fleet: core/workers.py rules (table-driven) and fleet.py on fakes, with a clock the test moves."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from textwrap import dedent

import pytest

from circlet.core.model import Action, Build, Lifecycle, Message, Outcome, Project, Why
from circlet.core.ports import BuildQuery
from circlet.core.workers import (
    HeartbeatReply,
    Worker,
    WorkerInfo,
    WorkerState,
    heartbeat_state,
    is_lost,
    serves,
    should_retry,
    to_cancel,
    waiting_message,
    worker_json,
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
INFO = WorkerInfo(name="w1", host="ci-1", pid=10, resource_classes=("medium",), slots=2, busy=0)
CONFIG = dedent(
    """\
    version: 2
    jobs:
      build:
        docker: [{image: cimg/base:stable}]
        steps: [{run: make test}]
      big:
        docker: [{image: cimg/base:stable}]
        resource_class: large
        steps: [{run: make test}]
    """
)

# ------------------------------------------------------------------ core rules


def _worker(last_seen: datetime, state: WorkerState = WorkerState.ALIVE, **info: object) -> Worker:
    return Worker(info=replace(INFO, **info), first_seen=T0, last_seen=last_seen, state=state)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("silent", "state", "lost"),
    [
        pytest.param(0.0, WorkerState.ALIVE, False, id="just-heard"),
        pytest.param(30.0, WorkerState.ALIVE, False, id="exactly-at-timeout"),
        pytest.param(30.5, WorkerState.ALIVE, True, id="past-timeout"),
        pytest.param(99.0, WorkerState.LOST, False, id="already-lost"),
        pytest.param(99.0, WorkerState.STOPPED, False, id="stopped-cleanly"),
    ],
)
def test_is_lost(silent: float, state: WorkerState, lost: bool) -> None:
    worker = _worker(T0, state)

    assert is_lost(worker, T0 + timedelta(seconds=silent), 30.0) is lost


@pytest.mark.parametrize(
    ("stopping", "busy", "running", "state"),
    [
        pytest.param(False, 0, (), WorkerState.ALIVE, id="working"),
        pytest.param(True, 1, (7,), WorkerState.ALIVE, id="warm-shutdown-finishing"),
        pytest.param(True, 1, (), WorkerState.ALIVE, id="warm-shutdown-starting-one"),
        pytest.param(True, 0, (), WorkerState.STOPPED, id="stopped"),
    ],
)
def test_heartbeat_state(stopping: bool, busy: int, running: tuple[int, ...], state: WorkerState) -> None:
    assert heartbeat_state(replace(INFO, stopping=stopping, busy=busy, running=running)) is state


@pytest.mark.parametrize(
    ("workers", "served"),
    [
        pytest.param([], False, id="no-worker"),
        pytest.param([_worker(T0)], True, id="alive-of-class"),
        pytest.param([_worker(T0, resource_classes=("large",))], False, id="other-class"),
        pytest.param([_worker(T0, WorkerState.LOST)], False, id="lost"),
        pytest.param([_worker(T0, stopping=True)], False, id="shutting-down"),
        pytest.param([_worker(T0, WorkerState.LOST), _worker(T0, name="w2")], True, id="one-of-two"),
    ],
)
def test_serves(workers: list[Worker], served: bool) -> None:
    assert serves(workers, "medium") is served


def _build(**fields: object) -> Build:
    values: dict[str, object] = {"id": 1, "project_id": 1, "lifecycle": Lifecycle.RUNNING, "worker": "w1"}
    values.update(fields)
    return Build(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "cancel"),
    [
        pytest.param(_build(), False, id="running-here"),
        pytest.param(None, True, id="gone"),
        pytest.param(_build(outcome=Outcome.CANCELED), True, id="canceled-by-user"),
        pytest.param(
            _build(lifecycle=Lifecycle.FINISHED, outcome=Outcome.INFRASTRUCTURE_FAIL), True, id="lost"
        ),
        pytest.param(_build(worker="w2"), True, id="started-elsewhere"),
        pytest.param(_build(lifecycle=Lifecycle.QUEUED, worker=None), True, id="not-started"),
    ],
)
def test_to_cancel(build: Build | None, cancel: bool) -> None:
    assert to_cancel("w1", {1: build}) == ((1,) if cancel else ())


@pytest.mark.parametrize(
    ("build", "retry"),
    [
        pytest.param(_build(), True, id="first-loss"),
        pytest.param(_build(why=Why.AUTO_RETRY), False, id="already-an-auto-retry"),
        pytest.param(_build(why=Why.RETRY), True, id="manual-retry-is-retried"),
        pytest.param(_build(outcome=Outcome.CANCELED), False, id="canceled"),
    ],
)
def test_should_retry(build: Build, retry: bool) -> None:
    assert should_retry(build) is retry


def test_info_and_reply_round_trip_as_json() -> None:
    info = replace(INFO, running=(3, 4), busy=2, version="1.2", stopping=True, crashed=(5,))
    reply = HeartbeatReply(cancel=(4,), interval=0.25, lost_after=9.0)

    assert WorkerInfo.from_dict(info.to_dict()) == info
    assert HeartbeatReply.from_dict(reply.to_dict()) == reply


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"host": "h", "pid": 1, "resource_classes": ["m"], "slots": 1, "busy": 0}, id="no-name"),
        pytest.param({**INFO.to_dict(), "resource_classes": []}, id="no-class"),
        pytest.param({**INFO.to_dict(), "slots": "many"}, id="slots-not-a-number"),
    ],
)
def test_malformed_heartbeat_is_refused(body: dict[str, object]) -> None:
    with pytest.raises((KeyError, ValueError, TypeError)):
        WorkerInfo.from_dict(body)


def test_worker_json_shows_last_heartbeat() -> None:
    shown = worker_json(_worker(T0, busy=1), T0 + timedelta(seconds=2.5))

    assert shown["last_heartbeat"] == "2026-11-28T06:00:00Z"
    assert shown["seconds_since_heartbeat"] == 2.5
    assert (shown["busy"], shown["slots"], shown["state"]) == (1, 2, "alive")


# ------------------------------------------------------------------ the fleet on fakes


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Env:
    svc: Circlet
    fleet: Fleet
    workers: InMemoryWorkerStore
    store: InMemoryBuildStore
    clock: Clock
    project: Project
    published: list[int]
    nodes: list[frozenset[int] | None]  # what each publish sent (None: every container)

    def trigger(self, job: str = "build", parallel: int | None = None) -> Build:
        build = self.svc.trigger(self.project, job=job, parallel=parallel)
        self.fleet.submitted(build.id or 0, "large" if job == "big" else "medium", self._publisher(build))
        return build

    def _publisher(self, build: Build) -> object:
        def publish(nodes: frozenset[int] | None = None) -> bool:
            self.published.append(build.id or 0)
            self.nodes.append(nodes)
            return True

        return publish

    def start(self, build: Build, worker: str = "w1") -> None:
        assert self.svc.build_started(build.id or 0, self.clock(), worker)

    def get(self, build: Build) -> Build:
        found = self.store.get_build_by_id(build.id or 0)
        assert found is not None
        return found

    def builds(self) -> list[Build]:
        return sorted(self.store.list_builds(BuildQuery(limit=100)), key=lambda b: b.build_num)


@pytest.fixture
def env() -> Iterator[Env]:
    source = FakeSourceHost()
    source.add_commit(URL, files={".circleci/config.yml": CONFIG}, message="First")
    store, clock, workers = InMemoryBuildStore(), Clock(), InMemoryWorkerStore()
    fleet = Fleet(workers, lost_after=30.0, resubmit_after=60.0, sweeping=True, clock=clock)
    svc = Circlet(
        store=store,
        logs=InMemoryLogStore(),
        source=source,
        dispatcher=RecordingDispatcher(),
        settings=InMemoryProjectSettingsStore(),
        base_url="https://ci.example.com",
        clock=clock,
        fleet=fleet,
    )
    project = svc.add_project(vcs_type="gh", username="acme", reponame="widget", repo_url=URL)
    fleet.start()  # (the sweeper thread runs every second; the tests call sweep() themselves)
    fleet.stop()
    yield Env(
        svc=svc,
        fleet=fleet,
        workers=workers,
        store=store,
        clock=clock,
        project=project,
        published=[],
        nodes=[],
    )


def test_heartbeat_records_the_worker_and_lists_it(env: Env) -> None:
    reply = env.svc.worker_heartbeat(INFO)

    assert reply.cancel == ()
    assert [w.info for w in env.svc.list_workers()] == [INFO]


def test_heartbeat_reply_cancels_a_canceled_build(env: Env) -> None:
    build = env.trigger()
    env.start(build)
    assert env.svc.worker_heartbeat(replace(INFO, busy=1, running=(build.id or 0,))).cancel == ()

    env.svc.cancel(env.project, build.build_num)

    assert env.svc.worker_heartbeat(replace(INFO, busy=1, running=(build.id or 0,))).cancel == (build.id,)


def test_a_build_never_starts_twice(env: Env) -> None:
    build = env.trigger()
    env.start(build, "w1")

    assert env.svc.build_started(build.id or 0, env.clock(), "w2") is False  # a redelivered message
    assert env.get(build).worker == "w1"


def test_silent_worker_is_lost_and_its_build_retried_once(env: Env) -> None:
    build = env.trigger()
    env.svc.worker_heartbeat(INFO)
    env.start(build)
    env.clock.tick(31)  # past lost_after since the fleet started, too

    assert env.fleet.sweep() == ["w1"]

    lost = env.get(build)
    assert (lost.lifecycle, lost.outcome) == (Lifecycle.FINISHED, Outcome.INFRASTRUCTURE_FAIL)
    assert "worker w1 (host ci-1)" in lost.messages[0].message
    assert env.svc.status_of(lost) == "retried"
    retry = env.builds()[-1]
    assert (retry.build_num, retry.retry_of, retry.why) == (2, 1, Why.AUTO_RETRY)
    assert "retried this build as build 2" in lost.messages[-1].message
    assert env.fleet.sweep() == []  # nothing twice
    assert len(env.builds()) == 2


def test_a_lost_auto_retry_is_not_retried_again(env: Env) -> None:
    env.svc.worker_heartbeat(INFO)
    first = env.trigger()
    env.start(first)
    env.clock.tick(31)
    env.fleet.sweep()
    retry = env.builds()[-1]
    env.svc.worker_heartbeat(replace(INFO, name="w2"))
    env.start(retry, "w2")
    env.clock.tick(31)

    assert env.fleet.sweep() == ["w2"]

    assert env.get(retry).outcome is Outcome.INFRASTRUCTURE_FAIL
    assert len(env.builds()) == 2
    assert "did not retry" in env.get(retry).messages[-1].message


def test_a_retry_that_cannot_be_made_is_explained(env: Env) -> None:
    build = env.trigger()
    env.svc.worker_heartbeat(INFO)
    env.start(build)
    env.clock.tick(31)
    env.svc.source = BrokenSource()  # type: ignore[assignment]

    env.fleet.sweep()

    lost = env.get(build)
    assert lost.outcome is Outcome.INFRASTRUCTURE_FAIL
    assert "could not retry this build: Could not fetch the repository" in lost.messages[-1].message
    assert len(env.builds()) == 1


class BrokenSource(FakeSourceHost):
    def sync(self, project: Project) -> None:
        from circlet.core.errors import RepositoryError

        raise RepositoryError("fatal: unable to access the repository")


def test_worker_that_keeps_beating_keeps_its_build(env: Env) -> None:
    build = env.trigger()
    env.start(build)
    for _ in range(10):
        env.clock.tick(10)
        env.svc.worker_heartbeat(replace(INFO, busy=1, running=(build.id or 0,)))
        assert env.fleet.sweep() == []

    assert env.get(build).lifecycle is Lifecycle.RUNNING


def test_running_build_of_an_unknown_worker_ends_after_the_timeout(env: Env) -> None:
    build = env.trigger()
    env.start(build, "ghost")  # it died while no server ran: never heard of since
    env.clock.tick(31)
    env.fleet.sweep()  # the sweeper sees it for the first time: a heartbeat may still come
    assert env.get(build).lifecycle is Lifecycle.RUNNING

    env.clock.tick(31)
    env.fleet.sweep()

    assert env.get(build).outcome is Outcome.INFRASTRUCTURE_FAIL
    assert "worker ghost" in env.get(build).messages[0].message
    assert env.builds()[-1].retry_of == build.build_num


def test_build_its_alive_worker_stopped_listing_ends_and_is_retried(env: Env) -> None:
    build = env.trigger()
    env.start(build)
    env.svc.worker_heartbeat(replace(INFO, busy=1, running=(build.id or 0,)))
    for _ in range(3):  # the worker keeps beating, but its runner dropped the build
        env.clock.tick(12)
        env.svc.worker_heartbeat(INFO)
        env.fleet.sweep()

    lost = env.get(build)
    assert lost.outcome is Outcome.INFRASTRUCTURE_FAIL
    assert "worker w1 (host ci-1) no longer runs this build" in lost.messages[0].message
    assert env.builds()[-1].retry_of == build.build_num


def test_restart_keeps_running_builds_for_the_fleet(env: Env) -> None:
    build = env.trigger()
    env.start(build)

    env.svc.recover()  # as on a server start

    assert env.get(build).lifecycle is Lifecycle.RUNNING


def test_waiting_build_says_no_worker_serves_its_class_until_one_does(env: Env) -> None:
    env.svc.worker_heartbeat(INFO)  # medium only
    build = env.trigger("big")

    env.fleet.sweep()
    assert env.get(build).messages == (waiting_message("large"),)

    env.svc.worker_heartbeat(replace(INFO, name="w2", resource_classes=("large",)))
    env.fleet.sweep()
    assert env.get(build).messages == ()
    assert env.get(build).lifecycle is Lifecycle.NOT_RUNNING


def test_waiting_note_goes_when_the_build_starts_between_sweeps(env: Env) -> None:
    build = env.trigger("big")
    env.fleet.sweep()
    assert env.get(build).messages == (waiting_message("large"),)

    env.start(build, "w2")  # a worker of the class came and took it before the next sweep
    env.fleet.sweep()

    assert env.get(build).messages == ()


def test_lost_message_is_republished_when_a_worker_could_take_it(env: Env) -> None:
    build = env.trigger()
    assert env.published == [build.id]
    env.svc.worker_heartbeat(replace(INFO, busy=2))  # busy: its message may just wait its turn
    env.fleet.resubmit_after = 0.0
    env.fleet.sweep()
    assert env.published == [build.id]

    env.svc.worker_heartbeat(INFO)  # a free slot, yet the build still waits: the message is gone
    env.fleet.sweep()

    assert env.published == [build.id, build.id]


def test_unpublished_build_is_published_by_the_sweeper(env: Env) -> None:
    build = env.svc.trigger(env.project)
    attempts: list[bool] = [False, True]  # the broker is down, then back

    def publish(nodes: frozenset[int] | None = None) -> bool:
        return attempts.pop(0)

    env.fleet.submitted(build.id or 0, "medium", publish)
    env.fleet.sweep()

    assert attempts == []


def test_a_build_whose_first_publish_is_in_flight_is_not_published_again(env: Env) -> None:
    build = env.svc.trigger(env.project)
    calls: list[int] = []

    def publish(nodes: frozenset[int] | None = None) -> bool:
        calls.append(1)
        if len(calls) == 1:
            env.fleet.sweep()  # the sweeper runs while the executor's first publish is under way
        return True

    env.fleet.submitted(build.id or 0, "medium", publish)
    env.fleet.sweep()

    assert calls == [1]


def test_containers_that_never_started_are_published_again(env: Env) -> None:
    build = env.trigger(parallel=3)
    env.svc.worker_heartbeat(INFO)
    assert env.svc.build_started(build.id or 0, env.clock(), "w1", node=1)
    env.fleet.resubmit_after = 0.0

    env.fleet.sweep()  # running, but containers 0 and 2 never came: their messages were lost

    assert env.nodes == [None, frozenset({0, 2})]
    for node in (0, 2):
        assert env.svc.build_started(build.id or 0, env.clock(), "w1", node=node)
    env.fleet.sweep()
    assert len(env.nodes) == 2  # all started: nothing more to publish


def test_cancel_ends_the_containers_that_never_started(env: Env) -> None:
    build = env.trigger(parallel=3)
    assert env.svc.build_started(build.id or 0, env.clock(), "w1", node=0)
    assert env.svc.build_started(build.id or 0, env.clock(), "w1", node=1)
    env.svc.build_finished(build.id or 0, Outcome.SUCCESS, env.clock(), node=1)

    env.svc.cancel(env.project, build.build_num)  # container 2 never started
    assert env.get(build).lifecycle is Lifecycle.RUNNING  # container 0 still runs
    env.svc.build_finished(build.id or 0, Outcome.CANCELED, env.clock(), node=0)

    done = env.get(build)
    assert (done.lifecycle, done.outcome) == (Lifecycle.FINISHED, Outcome.CANCELED)
    assert env.svc.build_started(build.id or 0, env.clock(), "w2", node=2) is False  # its late message


def test_cancel_after_the_started_containers_ended_ends_the_build(env: Env) -> None:
    build = env.trigger(parallel=2)
    assert env.svc.build_started(build.id or 0, env.clock(), "w1", node=0)
    env.svc.build_finished(build.id or 0, Outcome.SUCCESS, env.clock(), node=0)

    env.svc.cancel(env.project, build.build_num)

    done = env.get(build)
    assert (done.lifecycle, done.outcome) == (Lifecycle.FINISHED, Outcome.CANCELED)


def test_restart_publishes_again_the_containers_of_a_running_build_that_never_started(env: Env) -> None:
    build = env.trigger(parallel=2)
    assert env.svc.build_started(build.id or 0, env.clock(), "w1", node=0)
    dispatcher = env.svc.dispatcher
    assert isinstance(dispatcher, RecordingDispatcher)
    before = len(dispatcher.submitted)

    env.svc.recover()  # as on a server start

    assert [r.build_id for r in dispatcher.submitted[before:]] == [build.id]
    assert env.get(build).lifecycle is Lifecycle.RUNNING


def test_a_crashed_runner_ends_its_build_at_once_and_it_is_retried_once(env: Env) -> None:
    build = env.trigger()
    env.svc.worker_heartbeat(replace(INFO, busy=1, running=(build.id or 0,)))
    env.start(build)

    env.svc.worker_heartbeat(replace(INFO, crashed=(build.id or 0,)))  # no waiting for lost_after
    assert env.get(build).lifecycle is Lifecycle.RUNNING  # (the heartbeat's answer does not wait)
    env.fleet.sweep()  # the next pass, a second later, ends it
    assert env.get(build).outcome is Outcome.INFRASTRUCTURE_FAIL
    env.svc.worker_heartbeat(replace(INFO, crashed=(build.id or 0,)))  # said again (reply was lost)
    env.clock.tick(31)
    env.fleet.sweep()  # ... nor does the sweeper end it a second time

    lost = env.get(build)
    assert lost.outcome is Outcome.INFRASTRUCTURE_FAIL
    assert "the runner process of worker w1 (host ci-1) died" in lost.messages[0].message
    assert [b.retry_of for b in env.builds()] == [None, build.build_num]


def test_a_lost_build_whose_ending_failed_is_ended_by_a_later_pass(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = env.trigger()
    env.svc.worker_heartbeat(replace(INFO, busy=1, running=(build.id or 0,)))
    env.start(build)
    env.svc.worker_heartbeat(replace(INFO, crashed=(build.id or 0,)))
    real = env.store.list_actions
    calls: list[int] = []

    def hiccup(build_id: int) -> list[Action]:
        calls.append(build_id)
        if len(calls) == 1:
            raise OSError("the database went away for a moment")
        return real(build_id)

    monkeypatch.setattr(env.store, "list_actions", hiccup)
    with pytest.raises(OSError):
        env.fleet.sweep()
    assert env.get(build).lifecycle is Lifecycle.RUNNING
    env.fleet.sweep()  # the next pass

    assert env.get(build).outcome is Outcome.INFRASTRUCTURE_FAIL
    assert [b.retry_of for b in env.builds()] == [None, build.build_num]


def test_a_crash_reported_by_a_worker_that_does_not_run_the_build_is_ignored(env: Env) -> None:
    build = env.trigger()
    env.start(build, "w2")

    env.svc.worker_heartbeat(replace(INFO, crashed=(build.id or 0,)))  # w1 says so
    env.fleet.sweep()

    assert env.get(build).lifecycle is Lifecycle.RUNNING


def test_message_added_once(env: Env) -> None:
    build = env.trigger()
    note = Message(type="warning", message="x")

    env.svc.add_build_message(build.id or 0, note)
    env.svc.add_build_message(build.id or 0, note)

    assert env.get(build).messages == (note,)


# ------------------------------------------------------------------ the API and the CLI


def test_admin_workers_endpoint(env: Env) -> None:
    import asyncio

    import httpx

    from circlet.http.app import create_app
    from circlet.http.deps import Services
    from circlet.wire import Links

    env.svc.worker_heartbeat(replace(INFO, busy=1, running=(5,)))
    env.clock.tick(2)
    _, admin = env.svc.create_token(user=env.svc.ensure_user("root", admin=True))
    _, user = env.svc.create_token(user=env.svc.ensure_user("ada"))
    app = create_app(Services(circlet=env.svc, links=Links("https://ci.example.com", b"k" * 32)))

    def get(token: str) -> tuple[int, object]:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="https://ci.example.com") as client:
                return await client.get("/api/v1.1/admin/workers", headers={"Circle-Token": token})

        response = asyncio.run(call())
        return response.status_code, response.json()

    assert get(user) == (403, {"message": "Permission denied"})
    status, rows = get(admin)
    assert status == 200
    assert isinstance(rows, list)
    (row,) = rows
    assert (row["name"], row["host"], row["resource_classes"], row["slots"], row["busy"]) == (
        "w1",
        "ci-1",
        ["medium"],
        2,
        1,
    )
    assert (row["last_heartbeat"], row["seconds_since_heartbeat"], row["state"]) == (
        "2026-11-28T06:00:00Z",
        2.0,
        "alive",
    )


def test_workers_command_lists_the_fleet(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from circlet.bootstrap import build_services
    from circlet.cli import main
    from circlet.settings import load_settings

    monkeypatch.setenv("CIRCLET_DATA_DIR", str(tmp_path))
    for name in ("CIRCLET_EXECUTOR", "CIRCLET_DATABASE_URL", "CIRCLET_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    assert runner.invoke(main, ["workers"]).output == "no workers have reported to this server\n"
    app = build_services(load_settings())
    app.circlet.worker_heartbeat(replace(INFO, name="ci-1:10", resource_classes=("medium", "large"), busy=1))

    shown = runner.invoke(main, ["workers"])

    assert shown.exit_code == 0, shown.output
    assert "ci-1:10" in shown.output and "medium,large" in shown.output and "1/2" in shown.output
    assert '"state": "alive"' in runner.invoke(main, ["workers", "--json"]).output
