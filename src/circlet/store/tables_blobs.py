"""Artifacts, caches and workspaces kept in the blob store (issue #5): no tables.

Everything is found by key prefix in the blob store (core/blobkeys.py): a build's artifacts,
a project's caches (each with its own record blob), a workflow's workspace layers. Tables
would go here, on the shared metadata of store/tables.py, if listing by prefix stops sufficing
(for example expiry by age across millions of blobs).
Any change here needs a migration too (tests/contract/test_migrations.py compares them).
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401

from circlet.store.tables import UTCDateTime, metadata  # noqa: F401
