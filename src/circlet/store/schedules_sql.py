"""ScheduleStore on SQLAlchemy Core (table `schedule_runs` of migration 0004), SQLite or PostgreSQL.

The table's primary key (project, workflow, branch, minute) is what makes a minute run at most
once: `claim_run` is an INSERT that loses to any earlier one, whichever thread, process or
server made it. `take_pending` moves each pending row to `started` with a conditional UPDATE, so
two servers sharing a database never both start one.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from circlet.core.pipeline import ScheduleRun, ScheduleRunState
from circlet.store.tables_pipelines import schedule_runs

T = schedule_runs.c


def _values(run: ScheduleRun) -> dict[str, Any]:
    return {
        "project_id": run.project_id,
        "workflow": run.workflow,
        "branch": run.branch,
        "minute": run.minute,
        "state": run.state.value,
        "revision": run.revision,
        "requested_by": run.requested_by,
        "pipeline_id": run.pipeline_id,
        "build_num": run.build_num,
        "error": run.error,
        "created_at": run.created_at or datetime.now(UTC),
    }


def _from_row(row: sa.Row[Any]) -> ScheduleRun:
    m = row._mapping
    return ScheduleRun(
        project_id=m["project_id"],
        workflow=m["workflow"],
        branch=m["branch"],
        minute=m["minute"],
        state=ScheduleRunState(m["state"]),
        revision=m["revision"],
        requested_by=m["requested_by"],
        pipeline_id=m["pipeline_id"],
        build_num=m["build_num"],
        error=m["error"],
        created_at=m["created_at"],
    )


def _key(run: ScheduleRun) -> sa.ColumnElement[bool]:
    return sa.and_(
        T.project_id == run.project_id,
        T.workflow == run.workflow,
        T.branch == run.branch,
        T.minute == run.minute,
    )


class SqlScheduleStore:
    """ScheduleStore on an SQLAlchemy engine (store.sql.make_engine; schema by migrate)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def claim_run(self, run: ScheduleRun) -> bool:
        try:
            with self._engine.begin() as connection:
                connection.execute(schedule_runs.insert().values(**_values(run)))
        except sa.exc.IntegrityError:
            return False
        return True

    def take_pending(self, limit: int = 100) -> list[ScheduleRun]:
        with self._engine.connect() as connection:
            rows = list(
                connection.execute(
                    sa.select(schedule_runs)
                    .where(T.state == ScheduleRunState.PENDING.value)
                    .order_by(T.created_at, T.minute)
                    .limit(limit)
                )
            )
        taken: list[ScheduleRun] = []
        for row in rows:
            run = _from_row(row)
            with self._engine.begin() as connection:
                moved = connection.execute(
                    schedule_runs.update()
                    .where(_key(run), T.state == ScheduleRunState.PENDING.value)
                    .values(state=ScheduleRunState.STARTED.value)
                ).rowcount
            if moved:
                taken.append(replace(run, state=ScheduleRunState.STARTED))
        return taken

    def save_run(self, run: ScheduleRun) -> None:
        values = _values(run)
        for key in ("project_id", "workflow", "branch", "minute"):
            del values[key]
        with self._engine.begin() as connection:
            connection.execute(schedule_runs.update().where(_key(run)).values(**values))

    def list_runs(self, project_id: int | None = None, limit: int = 50) -> list[ScheduleRun]:
        query = sa.select(schedule_runs).order_by(T.minute.desc(), T.workflow, T.branch).limit(limit)
        if project_id is not None:
            query = query.where(T.project_id == project_id)
        with self._engine.connect() as connection:
            return [_from_row(r) for r in connection.execute(query)]

    def prune_runs(self, before: datetime) -> int:
        with self._engine.begin() as connection:
            return connection.execute(schedule_runs.delete().where(T.minute < before)).rowcount
