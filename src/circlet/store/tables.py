"""The database schema as SQLAlchemy Core tables (no ORM: rows become dataclasses in store/sql.py).

Enums are stored as their string values (no database enum types, so adding a member needs no
migration). Datetimes are stored as UTC and always come back timezone-aware (see UTCDateTime).
Any change here needs a new migration in store/migrations/versions; tests/contract/test_migrations.py
checks that the migrated schema matches this module.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores `timestamp with time zone`; SQLite has no time zones, so the value is
    stored as naive UTC text and given back its UTC tzinfo when read. Naive datetimes are refused.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: circlet stores timezone-aware UTC times")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _json() -> sa.JSON:
    # Python None is stored as SQL NULL, not as the JSON text `null`.
    return sa.JSON(none_as_null=True)


# Deterministic constraint and index names on every backend, so migrations can name them.
NAMING_CONVENTION: dict[str, Any] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("login", sa.String(255), nullable=False),
    sa.Column("name", sa.String(255)),
    sa.Column("email", sa.String(255)),
    sa.Column("admin", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime),
    sa.UniqueConstraint("login"),
)

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("vcs_type", sa.String(16), nullable=False),
    sa.Column("username", sa.String(255), nullable=False),
    sa.Column("reponame", sa.String(255), nullable=False),
    # lowercase `vcs_type/username/reponame` (vcs_type in its long form): the case-insensitive key
    sa.Column("slug_key", sa.String(520), nullable=False),
    sa.Column("repo_url", sa.Text, nullable=False),
    sa.Column("default_branch", sa.String(255), nullable=False),
    sa.Column("oss", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime),
    # the number the project's next build gets; bumped in the transaction that inserts the build
    sa.Column("next_build_num", sa.Integer, nullable=False),
    sa.UniqueConstraint("slug_key"),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("token_hash", sa.String(128), nullable=False),
    sa.Column("label", sa.String(255), nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE")),
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE")),
    sa.Column("scope", sa.String(32), nullable=False),
    sa.Column("created_at", UTCDateTime),
    sa.Column("revoked", sa.Boolean, nullable=False),
    sa.Index(None, "token_hash", unique=True),
)

builds = sa.Table(
    "builds",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    sa.Column("build_num", sa.Integer, nullable=False),
    sa.Column("branch", sa.String(255)),
    sa.Column("vcs_tag", sa.String(255)),
    sa.Column("vcs_revision", sa.String(64)),
    sa.Column("commit", _json()),
    sa.Column("why", sa.String(32), nullable=False),
    sa.Column("dont_build", sa.Text),
    sa.Column("job_name", sa.String(255)),
    sa.Column("build_parameters", _json()),
    sa.Column("parallel", sa.Integer, nullable=False),
    sa.Column("lifecycle", sa.String(32), nullable=False),
    sa.Column("outcome", sa.String(32)),
    sa.Column("usage_queued_at", UTCDateTime),
    sa.Column("queued_at", UTCDateTime),
    sa.Column("start_time", UTCDateTime),
    sa.Column("stop_time", UTCDateTime),
    sa.Column("retry_of", sa.Integer),  # build_num of the retried build, same project
    sa.Column("user_id", sa.Integer),  # no foreign key: builds outlive their users
    sa.Column("messages", _json(), nullable=False),
    sa.Column("config_text", sa.Text),
    sa.Column("executor", _json()),
    sa.Column("ssh_enabled", sa.Boolean, nullable=False),
    sa.Column("ssh_users", _json(), nullable=False),
    sa.Column("canceler_id", sa.Integer),
    sa.Column("canceled_by_system", sa.Boolean, nullable=False),
    sa.Column("no_dependency_cache", sa.Boolean, nullable=False),
    sa.Column("worker", sa.String(255)),
    sa.Column("extra", _json(), nullable=False),
    sa.UniqueConstraint("project_id", "build_num"),
)
sa.Index("ix_builds_project_id_build_num_desc", builds.c.project_id, builds.c.build_num.desc())
sa.Index(None, builds.c.project_id, builds.c.branch, builds.c.build_num)
sa.Index(None, builds.c.lifecycle)
sa.Index(None, builds.c.project_id, builds.c.retry_of)

actions = sa.Table(
    "actions",
    metadata,
    sa.Column("build_id", sa.Integer, sa.ForeignKey("builds.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("step", sa.Integer, primary_key=True),
    sa.Column("index", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("source", sa.String(64)),
    sa.Column("bash_command", sa.Text),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("exit_code", sa.Integer),
    sa.Column("start_time", UTCDateTime),
    sa.Column("end_time", UTCDateTime),
    sa.Column("background", sa.Boolean, nullable=False),
    sa.Column("parallel", sa.Boolean, nullable=False),
    sa.Column("has_output", sa.Boolean, nullable=False),
    sa.Column("truncated", sa.Boolean, nullable=False),
    sa.Column("messages", _json(), nullable=False),
)


# ---------------------------------------------------------------- project settings (migration 0002)

# Who may do what on a project: role is one of read, write, admin (core/permissions.py).
project_members = sa.Table(
    "project_members",
    metadata,
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime),
)

follows = sa.Table(
    "follows",
    metadata,
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("created_at", UTCDateTime),
)

project_env_vars = sa.Table(
    "project_env_vars",
    metadata,
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime),
)

checkout_keys = sa.Table(
    "checkout_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),  # deploy-key | github-user-key
    sa.Column("public_key", sa.Text, nullable=False),
    sa.Column("private_key", sa.Text, nullable=False),
    sa.Column("fingerprint_md5", sa.String(64), nullable=False),
    sa.Column("fingerprint_sha256", sa.String(64), nullable=False),
    sa.Column("login", sa.String(255)),
    sa.Column("preferred", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime),
    sa.Index(None, "project_id"),
)

project_ssh_keys = sa.Table(
    "project_ssh_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False),  # "" = every host
    sa.Column("private_key", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),  # md5, colon-hex
    sa.Column("created_at", UTCDateTime),
    sa.Index(None, "project_id"),
)

# ---------------------------------------------------------------- notification webhooks (migration 0002)

project_webhooks = sa.Table(
    "project_webhooks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime),
    sa.Index(None, "project_id"),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("build_id", sa.Integer, sa.ForeignKey("builds.id", ondelete="CASCADE"), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # config | project
    sa.Column("state", sa.String(16), nullable=False),  # pending | delivered | failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_status", sa.Integer),  # HTTP status of the last attempt
    sa.Column("last_error", sa.Text),
    sa.Column("next_attempt_at", UTCDateTime),
    sa.Column("created_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime),
    sa.Index(None, "build_id"),
    sa.Index(None, "state", "next_attempt_at"),
)


# ---------------------------------------------------------------- test results (migration 0003)

# The test cases one container's store_test_results steps found, as the API shows them
# (results.to_api), and the report files that could not be read.
test_results = sa.Table(
    "test_results",
    metadata,
    sa.Column("build_id", sa.Integer, sa.ForeignKey("builds.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("node_index", sa.Integer, primary_key=True),
    sa.Column("tests", _json(), nullable=False),
    sa.Column("exceptions", _json(), nullable=False),
    sa.Column("created_at", UTCDateTime),
)


# The tables of later areas live in modules of their own, on this metadata; importing them here
# makes `metadata` complete for whoever imports this module.
from circlet.store import tables_blobs, tables_pipelines, tables_sessions, tables_workers  # noqa: E402, F401
