"""The migrations build exactly the schema of store/tables.py, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from circlet.store.migrate import alembic_config, current_revision, head_revision, migrate
from circlet.store.sql import make_engine
from circlet.store.tables import metadata


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/data/circlet.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def _diffs(engine: sa.Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def test_migrated_schema_matches_tables(engine: sa.Engine) -> None:
    migrate(engine)

    assert _diffs(engine) == []
    assert current_revision(engine) == head_revision()


def test_empty_database_differs_from_tables(engine: sa.Engine) -> None:
    # The comparison above is only worth something if it sees missing tables.
    assert _diffs(engine) != []
    assert current_revision(engine) is None


def test_migrate_is_idempotent(engine: sa.Engine) -> None:
    migrate(engine)
    migrate(engine)

    assert current_revision(engine) == head_revision()
    assert _diffs(engine) == []


def test_concurrent_migrations_from_separate_engines(database_url: str) -> None:
    # Two engines stand for two processes starting at once on a fresh database.
    engines = [make_engine(database_url) for _ in range(3)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(engines))

    def run(engine: sa.Engine) -> None:
        try:
            barrier.wait()
            migrate(engine)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert current_revision(engines[0]) == head_revision()
        assert _diffs(engines[0]) == []
    finally:
        for engine in engines:
            engine.dispose()


def test_downgrade_to_base_removes_every_table(engine: sa.Engine) -> None:
    migrate(engine)
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")

    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate(engine)
    assert _diffs(engine) == []
