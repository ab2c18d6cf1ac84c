"""Alembic environment for circlet. Run through `circlet.store.migrate.migrate(engine)` only.

migrate() hands over an open connection in `config.attributes["connection"]`, already inside the
transaction (and, on PostgreSQL, the advisory lock) that it commits; this script never creates
engines or reads alembic.ini.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from circlet.store.tables import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("circlet migrations run through circlet.store.migrate.migrate(engine)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    compare_type=True,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
