"""Project settings (members, follows, environment variables, checkout and SSH keys) and
notification webhooks with their deliveries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

Written by hand to match circlet/store/tables.py at the time; it must not import tables.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=True)


def _project(primary_key: bool = False) -> sa.Column[object]:
    return sa.Column(
        "project_id",
        sa.Integer,
        sa.ForeignKey("projects.id", ondelete="CASCADE"),
        nullable=False,
        primary_key=primary_key,
    )


def _user(primary_key: bool = False) -> sa.Column[object]:
    return sa.Column(
        "user_id",
        sa.Integer,
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        primary_key=primary_key,
    )


def upgrade() -> None:
    op.create_table(
        "project_members",
        _project(True),
        _user(True),
        sa.Column("role", sa.String(16), nullable=False),
        _time("created_at"),
    )
    op.create_table("follows", _project(True), _user(True), _time("created_at"))
    op.create_table(
        "project_env_vars",
        _project(True),
        sa.Column("name", sa.String(255), primary_key=True, nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        _time("created_at"),
    )
    op.create_table(
        "checkout_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        _project(),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("private_key", sa.Text, nullable=False),
        sa.Column("fingerprint_md5", sa.String(64), nullable=False),
        sa.Column("fingerprint_sha256", sa.String(64), nullable=False),
        sa.Column("login", sa.String(255), nullable=True),
        sa.Column("preferred", sa.Boolean, nullable=False),
        _time("created_at"),
    )
    op.create_index("ix_checkout_keys_project_id", "checkout_keys", ["project_id"])
    op.create_table(
        "project_ssh_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        _project(),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("private_key", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        _time("created_at"),
    )
    op.create_index("ix_project_ssh_keys_project_id", "project_ssh_keys", ["project_id"])
    op.create_table(
        "project_webhooks",
        sa.Column("id", sa.Integer, primary_key=True),
        _project(),
        sa.Column("url", sa.Text, nullable=False),
        _time("created_at"),
    )
    op.create_index("ix_project_webhooks_project_id", "project_webhooks", ["project_id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("build_id", sa.Integer, sa.ForeignKey("builds.id", ondelete="CASCADE"), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_status", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        _time("next_attempt_at"),
        _time("created_at"),
        _time("finished_at"),
    )
    op.create_index("ix_webhook_deliveries_build_id", "webhook_deliveries", ["build_id"])
    op.create_index(
        "ix_webhook_deliveries_state_next_attempt_at", "webhook_deliveries", ["state", "next_attempt_at"]
    )


def downgrade() -> None:
    for table in (
        "webhook_deliveries",
        "project_webhooks",
        "project_ssh_keys",
        "checkout_keys",
        "project_env_vars",
        "follows",
        "project_members",
    ):
        op.drop_table(table)
