"""Pipelines, workflows, their jobs and contexts (issue #4).

Tables on the shared metadata of store/tables.py.
Any change here needs a migration too (tests/contract/test_migrations.py compares them).
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401

from circlet.store.tables import UTCDateTime, metadata  # noqa: F401
