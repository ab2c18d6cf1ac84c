"""One contract for every DeliveryStore: the in-memory fake, SQLite and PostgreSQL.

Deliveries belong to builds, so each store comes with the build store beside it (same engine,
or the fake the in-memory delivery store consults).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from circlet.core.errors import NotFound
from circlet.core.model import Build, Project, VcsType
from circlet.core.ports import BuildStore, DeliveryStore
from circlet.core.projects import Delivery, DeliveryState
from circlet.store.deliveries_sql import SqlDeliveryStore
from circlet.store.migrate import migrate
from circlet.store.sql import SqlBuildStore, make_engine
from circlet.testing import InMemoryBuildStore, InMemoryDeliveryStore

T0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


@dataclass
class Stores:
    builds: BuildStore
    deliveries: DeliveryStore
    project: Project
    build: Build  # a build of `project`

    def new_build(self, project: Project | None = None) -> Build:
        return self.builds.create_build(Build(project_id=(project or self.project).id or 0))

    def add(self, **fields: object) -> Delivery:
        values: dict[str, object] = {
            "build_id": self.build.id,
            "url": "https://hooks.example/a",
            "source": "config",
        }
        values.update(fields)
        return self.deliveries.add_delivery(Delivery(**values))  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    def made(builds: BuildStore, deliveries: DeliveryStore) -> Stores:
        project = builds.add_project(
            Project(vcs_type=VcsType.GITHUB, username="acme", reponame="widget", repo_url="/src/widget")
        )
        build = builds.create_build(Build(project_id=project.id or 0))
        return Stores(builds=builds, deliveries=deliveries, project=project, build=build)

    if request.param == "memory":
        memory = InMemoryBuildStore()
        yield made(memory, InMemoryDeliveryStore(memory))
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/data/circlet.db"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    migrate(engine)
    try:
        yield made(SqlBuildStore(engine), SqlDeliveryStore(engine))
    finally:
        engine.dispose()


def test_add_gives_an_id_and_defaults_and_reads_back_whole(stores: Stores) -> None:
    added = stores.add(url="https://hooks.example/x?token=1", source="project")
    assert added.id is not None
    assert added.created_at is not None and added.created_at.tzinfo is not None
    assert (added.state, added.attempts, added.last_status, added.last_error) == (
        DeliveryState.PENDING,
        0,
        None,
        None,
    )
    assert stores.deliveries.list_deliveries() == [added]
    second = stores.add(url="https://hooks.example/y")
    assert second.id is not None and second.id > added.id


def test_every_field_round_trips_with_utc_times(stores: Stores) -> None:
    added = stores.add(created_at=T0, next_attempt_at=T0 + timedelta(seconds=5))
    changed = replace(
        added,
        state=DeliveryState.FAILED,
        attempts=6,
        last_status=503,
        last_error="HTTP 503 — ünïcode",
        next_attempt_at=None,
        finished_at=T0 + timedelta(minutes=45),
    )
    stores.deliveries.save_delivery(changed)
    (read,) = stores.deliveries.list_deliveries(build_id=stores.build.id)
    assert read == changed
    assert read.created_at == T0 and read.created_at.tzinfo is not None
    assert read.finished_at is not None and read.finished_at.utcoffset() == timedelta(0)


def test_a_delivery_of_an_unknown_build_or_an_unknown_delivery_is_not_found(stores: Stores) -> None:
    with pytest.raises(NotFound):
        stores.add(build_id=987654)
    with pytest.raises(NotFound):
        stores.deliveries.save_delivery(
            Delivery(id=987654, build_id=stores.build.id or 0, url="x", source="config")
        )
    with pytest.raises(ValueError):
        stores.deliveries.save_delivery(Delivery(build_id=stores.build.id or 0, url="x", source="config"))


def test_due_is_pending_and_due_now_oldest_first(stores: Stores) -> None:
    now = T0
    later = stores.add(url="https://a/later", next_attempt_at=now + timedelta(seconds=30))
    exactly = stores.add(url="https://a/exactly", next_attempt_at=now)
    unset = stores.add(url="https://a/unset", next_attempt_at=None)
    past = stores.add(url="https://a/past", next_attempt_at=now - timedelta(minutes=1))
    done = stores.add(url="https://a/done", next_attempt_at=now - timedelta(minutes=1))
    stores.deliveries.save_delivery(replace(done, state=DeliveryState.DELIVERED))
    failed = stores.add(url="https://a/failed", next_attempt_at=None)
    stores.deliveries.save_delivery(replace(failed, state=DeliveryState.FAILED))

    due = stores.deliveries.due_deliveries(now)
    assert [d.url for d in due] == [exactly.url, unset.url, past.url]
    assert [d.url for d in stores.deliveries.due_deliveries(now, limit=2)] == [exactly.url, unset.url]
    assert stores.deliveries.due_deliveries(now, limit=0) == []
    assert later.url in [d.url for d in stores.deliveries.due_deliveries(now + timedelta(seconds=30))]


def test_due_compares_instants_not_clock_faces(stores: Stores) -> None:
    """A time given in another zone is the same instant (the SQL store keeps UTC)."""
    plus2 = datetime(2024, 5, 6, 9, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    stores.add(next_attempt_at=T0)  # 07:08:09.123456 UTC
    assert stores.deliveries.due_deliveries(plus2) == []  # 07:08:09 UTC, a bit earlier
    assert len(stores.deliveries.due_deliveries(plus2 + timedelta(seconds=1))) == 1


def test_list_is_newest_first_and_filters_by_build_and_project(stores: Stores) -> None:
    other_build = stores.new_build()
    other_project = stores.builds.add_project(
        Project(vcs_type=VcsType.GITHUB, username="acme", reponame="gadget", repo_url="/src/gadget")
    )
    foreign = stores.new_build(other_project)
    a = stores.add(url="https://a/1")
    b = stores.add(url="https://a/2", build_id=other_build.id)
    c = stores.add(url="https://a/3", build_id=foreign.id)
    d = stores.add(url="https://a/4")

    assert [x.id for x in stores.deliveries.list_deliveries()] == [d.id, c.id, b.id, a.id]
    assert [x.id for x in stores.deliveries.list_deliveries(limit=2)] == [d.id, c.id]
    assert [x.id for x in stores.deliveries.list_deliveries(build_id=stores.build.id)] == [d.id, a.id]
    assert [x.id for x in stores.deliveries.list_deliveries(project_id=stores.project.id)] == [
        d.id,
        b.id,
        a.id,
    ]
    assert [x.id for x in stores.deliveries.list_deliveries(project_id=other_project.id)] == [c.id]
    assert stores.deliveries.list_deliveries(build_id=foreign.id, project_id=stores.project.id) == []
    assert stores.deliveries.list_deliveries(build_id=987654) == []
