"""One contract for every WorkerStore: the in-memory fake, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from circlet.core.workers import WorkerInfo, WorkerState, WorkerStore
from circlet.store.migrate import migrate
from circlet.store.sql import make_engine
from circlet.store.workers_sql import SqlWorkerStore
from circlet.testing.workers import InMemoryWorkerStore

T0 = datetime(2026, 11, 28, 6, 0, 0, 250000, tzinfo=UTC)
INFO = WorkerInfo(
    name="ci-1:4242",
    host="ci-1",
    pid=4242,
    resource_classes=("medium", "large"),
    slots=4,
    busy=1,
    running=(17,),
    version="0.1.0",
)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WorkerStore]:
    if request.param == "memory":
        yield InMemoryWorkerStore()
        return
    url = (
        f"sqlite:///{tmp_path}/circlet.db"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = make_engine(url)
    migrate(engine)
    try:
        yield SqlWorkerStore(engine)
    finally:
        engine.dispose()


def test_first_heartbeat_creates_an_alive_worker(store: WorkerStore) -> None:
    worker = store.save_heartbeat(INFO, T0)

    assert worker.info == INFO
    assert (worker.first_seen, worker.last_seen, worker.state) == (T0, T0, WorkerState.ALIVE)
    assert store.get_worker(INFO.name) == worker
    assert store.get_worker("nobody") is None


def test_later_heartbeat_updates_info_and_keeps_first_seen(store: WorkerStore) -> None:
    store.save_heartbeat(INFO, T0)
    later = replace(INFO, busy=0, running=(), slots=2)

    worker = store.save_heartbeat(later, T0 + timedelta(seconds=1))

    assert worker.info == later
    assert worker.first_seen == T0
    assert worker.last_seen == T0 + timedelta(seconds=1)


def test_stopping_worker_is_stopped_once_idle(store: WorkerStore) -> None:
    finishing = store.save_heartbeat(replace(INFO, stopping=True), T0)
    idle = store.save_heartbeat(replace(INFO, stopping=True, busy=0, running=()), T0)

    assert finishing.state is WorkerState.ALIVE  # a warm shutdown lets its build finish
    assert idle.state is WorkerState.STOPPED


def test_list_is_by_name(store: WorkerStore) -> None:
    for name in ("b:2", "a:1", "c:3"):
        store.save_heartbeat(replace(INFO, name=name), T0)

    assert [w.name for w in store.list_workers()] == ["a:1", "b:2", "c:3"]


@pytest.mark.parametrize(
    ("seen_before", "expected"),
    [
        pytest.param(T0 + timedelta(seconds=1), True, id="silent-since-before-cutoff"),
        pytest.param(T0, False, id="seen-exactly-at-cutoff"),
        pytest.param(T0 - timedelta(seconds=1), False, id="seen-after-cutoff"),
    ],
)
def test_mark_lost_only_when_silent(store: WorkerStore, seen_before: datetime, expected: bool) -> None:
    store.save_heartbeat(INFO, T0)

    assert store.mark_lost(INFO.name, seen_before) is expected
    worker = store.get_worker(INFO.name)
    assert worker is not None
    assert worker.state is (WorkerState.LOST if expected else WorkerState.ALIVE)


def test_mark_lost_once(store: WorkerStore) -> None:
    store.save_heartbeat(INFO, T0)
    cutoff = T0 + timedelta(seconds=60)

    assert store.mark_lost(INFO.name, cutoff) is True
    assert store.mark_lost(INFO.name, cutoff) is False  # a second sweeper does nothing
    assert store.mark_lost("nobody", cutoff) is False


def test_heartbeat_revives_a_lost_worker(store: WorkerStore) -> None:
    store.save_heartbeat(INFO, T0)
    store.mark_lost(INFO.name, T0 + timedelta(seconds=60))

    worker = store.save_heartbeat(INFO, T0 + timedelta(seconds=61))

    assert worker.state is WorkerState.ALIVE


def test_forget_drops_only_old_dead_workers(store: WorkerStore) -> None:
    store.save_heartbeat(replace(INFO, name="alive"), T0)
    store.save_heartbeat(replace(INFO, name="lost"), T0)
    store.mark_lost("lost", T0 + timedelta(seconds=1))
    idle = replace(INFO, stopping=True, busy=0, running=())
    store.save_heartbeat(replace(idle, name="stopped"), T0)
    store.save_heartbeat(replace(idle, name="recent"), T0 + timedelta(hours=2))

    assert store.forget(T0 + timedelta(hours=1)) == 2
    assert [w.name for w in store.list_workers()] == ["alive", "recent"]
