"""Pipelines, workflows, their jobs and contexts (issue #4).

Tables on the shared metadata of store/tables.py.
Any change here needs a migration too (tests/contract/test_migrations.py compares them).
"""

from __future__ import annotations

import sqlalchemy as sa

from circlet.store.tables import UTCDateTime, metadata


def _json() -> sa.JSON:
    return sa.JSON(none_as_null=True)


pipelines = sa.Table(
    "pipelines",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),  # UUID
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
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
    sa.Column("user_id", sa.Integer),  # no foreign key: pipelines outlive their users
    sa.Column("created_at", UTCDateTime),
    sa.UniqueConstraint("project_id", "number"),
)

workflows = sa.Table(
    "workflows",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),  # UUID
    sa.Column(
        "pipeline_id", sa.String(36), sa.ForeignKey("pipelines.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime),
    sa.Column("stopped_at", UTCDateTime),
    sa.Index(None, "pipeline_id"),
    sa.Index(None, "status"),
)

workflow_jobs = sa.Table(
    "workflow_jobs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),  # UUID
    sa.Column(
        "workflow_id", sa.String(36), sa.ForeignKey("workflows.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("requires", _json(), nullable=False),  # [{"job": name, "statuses": [state, ...]}]
    sa.Column("contexts", _json(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("build_id", sa.Integer),  # no foreign key: a build may be deleted, the record stays
    sa.Column("build_num", sa.Integer),
    sa.Column("approved_by", sa.Integer),
    sa.Column("approved_at", UTCDateTime),
    sa.Index(None, "workflow_id", "position"),
    sa.Index(None, "build_id"),
)

contexts = sa.Table(
    "contexts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),  # UUID
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime),
    sa.UniqueConstraint("name"),
)

context_vars = sa.Table(
    "context_vars",
    metadata,
    sa.Column(
        "context_id", sa.String(36), sa.ForeignKey("contexts.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime),
)

schedule_runs = sa.Table(  # scheduled workflows' runs (scheduler.py): one row per minute run
    "schedule_runs",
    metadata,
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("workflow", sa.String(255), primary_key=True),
    sa.Column("branch", sa.String(255), primary_key=True),
    sa.Column("minute", UTCDateTime, primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("revision", sa.String(64), nullable=False),
    sa.Column("requested_by", sa.String(16), nullable=False),
    sa.Column("pipeline_id", sa.String(36)),
    sa.Column("build_num", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("created_at", UTCDateTime),
    sa.Index(None, "state"),
)
