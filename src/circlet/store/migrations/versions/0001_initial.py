"""Initial schema: users, projects, tokens, builds, actions.

Revision ID: 0001
Revises:
Create Date: 2024-06-01

Written by hand to match circlet/store/tables.py at the time; it must not import tables.py,
which will move on while this file stays as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=True)


def _json(name: str, *, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, sa.JSON(none_as_null=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("login", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("email", sa.String(255), nullable=True),
        sa.Column("admin", sa.Boolean, nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("login", name="uq_users_login"),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("vcs_type", sa.String(16), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("reponame", sa.String(255), nullable=False),
        sa.Column("slug_key", sa.String(520), nullable=False),
        sa.Column("repo_url", sa.Text, nullable=False),
        sa.Column("default_branch", sa.String(255), nullable=False),
        sa.Column("oss", sa.Boolean, nullable=False),
        _time("created_at"),
        sa.Column("next_build_num", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_projects"),
        sa.UniqueConstraint("slug_key", name="uq_projects_slug_key"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token_hash", sa.String(128), nullable=False),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("user_id", sa.Integer, nullable=True),
        sa.Column("project_id", sa.Integer, nullable=True),
        sa.Column("scope", sa.String(32), nullable=False),
        _time("created_at"),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tokens"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_tokens_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_tokens_project_id_projects", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_tokens_token_hash", "tokens", ["token_hash"], unique=True)
    op.create_table(
        "builds",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("build_num", sa.Integer, nullable=False),
        sa.Column("branch", sa.String(255), nullable=True),
        sa.Column("vcs_tag", sa.String(255), nullable=True),
        sa.Column("vcs_revision", sa.String(64), nullable=True),
        _json("commit", nullable=True),
        sa.Column("why", sa.String(32), nullable=False),
        sa.Column("dont_build", sa.Text, nullable=True),
        sa.Column("job_name", sa.String(255), nullable=True),
        _json("build_parameters", nullable=True),
        sa.Column("parallel", sa.Integer, nullable=False),
        sa.Column("lifecycle", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=True),
        _time("usage_queued_at"),
        _time("queued_at"),
        _time("start_time"),
        _time("stop_time"),
        sa.Column("retry_of", sa.Integer, nullable=True),
        sa.Column("user_id", sa.Integer, nullable=True),
        _json("messages", nullable=False),
        sa.Column("config_text", sa.Text, nullable=True),
        _json("executor", nullable=True),
        sa.Column("ssh_enabled", sa.Boolean, nullable=False),
        _json("ssh_users", nullable=False),
        sa.Column("canceler_id", sa.Integer, nullable=True),
        sa.Column("canceled_by_system", sa.Boolean, nullable=False),
        sa.Column("no_dependency_cache", sa.Boolean, nullable=False),
        sa.Column("worker", sa.String(255), nullable=True),
        _json("extra", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_builds"),
        sa.UniqueConstraint("project_id", "build_num", name="uq_builds_project_id_build_num"),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_builds_project_id_projects", ondelete="CASCADE"
        ),
    )
    op.create_index(
        "ix_builds_project_id_build_num_desc", "builds", ["project_id", sa.text("build_num DESC")]
    )
    op.create_index("ix_builds_project_id_branch_build_num", "builds", ["project_id", "branch", "build_num"])
    op.create_index("ix_builds_lifecycle", "builds", ["lifecycle"])
    op.create_index("ix_builds_project_id_retry_of", "builds", ["project_id", "retry_of"])
    op.create_table(
        "actions",
        sa.Column("build_id", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("index", sa.Integer, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=True),
        sa.Column("bash_command", sa.Text, nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("exit_code", sa.Integer, nullable=True),
        _time("start_time"),
        _time("end_time"),
        sa.Column("background", sa.Boolean, nullable=False),
        sa.Column("parallel", sa.Boolean, nullable=False),
        sa.Column("has_output", sa.Boolean, nullable=False),
        sa.Column("truncated", sa.Boolean, nullable=False),
        _json("messages", nullable=False),
        sa.PrimaryKeyConstraint("build_id", "step", "index", name="pk_actions"),
        sa.ForeignKeyConstraint(
            ["build_id"], ["builds.id"], name="fk_actions_build_id_builds", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("actions")
    op.drop_index("ix_builds_project_id_retry_of", table_name="builds")
    op.drop_index("ix_builds_lifecycle", table_name="builds")
    op.drop_index("ix_builds_project_id_branch_build_num", table_name="builds")
    op.drop_index("ix_builds_project_id_build_num_desc", table_name="builds")
    op.drop_table("builds")
    op.drop_index("ix_tokens_token_hash", table_name="tokens")
    op.drop_table("tokens")
    op.drop_table("projects")
    op.drop_table("users")
