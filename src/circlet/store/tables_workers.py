"""Workers of the celery executor and their heartbeats (issue #6).

Tables on the shared metadata of store/tables.py.
Any change here needs a migration too (tests/contract/test_migrations.py compares them).
"""

from __future__ import annotations

import sqlalchemy as sa

from circlet.store.tables import UTCDateTime, metadata

# One row per worker process (`circlet worker`), kept up to date by its heartbeats.
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),  # host:pid unless named
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("resource_classes", sa.JSON, nullable=False),  # list of class names
    sa.Column("slots", sa.Integer, nullable=False),
    sa.Column("busy", sa.Integer, nullable=False),
    sa.Column("running", sa.JSON, nullable=False),  # build ids
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("stopping", sa.Boolean, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # WorkerState
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
)
