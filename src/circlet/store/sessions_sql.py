"""SessionStore on SQLAlchemy Core: the `web_sessions` table (migration 0007).

Same conventions as store/sql.py: one short transaction per method, one store shared by every
thread. Lookups read through an autocommit (PostgreSQL) or read-only (SQLite) connection.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from circlet.store.sql import _READ_ONLY
from circlet.store.tables_sessions import web_sessions

S = web_sessions.c


class SqlSessionStore:
    """SessionStore on an SQLAlchemy engine (the one SqlBuildStore uses)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        if engine.dialect.name == "postgresql":
            self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        else:
            self._reader = engine.execution_options(**{_READ_ONLY: True})

    def create(self, *, token_id: int, secret_hash: str, created_at: datetime, expires_at: datetime) -> None:
        with self._engine.begin() as connection:
            connection.execute(
                web_sessions.insert().values(
                    id=secret_hash, token_id=token_id, created_at=created_at, expires_at=expires_at
                )
            )

    def find(self, secret_hash: str, now: datetime) -> int | None:
        query = sa.select(S.token_id).where(S.id == secret_hash, S.ended_at.is_(None), S.expires_at > now)
        with self._reader.connect() as connection:
            found = connection.execute(query).scalar_one_or_none()
        return int(found) if found is not None else None

    def end(self, secret_hash: str, now: datetime) -> bool:
        with self._engine.begin() as connection:
            changed = connection.execute(
                web_sessions.update()
                .where(S.id == secret_hash, S.ended_at.is_(None), S.expires_at > now)
                .values(ended_at=now)
            )
            return bool(changed.rowcount)

    def forget(self, before: datetime) -> int:
        with self._engine.begin() as connection:
            gone = connection.execute(
                web_sessions.delete().where(sa.or_(S.expires_at < before, S.ended_at < before))
            )
            return int(gone.rowcount)
