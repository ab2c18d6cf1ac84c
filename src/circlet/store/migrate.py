"""Bring the database schema up to date with Alembic, programmatically (no alembic.ini on disk).

`migrate(engine)` is what `circlet serve`, `circlet worker` and `circlet migrate` call on start.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).with_name("migrations")

# Key of the PostgreSQL advisory lock that serializes concurrent migrate() calls ("circlet").
_PG_LOCK_KEY = 0x636972636C6574


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic config pointing at circlet's migrations, optionally bound to a connection."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def migrate(engine: sa.Engine) -> None:
    """Upgrade the database to the newest revision; does nothing when it is already there.

    Idempotent and safe to call from several processes at once: everything runs in one
    transaction, which on PostgreSQL first takes an advisory lock (released at commit) and on
    SQLite starts with BEGIN IMMEDIATE (with an engine from `make_engine`), so a second caller
    waits, then finds the schema current. Blocks while another process migrates.
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        command.upgrade(alembic_config(connection), "head")


def head_revision() -> str | None:
    """The newest revision the code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at (None for an empty database)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
