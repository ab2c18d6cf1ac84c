"""ScheduleStore contract: the in-memory fake, SQLite and PostgreSQL behave alike."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from circlet.core.model import Project, VcsType
from circlet.core.pipeline import ScheduleRun, ScheduleRunState, ScheduleStore
from circlet.core.ports import BuildStore
from circlet.store.migrate import migrate
from circlet.store.schedules_sql import SqlScheduleStore
from circlet.store.sql import SqlBuildStore, make_engine
from circlet.testing import InMemoryBuildStore
from circlet.testing.schedules import InMemoryScheduleStore

M = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


@dataclass
class Stores:
    runs: ScheduleStore
    makers: list[ScheduleStore]  # more stores on the same data (other processes)
    project: int
    other: int


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    engines = []
    builds: BuildStore
    if request.param == "memory":
        builds, runs = InMemoryBuildStore(), InMemoryScheduleStore()
        makers: list[ScheduleStore] = [runs] * 3
    else:
        url = (
            f"sqlite:///{tmp_path}/circlet.db"
            if request.param == "sqlite"
            else request.getfixturevalue("postgres_url")
        )
        engines = [make_engine(url) for _ in range(3)]
        migrate(engines[0])
        builds, runs = SqlBuildStore(engines[0]), SqlScheduleStore(engines[0])
        makers = [SqlScheduleStore(e) for e in engines]
    try:
        ids = [
            builds.add_project(
                Project(vcs_type=VcsType.GITHUB, username="acme", reponame=n, repo_url=f"/r/{n}")
            ).id
            or 0
            for n in ("widget", "gadget")
        ]
        yield Stores(runs, makers, ids[0], ids[1])
    finally:
        for engine in engines:
            engine.dispose()


def run(project: int, minute: datetime = M, **fields: object) -> ScheduleRun:
    base = ScheduleRun(
        project_id=project, workflow="nightly", branch="main", minute=minute, revision="a" * 40
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def test_a_key_is_claimed_once(stores: Stores) -> None:
    assert stores.runs.claim_run(run(stores.project))
    assert not stores.runs.claim_run(run(stores.project, state=ScheduleRunState.PENDING, requested_by="cli"))
    for other in (
        run(stores.project, M + timedelta(minutes=1)),
        run(stores.project, branch="dev"),
        run(stores.project, workflow="weekly"),
        run(stores.other),
    ):
        assert stores.runs.claim_run(other)
    [found] = [
        r
        for r in stores.runs.list_runs(stores.project)
        if r.minute == M and r.branch == "main" and r.workflow == "nightly"
    ]
    assert found.workflow == "nightly" and found.state is ScheduleRunState.STARTED
    assert found.requested_by == "scheduler" and found.revision == "a" * 40 and found.created_at is not None


def test_concurrent_claims_of_one_minute_make_one_winner(stores: Stores) -> None:
    barrier = threading.Barrier(len(stores.makers))
    won: list[bool] = []

    def claim(store: ScheduleStore) -> None:
        barrier.wait()
        won.append(store.claim_run(run(stores.project)))

    threads = [threading.Thread(target=claim, args=(s,)) for s in stores.makers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(won) == [False, False, True]


def test_pending_runs_are_taken_once_and_saved(stores: Stores) -> None:
    for minute in (M, M + timedelta(minutes=1)):
        assert stores.runs.claim_run(run(stores.project, minute, state=ScheduleRunState.PENDING))
    stores.runs.claim_run(run(stores.other))  # started: never taken
    taken = stores.runs.take_pending()
    assert [(r.minute, r.state) for r in taken] == [
        (M, ScheduleRunState.STARTED),
        (M + timedelta(minutes=1), ScheduleRunState.STARTED),
    ]
    assert all(s.take_pending() == [] for s in stores.makers)
    stores.runs.save_run(replace(taken[0], state=ScheduleRunState.DONE, pipeline_id="p-1", build_num=7))
    stores.runs.save_run(replace(taken[1], state=ScheduleRunState.FAILED, error="gone"))
    found = {r.minute: r for r in stores.runs.list_runs(stores.project)}
    assert (found[M].state, found[M].pipeline_id, found[M].build_num) == (ScheduleRunState.DONE, "p-1", 7)
    assert (found[M + timedelta(minutes=1)].state, found[M + timedelta(minutes=1)].error) == (
        ScheduleRunState.FAILED,
        "gone",
    )


def test_list_is_newest_first_and_prune_forgets_old_minutes(stores: Stores) -> None:
    for hours in (0, 1, 2):
        stores.runs.claim_run(run(stores.project, M + timedelta(hours=hours)))
    stores.runs.claim_run(run(stores.other, M))
    assert [r.minute.hour for r in stores.runs.list_runs(stores.project)] == [5, 4, 3]
    assert len(stores.runs.list_runs()) == 4
    assert len(stores.runs.list_runs(limit=2)) == 2
    assert stores.runs.prune_runs(M + timedelta(hours=1)) == 2
    assert [r.minute.hour for r in stores.runs.list_runs()] == [5, 4]
