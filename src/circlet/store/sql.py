"""BuildStore on SQLAlchemy Core: SQLite (one file, WAL) or PostgreSQL (psycopg 3).

Rows become dataclasses through the explicit `_x_from_row` / `_x_to_values` functions below;
the domain classes know nothing of the database. Every method is one short transaction on a
pooled connection, so one SqlBuildStore is shared by every thread.

SQLite transactions: `make_engine` turns off the sqlite3 module's own transaction handling and
emits `BEGIN IMMEDIATE` for every transaction that may write, so concurrent writers queue on the
database lock (waiting up to busy_timeout) instead of failing half-way with "database is locked".
Reads are single SELECTs (atomic by themselves) run without BEGIN; with WAL they never wait.
"""

from __future__ import annotations

import select
import sqlite3
import time
from collections.abc import Collection
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL

from circlet.core.errors import Conflict, NotFound
from circlet.core.model import (
    Action,
    ActionStatus,
    Build,
    Commit,
    Executor,
    Lifecycle,
    Message,
    Outcome,
    Project,
    Scope,
    Token,
    User,
    VcsType,
    Why,
)
from circlet.core.ports import BuildQuery
from circlet.store.tables import actions, builds, projects, test_results, tokens, users

# Execution option read by the SQLite `begin` hook: transactions that only read say so.
_READ_ONLY = "circlet_read_only"


# ---------------------------------------------------------------- engine


def make_engine(url: str) -> sa.Engine:
    """An engine for `sqlite:///path` or `postgresql://...` (also `postgres://`).

    SQLite: creates the file's folder; every connection gets WAL, synchronous=NORMAL,
    busy_timeout=5000 and foreign keys, and writes begin with BEGIN IMMEDIATE.
    PostgreSQL: the psycopg 3 driver. A pooled connection is pinged when checked out only if it
    sat idle for PING_IDLE seconds or more, or if its socket is readable (the server ended the
    session: a restart, a terminated backend); a dead one is replaced, so a restarted server
    costs no request. A busy, healthy connection is not pinged (a ping per checkout cost a round
    trip per store call). A disconnect met during a call (a connection cut without a word) fails
    that call and makes the pool replace every connection made before it.
    """
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    if backend in ("postgresql", "postgres"):
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        return _postgres_engine(parsed)
    raise ValueError(f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}")


# Seconds a pooled PostgreSQL connection may sit idle and still be used without a ping; a
# PostgreSQL restart takes longer, and a busy server meets the restart on a call (see make_engine).
PING_IDLE = 1.0
_IDLE_SINCE = "circlet_idle_since"


def _postgres_engine(url: URL) -> sa.Engine:
    # pool_recycle: connections also go after an hour (firewalls drop long-idle TCP sessions).
    engine = sa.create_engine(url, pool_recycle=3600)
    dialect = engine.dialect

    @sa.event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop(_IDLE_SINCE, None)
        if since is None:
            return  # new
        if time.monotonic() - since < PING_IDLE and not _readable(dbapi_connection):
            return  # used a moment ago, and the server has not closed it (or said anything)
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            error: Any = exc  # a DBAPI error (is_disconnect says no to anything else)
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise sa.exc.DisconnectionError(f"a pooled connection is dead: {exc}") from exc
            raise

    return engine


def _readable(dbapi_connection: Any) -> bool:
    """Whether an idle connection's socket has something to read: a server that ends a session
    (a restart, pg_terminate_backend, idle_session_timeout) says so and closes it; one system call,
    no round trip."""
    try:
        ready, _, _ = select.select([dbapi_connection.fileno()], [], [], 0)
    except (OSError, ValueError, AttributeError, psycopg.Error):
        return True  # closed already: let the ping fail and the pool replace it
    return bool(ready)


def _sqlite_engine(url: URL) -> sa.Engine:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA busy_timeout=5000")
            _use_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # A read-only "transaction" is one SELECT, atomic on its own: no BEGIN, no lock, no cost.
        if not connection.get_execution_options().get(_READ_ONLY, False):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _use_wal(cursor: Any) -> None:
    """Switch the database to WAL (a setting kept in the file) unless it already is.

    The switch needs the database to itself and SQLite reports "database is locked" at once,
    without waiting, when another connection is switching a new database at the same moment
    (two processes starting together): wait and look again, for up to busy_timeout.
    """
    deadline = time.monotonic() + 5.0
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() not in ("wal", "memory"):
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# ---------------------------------------------------------------- rows <-> dataclasses


def _slug_key(vcs_type: VcsType, username: str, reponame: str) -> str:
    return f"{vcs_type.value}/{username}/{reponame}".lower()


def _project_to_values(project: Project) -> dict[str, Any]:
    return {
        "vcs_type": project.vcs_type.value,
        "username": project.username,
        "reponame": project.reponame,
        "slug_key": _slug_key(project.vcs_type, project.username, project.reponame),
        "repo_url": project.repo_url,
        "default_branch": project.default_branch,
        "oss": project.oss,
        "created_at": project.created_at,
    }


def _project_from_row(row: sa.Row[Any]) -> Project:
    m = row._mapping
    return Project(
        id=m["id"],
        vcs_type=VcsType(m["vcs_type"]),
        username=m["username"],
        reponame=m["reponame"],
        repo_url=m["repo_url"],
        default_branch=m["default_branch"],
        oss=m["oss"],
        created_at=m["created_at"],
    )


def _build_to_values(build: Build) -> dict[str, Any]:
    """Every column but id, project_id and build_num (a build's identity never changes)."""
    return {
        "branch": build.branch,
        "vcs_tag": build.vcs_tag,
        "vcs_revision": build.vcs_revision,
        "commit": asdict(build.commit) if build.commit is not None else None,
        "why": build.why.value,
        "dont_build": build.dont_build,
        "job_name": build.job_name,
        "build_parameters": build.build_parameters,
        "parallel": build.parallel,
        "lifecycle": build.lifecycle.value,
        "outcome": build.outcome.value if build.outcome is not None else None,
        "usage_queued_at": build.usage_queued_at,
        "queued_at": build.queued_at,
        "start_time": build.start_time,
        "stop_time": build.stop_time,
        "retry_of": build.retry_of,
        "user_id": build.user_id,
        "messages": [asdict(message) for message in build.messages],
        "config_text": build.config_text,
        "executor": asdict(build.executor) if build.executor is not None else None,
        "ssh_enabled": build.ssh_enabled,
        "ssh_users": list(build.ssh_users),
        "canceler_id": build.canceler_id,
        "canceled_by_system": build.canceled_by_system,
        "no_dependency_cache": build.no_dependency_cache,
        "worker": build.worker,
        "extra": build.extra,
    }


def _build_from_row(row: sa.Row[Any]) -> Build:
    m = row._mapping
    commit, executor, outcome = m["commit"], m["executor"], m["outcome"]
    return Build(
        id=m["id"],
        project_id=m["project_id"],
        build_num=m["build_num"],
        branch=m["branch"],
        vcs_tag=m["vcs_tag"],
        vcs_revision=m["vcs_revision"],
        commit=Commit(**commit) if commit is not None else None,
        why=Why(m["why"]),
        dont_build=m["dont_build"],
        job_name=m["job_name"],
        build_parameters=m["build_parameters"],
        parallel=m["parallel"],
        lifecycle=Lifecycle(m["lifecycle"]),
        outcome=Outcome(outcome) if outcome is not None else None,
        usage_queued_at=m["usage_queued_at"],
        queued_at=m["queued_at"],
        start_time=m["start_time"],
        stop_time=m["stop_time"],
        retry_of=m["retry_of"],
        user_id=m["user_id"],
        messages=tuple(Message(**message) for message in m["messages"]),
        config_text=m["config_text"],
        executor=Executor(**executor) if executor is not None else None,
        ssh_enabled=m["ssh_enabled"],
        ssh_users=tuple(m["ssh_users"]),
        canceler_id=m["canceler_id"],
        canceled_by_system=m["canceled_by_system"],
        no_dependency_cache=m["no_dependency_cache"],
        worker=m["worker"],
        extra=m["extra"],
    )


def _action_to_values(build_id: int, action: Action) -> dict[str, Any]:
    return {
        "build_id": build_id,
        "step": action.step,
        "index": action.index,
        "name": action.name,
        "type": action.type,
        "source": action.source,
        "bash_command": action.bash_command,
        "status": action.status.value,
        "exit_code": action.exit_code,
        "start_time": action.start_time,
        "end_time": action.end_time,
        "background": action.background,
        "parallel": action.parallel,
        "has_output": action.has_output,
        "truncated": action.truncated,
        "messages": list(action.messages),
    }


def _action_from_row(row: sa.Row[Any]) -> Action:
    m = row._mapping
    return Action(
        step=m["step"],
        index=m["index"],
        name=m["name"],
        type=m["type"],
        source=m["source"],
        bash_command=m["bash_command"],
        status=ActionStatus(m["status"]),
        exit_code=m["exit_code"],
        start_time=m["start_time"],
        end_time=m["end_time"],
        background=m["background"],
        parallel=m["parallel"],
        has_output=m["has_output"],
        truncated=m["truncated"],
        messages=tuple(m["messages"]),
    )


def _user_to_values(user: User) -> dict[str, Any]:
    return {
        "login": user.login,
        "name": user.name,
        "email": user.email,
        "admin": user.admin,
        "created_at": user.created_at,
    }


def _user_from_row(row: sa.Row[Any]) -> User:
    m = row._mapping
    return User(
        id=m["id"],
        login=m["login"],
        name=m["name"],
        email=m["email"],
        admin=m["admin"],
        created_at=m["created_at"],
    )


def _token_to_values(token: Token) -> dict[str, Any]:
    return {
        "token_hash": token.token_hash,
        "label": token.label,
        "user_id": token.user_id,
        "project_id": token.project_id,
        "scope": token.scope.value,
        "created_at": token.created_at,
        "revoked": token.revoked,
    }


def _token_from_row(row: sa.Row[Any]) -> Token:
    m = row._mapping
    return Token(
        id=m["id"],
        token_hash=m["token_hash"],
        label=m["label"],
        user_id=m["user_id"],
        project_id=m["project_id"],
        scope=Scope(m["scope"]),
        created_at=m["created_at"],
        revoked=m["revoked"],
    )


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------- the store


class SqlBuildStore:
    """BuildStore on an SQLAlchemy engine (use `make_engine`; the schema comes from `migrate`).

    Beyond the protocol: `create_build` raises NotFound for an unknown project, `save_build`
    for an unknown build id and `save_action` for an unknown build; `add_user`/`add_token` raise
    Conflict on a duplicate login/hash. Stored objects without `created_at` get the current time.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        # Reads are single SELECTs: no transaction around them (on PostgreSQL that saves the
        # BEGIN and ROLLBACK round trips; on SQLite the begin hook skips BEGIN).
        if engine.dialect.name == "postgresql":
            self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        else:
            self._reader = engine.execution_options(**{_READ_ONLY: True})
        insert = sqlite.insert if engine.dialect.name == "sqlite" else postgresql.insert
        upsert = insert(actions)
        keys = {"build_id", "step", "index"}
        self._upsert_action = upsert.on_conflict_do_update(
            index_elements=[actions.c.build_id, actions.c.step, actions.c.index],
            set_={c.name: upsert.excluded[c.name] for c in actions.columns if c.name not in keys},
        )
        # Hot-path queries built once (building a statement costs more than running it on SQLite).
        self._select_build = sa.select(builds).where(
            builds.c.project_id == sa.bindparam("project_id"), builds.c.build_num == sa.bindparam("build_num")
        )
        self._select_build_by_id = sa.select(builds).where(builds.c.id == sa.bindparam("id"))
        self._previous: dict[tuple[bool, bool, bool, bool], sa.Select[Any]] = {}  # see _previous_statement
        self._select_retries_many = (
            sa.select(builds)
            .where(
                builds.c.project_id == sa.bindparam("project_id"),
                builds.c.retry_of.in_(sa.bindparam("nums", expanding=True)),
            )
            .order_by(builds.c.build_num)
        )
        self._select_retries = (
            sa.select(builds)
            .where(
                builds.c.project_id == sa.bindparam("project_id"), builds.c.retry_of == sa.bindparam("num")
            )
            .order_by(builds.c.build_num)
        )
        self._select_actions = (
            sa.select(actions)
            .where(actions.c.build_id == sa.bindparam("build_id"))
            .order_by(actions.c.step, actions.c.index)
        )
        self._select_action = sa.select(actions).where(
            actions.c.build_id == sa.bindparam("build_id"),
            actions.c.step == sa.bindparam("step"),
            actions.c.index == sa.bindparam("index"),
        )
        self._select_project = sa.select(projects).where(projects.c.slug_key == sa.bindparam("slug_key"))
        self._select_project_by_id = sa.select(projects).where(projects.c.id == sa.bindparam("id"))
        self._select_token = sa.select(tokens).where(
            tokens.c.token_hash == sa.bindparam("token_hash"), tokens.c.revoked == sa.false()
        )

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    def _one(self, statement: sa.Select[Any], params: dict[str, Any] | None = None) -> sa.Row[Any] | None:
        with self._reader.connect() as connection:
            return connection.execute(statement, params).first()

    def _all(self, statement: sa.Select[Any], params: dict[str, Any] | None = None) -> list[sa.Row[Any]]:
        with self._reader.connect() as connection:
            return list(connection.execute(statement, params))

    # projects

    def add_project(self, project: Project) -> Project:
        project = replace(project, created_at=project.created_at or _now())
        values = _project_to_values(project) | {"next_build_num": 1}
        try:
            with self._engine.begin() as connection:
                project_id = connection.execute(
                    projects.insert().values(values).returning(projects.c.id)
                ).scalar_one()
        except sa.exc.IntegrityError:
            raise Conflict(f"project {project.slug} already exists") from None
        return replace(project, id=project_id)

    def get_project(self, vcs_type: str, username: str, reponame: str) -> Project | None:
        vcs = VcsType.parse(vcs_type)
        if vcs is None:
            return None
        row = self._one(self._select_project, {"slug_key": _slug_key(vcs, username, reponame)})
        return _project_from_row(row) if row is not None else None

    def get_project_by_id(self, project_id: int) -> Project | None:
        row = self._one(self._select_project_by_id, {"id": project_id})
        return _project_from_row(row) if row is not None else None

    def list_projects(self) -> list[Project]:
        return [_project_from_row(row) for row in self._all(sa.select(projects).order_by(projects.c.id))]

    def save_project(self, project: Project) -> None:
        """Replace the default branch and oss flag; NotFound for an unknown id."""
        if project.id is None:
            raise ValueError("save_project needs a stored project (id is None)")
        with self._engine.begin() as connection:
            result = connection.execute(
                projects.update()
                .where(projects.c.id == project.id)
                .values(default_branch=project.default_branch, oss=project.oss)
            )
        if result.rowcount == 0:
            raise NotFound(f"no project with id {project.id}")

    # builds

    def create_build(self, build: Build) -> Build:
        """The project's counter is bumped with UPDATE ... RETURNING in the INSERT's transaction:
        the row lock (PostgreSQL) or the database lock (SQLite, BEGIN IMMEDIATE) makes concurrent
        callers take turns, and a failed insert rolls the counter back, so numbers stay gapless."""
        with self._engine.begin() as connection:
            next_num = connection.execute(
                projects.update()
                .where(projects.c.id == build.project_id)
                .values(next_build_num=projects.c.next_build_num + 1)
                .returning(projects.c.next_build_num)
            ).scalar_one_or_none()
            if next_num is None:
                raise NotFound(f"no project with id {build.project_id}")
            build_num = next_num - 1
            values = _build_to_values(build) | {"project_id": build.project_id, "build_num": build_num}
            build_id = connection.execute(builds.insert().values(values).returning(builds.c.id)).scalar_one()
        return replace(build, id=build_id, build_num=build_num)

    def get_build(self, project_id: int, build_num: int) -> Build | None:
        row = self._one(self._select_build, {"project_id": project_id, "build_num": build_num})
        return _build_from_row(row) if row is not None else None

    def get_build_by_id(self, build_id: int) -> Build | None:
        row = self._one(self._select_build_by_id, {"id": build_id})
        return _build_from_row(row) if row is not None else None

    def save_build(self, build: Build) -> None:
        """Replace every field but id, project_id and build_num; NotFound for an unknown id."""
        if build.id is None:
            raise ValueError("save_build needs a stored build (id is None)")
        with self._engine.begin() as connection:
            result = connection.execute(
                builds.update().where(builds.c.id == build.id).values(_build_to_values(build))
            )
        if result.rowcount == 0:
            raise NotFound(f"no build with id {build.id}")

    def list_builds(self, query: BuildQuery) -> list[Build]:
        statement = sa.select(builds)
        if query.project_ids is not None:
            statement = statement.where(builds.c.project_id.in_(query.project_ids))
        if query.branch is not None:
            statement = statement.where(builds.c.branch == query.branch)
        if query.lifecycles is not None:
            statement = statement.where(builds.c.lifecycle.in_([lc.value for lc in query.lifecycles]))
        if query.outcomes is not None:
            statement = statement.where(builds.c.outcome.in_([o.value for o in query.outcomes]))
        one_project = query.project_ids is not None and len(query.project_ids) == 1
        order = builds.c.build_num.desc() if one_project else builds.c.id.desc()
        statement = statement.order_by(order).limit(max(query.limit, 0)).offset(max(query.offset, 0))
        return [_build_from_row(row) for row in self._all(statement)]

    def builds_in(self, lifecycles: tuple[Lifecycle, ...]) -> list[Build]:
        statement = (
            sa.select(builds)
            .where(builds.c.lifecycle.in_([lc.value for lc in lifecycles]))
            .order_by(builds.c.id)
        )
        return [_build_from_row(row) for row in self._all(statement)]

    def previous_build(
        self,
        project_id: int,
        branch: str | None,
        job_name: str | None,
        before_num: int,
        *,
        finished_only: bool = False,
        outcome: Outcome | None = None,
    ) -> Build | None:
        """Jobs `None` and `build` are the same job (None means the default job, `build`)."""
        default_job = job_name is None or job_name == "build"
        statement = self._previous_statement(branch is None, default_job, finished_only, outcome is not None)
        params = {
            "project_id": project_id,
            "before": before_num,
            "branch": branch,
            "job": job_name,
            "outcome": outcome.value if outcome is not None else None,
        }
        row = self._one(statement, params)
        return _build_from_row(row) if row is not None else None

    def _previous_statement(
        self, no_branch: bool, default_job: bool, finished_only: bool, by_outcome: bool
    ) -> sa.Select[Any]:
        """The previous_build query for one combination of options, built once (building a
        SQLAlchemy expression costs more than running it on an index)."""
        key = (no_branch, default_job, finished_only, by_outcome)
        statement = self._previous.get(key)
        if statement is not None:
            return statement
        statement = sa.select(builds).where(
            builds.c.project_id == sa.bindparam("project_id"),
            builds.c.build_num < sa.bindparam("before"),
            builds.c.branch.is_(None) if no_branch else builds.c.branch == sa.bindparam("branch"),
        )
        if default_job:
            statement = statement.where(sa.or_(builds.c.job_name.is_(None), builds.c.job_name == "build"))
        else:
            statement = statement.where(builds.c.job_name == sa.bindparam("job"))
        if finished_only:
            statement = statement.where(
                builds.c.lifecycle == Lifecycle.FINISHED.value,
                sa.or_(builds.c.outcome.is_(None), builds.c.outcome != Outcome.CANCELED.value),
            )
        if by_outcome:
            statement = statement.where(builds.c.outcome == sa.bindparam("outcome"))
        statement = statement.order_by(builds.c.build_num.desc()).limit(1)
        self._previous[key] = statement
        return statement

    def retries_of_many(self, project_id: int, build_nums: Collection[int]) -> dict[int, list[Build]]:
        by_num: dict[int, list[Build]] = {}
        if not build_nums:
            return by_num
        rows = self._all(
            self._select_retries_many, {"project_id": project_id, "nums": sorted(set(build_nums))}
        )
        for row in rows:
            build = _build_from_row(row)
            by_num.setdefault(build.retry_of or 0, []).append(build)
        return by_num

    def retries_of(self, project_id: int, build_num: int) -> list[Build]:
        rows = self._all(self._select_retries, {"project_id": project_id, "num": build_num})
        return [_build_from_row(row) for row in rows]

    # actions

    def save_action(self, build_id: int, action: Action) -> None:
        """One INSERT ... ON CONFLICT DO UPDATE; NotFound for an unknown build."""
        try:
            with self._engine.begin() as connection:
                connection.execute(self._upsert_action, _action_to_values(build_id, action))
        except sa.exc.IntegrityError:
            raise NotFound(f"no build with id {build_id}") from None

    def save_actions(self, build_id: int, actions: list[Action]) -> None:
        """One transaction, one executemany of the upsert; NotFound for an unknown build."""
        if not actions:
            return
        try:
            with self._engine.begin() as connection:
                connection.execute(self._upsert_action, [_action_to_values(build_id, a) for a in actions])
        except sa.exc.IntegrityError:
            raise NotFound(f"no build with id {build_id}") from None

    def add_test_results(
        self, build_id: int, node_index: int, tests: list[dict[str, Any]], exceptions: list[dict[str, Any]]
    ) -> None:
        key = {"build_id": build_id, "node_index": node_index}
        try:
            with self._engine.begin() as connection:
                row = connection.execute(
                    sa.select(test_results).where(
                        test_results.c.build_id == build_id, test_results.c.node_index == node_index
                    )
                ).first()
                if row is None:
                    connection.execute(
                        test_results.insert().values(
                            **key, tests=tests, exceptions=exceptions, created_at=_now()
                        )
                    )
                else:
                    connection.execute(
                        test_results.update()
                        .where(test_results.c.build_id == build_id, test_results.c.node_index == node_index)
                        .values(tests=[*row.tests, *tests], exceptions=[*row.exceptions, *exceptions])
                    )
        except sa.exc.IntegrityError:
            raise NotFound(f"no build with id {build_id}") from None

    def test_results(self, build_id: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        rows = self._all(
            sa.select(test_results)
            .where(test_results.c.build_id == build_id)
            .order_by(test_results.c.node_index)
        )
        return [t for row in rows for t in row.tests], [e for row in rows for e in row.exceptions]

    def list_actions(self, build_id: int) -> list[Action]:
        return [_action_from_row(row) for row in self._all(self._select_actions, {"build_id": build_id})]

    def get_action(self, build_id: int, step: int, index: int) -> Action | None:
        row = self._one(self._select_action, {"build_id": build_id, "step": step, "index": index})
        return _action_from_row(row) if row is not None else None

    # users and tokens

    def add_user(self, user: User) -> User:
        """Conflict when the login is taken."""
        user = replace(user, created_at=user.created_at or _now())
        try:
            with self._engine.begin() as connection:
                user_id = connection.execute(
                    users.insert().values(_user_to_values(user)).returning(users.c.id)
                ).scalar_one()
        except sa.exc.IntegrityError:
            raise Conflict(f"user {user.login} already exists") from None
        return replace(user, id=user_id)

    def get_user(self, user_id: int) -> User | None:
        row = self._one(sa.select(users).where(users.c.id == user_id))
        return _user_from_row(row) if row is not None else None

    def get_user_by_login(self, login: str) -> User | None:
        row = self._one(sa.select(users).where(users.c.login == login))
        return _user_from_row(row) if row is not None else None

    def list_users(self) -> list[User]:
        """Every user, oldest first."""
        return [_user_from_row(row) for row in self._all(sa.select(users).order_by(users.c.id))]

    def add_token(self, token: Token) -> Token:
        """Conflict when the hash exists; NotFound for an unknown user or project."""
        token = replace(token, created_at=token.created_at or _now())
        try:
            with self._engine.begin() as connection:
                token_id = connection.execute(
                    tokens.insert().values(_token_to_values(token)).returning(tokens.c.id)
                ).scalar_one()
        except sa.exc.IntegrityError:
            if self._one(sa.select(tokens.c.id).where(tokens.c.token_hash == token.token_hash)):
                raise Conflict("a token with this hash already exists") from None
            raise NotFound("the token's user or project does not exist") from None
        return replace(token, id=token_id)

    def find_token(self, token_hash: str) -> Token | None:
        row = self._one(self._select_token, {"token_hash": token_hash})
        return _token_from_row(row) if row is not None else None

    def get_token(self, token_id: int) -> Token | None:
        row = self._one(sa.select(tokens).where(tokens.c.id == token_id, tokens.c.revoked == sa.false()))
        return _token_from_row(row) if row is not None else None

    def revoke_token(self, token_id: int) -> bool:
        """True when the token exists (revoking twice is fine), False otherwise."""
        with self._engine.begin() as connection:
            result = connection.execute(tokens.update().where(tokens.c.id == token_id).values(revoked=True))
        return result.rowcount > 0

    def list_tokens(self) -> list[Token]:
        """Every token, revoked ones included, oldest first."""
        return [_token_from_row(row) for row in self._all(sa.select(tokens).order_by(tokens.c.id))]
