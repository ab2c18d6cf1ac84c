"""Test results: the cases each container's store_test_results steps found.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

Written by hand to match circlet/store/tables.py at the time; it must not import tables.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "test_results",
        sa.Column(
            "build_id",
            sa.Integer,
            sa.ForeignKey("builds.id", ondelete="CASCADE"),
            primary_key=True,
            nullable=False,
        ),
        sa.Column("node_index", sa.Integer, primary_key=True, nullable=False),
        sa.Column("tests", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("exceptions", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("test_results")
