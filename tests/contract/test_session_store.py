"""One contract for every SessionStore: the in-memory fake, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from circlet.core.model import Token, User
from circlet.core.sessions import SessionStore
from circlet.store.migrate import migrate
from circlet.store.sessions_sql import SqlSessionStore
from circlet.store.sql import SqlBuildStore, make_engine
from circlet.testing import InMemorySessionStore

T0 = datetime(2026, 11, 28, 7, 0, 0, 250000, tzinfo=UTC)
DAY = timedelta(days=1)
A = "a" * 64  # session ids are sha256 hex
B = "b" * 64


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SessionStore, list[int]]]:
    """A store and the ids of two tokens it may refer to (real rows for the SQL stores)."""
    if request.param == "memory":
        yield InMemorySessionStore(), [1, 2]
        return
    url = (
        f"sqlite:///{tmp_path}/circlet.db"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = make_engine(url)
    migrate(engine)
    builds = SqlBuildStore(engine)
    user = builds.add_user(User(login="ada", created_at=T0))
    ids = [
        builds.add_token(Token(token_hash=f"h{n}", user_id=user.id, created_at=T0)).id or 0 for n in (1, 2)
    ]
    try:
        yield SqlSessionStore(engine), ids
    finally:
        engine.dispose()


def test_a_new_session_finds_its_token_until_it_expires(backend: tuple[SessionStore, list[int]]) -> None:
    store, (t1, t2) = backend
    store.create(token_id=t1, secret_hash=A, created_at=T0, expires_at=T0 + DAY)
    store.create(token_id=t2, secret_hash=B, created_at=T0, expires_at=T0 + 2 * DAY)

    assert store.find(A, T0) == t1
    assert store.find(B, T0 + DAY) == t2
    assert store.find(A, T0 + DAY - timedelta(microseconds=1)) == t1
    assert store.find(A, T0 + DAY) is None  # expired at expires_at
    assert store.find("c" * 64, T0) is None


def test_ending_a_session_ends_it_alone_and_once(backend: tuple[SessionStore, list[int]]) -> None:
    store, (t1, _) = backend
    store.create(token_id=t1, secret_hash=A, created_at=T0, expires_at=T0 + DAY)
    store.create(token_id=t1, secret_hash=B, created_at=T0, expires_at=T0 + DAY)

    assert store.end(A, T0 + timedelta(hours=1)) is True
    assert store.find(A, T0 + timedelta(hours=1)) is None
    assert store.find(A, T0) is None  # ended is ended, whatever the clock says
    assert store.find(B, T0 + timedelta(hours=1)) == t1  # the token's other session lives on
    assert store.end(A, T0 + timedelta(hours=2)) is False  # twice
    assert store.end("c" * 64, T0) is False  # unknown
    assert store.end(B, T0 + 2 * DAY) is False  # already expired


def test_forget_deletes_only_sessions_over_before(backend: tuple[SessionStore, list[int]]) -> None:
    store, (t1, t2) = backend
    c, d = "c" * 64, "d" * 64
    store.create(token_id=t1, secret_hash=A, created_at=T0, expires_at=T0 + DAY)  # expires early
    store.create(token_id=t1, secret_hash=B, created_at=T0, expires_at=T0 + 9 * DAY)
    store.create(token_id=t2, secret_hash=c, created_at=T0, expires_at=T0 + 9 * DAY)
    store.create(token_id=t2, secret_hash=d, created_at=T0, expires_at=T0 + 9 * DAY)
    store.end(B, T0 + timedelta(hours=1))  # ended early
    store.end(d, T0 + 3 * DAY)  # ended late

    assert store.forget(T0 + 2 * DAY) == 2  # A (expired) and B (ended) before day 2
    assert store.forget(T0 + 2 * DAY) == 0
    assert store.find(c, T0 + 2 * DAY) == t2
    assert store.find(d, T0 + 2 * DAY) is None  # d is kept (ended after day 2) and stays ended
    assert store.forget(T0 + 4 * DAY) == 1
    store.create(token_id=t1, secret_hash=A, created_at=T0, expires_at=T0 + DAY)  # its id is free again
    assert store.find(A, T0) == t1


def test_deleting_a_token_deletes_its_sessions(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/circlet.db")
    migrate(engine)
    builds = SqlBuildStore(engine)
    user = builds.add_user(User(login="ada", created_at=T0))
    token = builds.add_token(Token(token_hash="h1", user_id=user.id, created_at=T0))
    store = SqlSessionStore(engine)
    store.create(token_id=token.id or 0, secret_hash=A, created_at=T0, expires_at=T0 + DAY)
    with engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM users")  # cascades to tokens, then to sessions
    assert store.find(A, T0) is None
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM web_sessions").scalar_one() == 0
    engine.dispose()
