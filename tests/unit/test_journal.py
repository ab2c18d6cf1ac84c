"""ActionJournal on the in-memory store: write-behind, coalescing, ordering, failures, close."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from circlet.core.model import Action, ActionStatus, Build, Project, VcsType
from circlet.journal import ActionJournal
from circlet.testing import InMemoryBuildStore

T0 = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
NEVER = 3600.0  # a delay no test waits for: only explicit flushes write


class CountingStore(InMemoryBuildStore):
    """The in-memory store, keeping every save_actions batch it took (build id, actions), able to
    fail the next `fail` batches (running `during_failure` first, as if a record arrived while
    the database was busy) and to take up to `latency` seconds per batch, as a database does."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[int, list[Action]]] = []
        self.fail = 0
        self.during_failure: Callable[[], None] | None = None
        self.latency = 0.0
        self._guard = threading.Lock()

    def save_actions(self, build_id: int, actions: list[Action]) -> None:
        with self._guard:
            failing = self.fail > 0
            if failing:
                self.fail -= 1
        if failing:
            if self.during_failure is not None:
                self.during_failure()
            raise RuntimeError("database is locked")
        if self.latency:
            time.sleep(random.uniform(0, self.latency))
        super().save_actions(build_id, actions)
        with self._guard:
            self.writes.append((build_id, list(actions)))


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def builds(store: CountingStore) -> list[int]:
    project = store.add_project(
        Project(vcs_type=VcsType.GITHUB, username="acme", reponame="w", repo_url="/x")
    )
    return [store.create_build(Build(project_id=project.id or 0)).id or 0 for _ in range(3)]


@pytest.fixture
def journal(store: CountingStore) -> Iterator[ActionJournal]:
    journal = ActionJournal(store, delay=NEVER)
    yield journal
    journal.close()


def started(step: int, index: int = 0, name: str = "step") -> Action:
    return Action(step=step, index=index, name=name, start_time=T0)


def finished(step: int, index: int = 0, status: ActionStatus = ActionStatus.SUCCESS) -> Action:
    return replace(started(step, index), status=status, exit_code=0, end_time=T0 + timedelta(seconds=1))


def test_start_and_finish_of_one_action_are_one_write(
    store: CountingStore, journal: ActionJournal, builds: list[int]
) -> None:
    build = builds[0]
    journal.put(build, started(101))
    journal.put(build, finished(101))
    journal.flush(build)
    assert store.list_actions(build) == [finished(101)]
    assert store.writes == [(build, [finished(101)])]


def test_the_background_writer_coalesces_a_quick_step(store: CountingStore, builds: list[int]) -> None:
    """With the real delay: a step that ends within it is written once, by the journal's thread."""
    journal = ActionJournal(store, delay=0.3)
    try:
        journal.put(builds[0], started(101))
        journal.put(builds[0], finished(101))
        deadline = time.monotonic() + 5
        while not store.list_actions(builds[0]):
            assert time.monotonic() < deadline, "the journal never wrote"
            time.sleep(0.01)
        assert store.list_actions(builds[0]) == [finished(101)]
        assert store.writes == [(builds[0], [finished(101)])]
        assert journal.pending(builds[0]) == []
    finally:
        journal.close()


def test_pending_shows_records_not_written_yet(
    store: CountingStore, journal: ActionJournal, builds: list[int]
) -> None:
    a, b = builds[0], builds[1]
    journal.put(a, started(101))
    journal.put(a, started(0, index=1))
    journal.put(a, finished(101))
    assert sorted(journal.pending(a), key=lambda x: (x.step, x.index)) == [started(0, index=1), finished(101)]
    assert journal.pending(b) == []
    assert store.list_actions(a) == []
    journal.flush(a)
    assert journal.pending(a) == []


def test_flush_of_one_build_writes_only_that_build(
    store: CountingStore, journal: ActionJournal, builds: list[int]
) -> None:
    a, b = builds[0], builds[1]
    journal.put(a, finished(101))
    journal.put(b, finished(102))
    journal.flush(a)
    assert store.list_actions(a) == [finished(101)]
    assert store.list_actions(b) == []
    assert journal.pending(b) == [finished(102)]
    journal.flush(builds[2])  # nothing pending there: no write at all
    assert [build for build, _ in store.writes] == [a]


def test_close_flushes_everything(store: CountingStore, builds: list[int]) -> None:
    journal = ActionJournal(store, delay=NEVER)
    for n, build in enumerate(builds):
        journal.put(build, finished(101 + n))
    journal.close()
    for n, build in enumerate(builds):
        assert store.list_actions(build) == [finished(101 + n)]
        assert journal.pending(build) == []


def test_a_failed_write_keeps_the_records_and_a_newer_one_wins(
    store: CountingStore, journal: ActionJournal, builds: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    build = builds[0]
    journal.put(build, started(101))
    journal.put(build, finished(0))
    newer = finished(101, status=ActionStatus.FAILED)
    store.fail = 1
    store.during_failure = lambda: journal.put(build, newer)  # arrives while the write fails
    with caplog.at_level(logging.ERROR, logger="circlet.journal"):
        journal.flush(build)
    assert store.list_actions(build) == []
    assert sorted(journal.pending(build), key=lambda x: x.step) == [finished(0), newer]
    assert any("event=journal_write_failed" in r.getMessage() for r in caplog.records)
    journal.flush(build)
    assert store.list_actions(build) == [finished(0), newer]
    assert journal.pending(build) == []


def test_a_failure_for_one_build_does_not_hold_back_another(
    store: CountingStore, journal: ActionJournal, builds: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = builds[0], builds[1]
    journal.put(a, finished(101))
    journal.put(b, finished(101))
    store.fail = 1  # the first batch written (build a's) fails
    with caplog.at_level(logging.CRITICAL, logger="circlet.journal"):
        journal.flush()
    assert store.list_actions(a) == []
    assert store.list_actions(b) == [finished(101)]
    assert journal.pending(a) == [finished(101)]


def test_concurrent_flushes_never_write_an_older_record_over_a_newer_one(
    store: CountingStore, builds: list[int]
) -> None:
    """Records of each action carry an increasing version (exit_code); writers put them while
    other threads flush one build or everything. Every action must reach the store with its
    versions in arrival order (never going back) and end at its last version."""
    store.latency = 0.0005  # lets batches overlap, if the journal allowed it
    journal = ActionJournal(store, delay=0.001)  # its own thread flushes too
    versions = 400
    keys = [(build, step) for build in builds[:2] for step in (101, 102)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(build: int, step: int) -> None:
        try:
            for version in range(versions):
                journal.put(build, replace(finished(step), exit_code=version))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def flush(build: int | None) -> None:
        try:
            while not stop.is_set():
                journal.flush(build)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    writers = [threading.Thread(target=write, args=key) for key in keys]
    flushers = [threading.Thread(target=flush, args=(b,)) for b in (builds[0], builds[1], None)]
    for thread in flushers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in flushers:
        thread.join()
    journal.close()
    assert errors == []
    for build, step in keys:
        written = [
            action.exit_code
            for wrote_build, actions in store.writes
            if wrote_build == build
            for action in actions
            if action.step == step
        ]
        assert written == sorted(written), f"build {build} step {step} went back in time"
        assert written[-1] == versions - 1
        stored = store.get_action(build, step, 0)
        assert stored is not None and stored.exit_code == versions - 1
