"""make_engine's PostgreSQL pool policy: idle connections are pinged, busy ones are not."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from circlet.store import sql
from circlet.store.sql import make_engine

pytestmark = pytest.mark.postgres


def _pid(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def _count_pings(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pings: list[int] = []
    real = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(1)
        return real(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return pings


def test_a_busy_connection_is_not_pinged(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(postgres_url)
    try:
        pings = _count_pings(engine, monkeypatch)
        first = _pid(engine)
        assert [_pid(engine) for _ in range(5)] == [first] * 5
        assert pings == []
        monkeypatch.setattr(sql, "PING_IDLE", 0.05)
        time.sleep(0.1)
        assert _pid(engine) == first
        assert pings == [1]
    finally:
        engine.dispose()


def test_a_connection_killed_while_idle_is_replaced_without_an_error(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a PostgreSQL restart does to a quiet server's pool: no call fails."""
    monkeypatch.setattr(sql, "PING_IDLE", 0.05)
    engine = make_engine(postgres_url)
    try:
        before = _pid(engine)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (before,))
        time.sleep(0.1)
        after = _pid(engine)
        assert after != before
    finally:
        engine.dispose()


def test_a_connection_killed_a_moment_ago_is_replaced_without_an_error(postgres_url: str) -> None:
    """What a quick PostgreSQL restart does to a busy server's pool: the server says it ends the
    session, which checkout notices without a round trip."""
    engine = make_engine(postgres_url)
    try:
        before = _pid(engine)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (before,))
            deadline = time.monotonic() + 10
            while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (before,)).fetchone():
                assert time.monotonic() < deadline
                time.sleep(0.01)
        after = _pid(engine)  # well within PING_IDLE of the last use
        assert after != before
    finally:
        engine.dispose()
