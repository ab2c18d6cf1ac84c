"""Pipelines, workflows, workflow jobs and contexts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

Written by hand to match circlet/store/tables_pipelines.py; it must not import the tables modules.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.JSON:
    return sa.JSON(none_as_null=True)


def _time(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "pipelines",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("branch", sa.String(255)),
        sa.Column("tag", sa.String(255)),
        sa.Column("revision", sa.String(64), nullable=False),
        sa.Column("trigger_source", sa.String(32), nullable=False),
        sa.Column("why", sa.String(32), nullable=False),
        sa.Column("parameters", _json(), nullable=False),
        sa.Column("config_text", sa.Text),
        sa.Column("compiled_config", sa.Text),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("errors", _json(), nullable=False),
        sa.Column("user_id", sa.Integer),
        _time("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_pipelines"),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_pipelines_project_id_projects", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("project_id", "number", name="uq_pipelines_project_id_number"),
    )
    op.create_table(
        "workflows",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("pipeline_id", sa.String(36), nullable=False),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _time("created_at"),
        _time("stopped_at"),
        sa.PrimaryKeyConstraint("id", name="pk_workflows"),
        sa.ForeignKeyConstraint(
            ["pipeline_id"], ["pipelines.id"], name="fk_workflows_pipeline_id_pipelines", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_workflows_pipeline_id", "workflows", ["pipeline_id"])
    op.create_index("ix_workflows_status", "workflows", ["status"])
    op.create_table(
        "workflow_jobs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("workflow_id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("requires", _json(), nullable=False),
        sa.Column("contexts", _json(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("build_id", sa.Integer),
        sa.Column("build_num", sa.Integer),
        sa.Column("approved_by", sa.Integer),
        _time("approved_at"),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_jobs"),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name="fk_workflow_jobs_workflow_id_workflows",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_workflow_jobs_workflow_id_position", "workflow_jobs", ["workflow_id", "position"])
    op.create_index("ix_workflow_jobs_build_id", "workflow_jobs", ["build_id"])
    op.create_table(
        "contexts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_contexts"),
        sa.UniqueConstraint("name", name="uq_contexts_name"),
    )
    op.create_table(
        "context_vars",
        sa.Column("context_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("context_id", "name", name="pk_context_vars"),
        sa.ForeignKeyConstraint(
            ["context_id"], ["contexts.id"], name="fk_context_vars_context_id_contexts", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "schedule_runs",
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("workflow", sa.String(255), nullable=False),
        sa.Column("branch", sa.String(255), nullable=False),
        _time("minute", nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("revision", sa.String(64), nullable=False),
        sa.Column("requested_by", sa.String(16), nullable=False),
        sa.Column("pipeline_id", sa.String(36)),
        sa.Column("build_num", sa.Integer),
        sa.Column("error", sa.Text),
        _time("created_at"),
        sa.PrimaryKeyConstraint("project_id", "workflow", "branch", "minute", name="pk_schedule_runs"),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_schedule_runs_project_id_projects", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_schedule_runs_state", "schedule_runs", ["state"])


def downgrade() -> None:
    op.drop_index("ix_schedule_runs_state", table_name="schedule_runs")
    op.drop_table("schedule_runs")
    op.drop_table("context_vars")
    op.drop_table("contexts")
    op.drop_index("ix_workflow_jobs_build_id", table_name="workflow_jobs")
    op.drop_index("ix_workflow_jobs_workflow_id_position", table_name="workflow_jobs")
    op.drop_table("workflow_jobs")
    op.drop_index("ix_workflows_status", table_name="workflows")
    op.drop_index("ix_workflows_pipeline_id", table_name="workflows")
    op.drop_table("workflows")
    op.drop_table("pipelines")
