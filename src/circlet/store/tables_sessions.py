"""Web sessions (issue #7, core/sessions.py): one row per sign-in.

Tables on the shared metadata of store/tables.py.
Any change here needs a migration too (tests/contract/test_migrations.py compares them).
"""

from __future__ import annotations

import sqlalchemy as sa

from circlet.store.tables import UTCDateTime, metadata

# The cookie holds a random secret; `id` is its sha256 hex (the secret itself is never stored).
# Deleting a token deletes its sessions; revoking it ends them (the token is checked on each use).
web_sessions = sa.Table(
    "web_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("token_id", sa.Integer, sa.ForeignKey("tokens.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime, nullable=True),  # signed out; NULL while live
    sa.Index(None, "token_id"),
    sa.Index(None, "expires_at"),
)
