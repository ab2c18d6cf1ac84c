"""WorkerStore on SQLAlchemy Core: the `workers` table (migration 0006).

Same conventions as store/sql.py: explicit row <-> dataclass functions, one short transaction per
method, one store shared by every thread. A heartbeat is an upsert done as UPDATE, then INSERT
when no row changed (portable across SQLite and PostgreSQL; a lost race on the INSERT of a new
worker is retried as an UPDATE).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from circlet.core.workers import Worker, WorkerInfo, WorkerState, heartbeat_state
from circlet.store.sql import _READ_ONLY
from circlet.store.tables_workers import workers

W = workers.c


def _info_values(info: WorkerInfo) -> dict[str, Any]:
    return {
        "host": info.host,
        "pid": info.pid,
        "resource_classes": list(info.resource_classes),
        "slots": info.slots,
        "busy": info.busy,
        "running": list(info.running),
        "version": info.version,
        "stopping": info.stopping,
    }


def _worker_from_row(row: sa.Row[Any]) -> Worker:
    m = row._mapping
    return Worker(
        info=WorkerInfo(
            name=m["name"],
            host=m["host"],
            pid=m["pid"],
            resource_classes=tuple(m["resource_classes"]),
            slots=m["slots"],
            busy=m["busy"],
            running=tuple(m["running"]),
            version=m["version"],
            stopping=m["stopping"],
        ),
        first_seen=m["first_seen"],
        last_seen=m["last_seen"],
        state=WorkerState(m["state"]),
    )


class SqlWorkerStore:
    """WorkerStore on an SQLAlchemy engine (the one SqlBuildStore uses)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        if engine.dialect.name == "postgresql":
            self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        else:
            self._reader = engine.execution_options(**{_READ_ONLY: True})

    def save_heartbeat(self, info: WorkerInfo, now: datetime) -> Worker:
        state = heartbeat_state(info)
        values = {**_info_values(info), "state": state.value, "last_seen": now}
        for attempt in range(2):
            try:
                with self._engine.begin() as connection:
                    changed = connection.execute(workers.update().where(W.name == info.name).values(**values))
                    if not changed.rowcount:
                        connection.execute(workers.insert().values(name=info.name, first_seen=now, **values))
                break
            except sa.exc.IntegrityError:
                if attempt:  # another heartbeat of the same worker inserted it first: update it
                    raise
        worker = self.get_worker(info.name)
        assert worker is not None
        return worker

    def list_workers(self) -> list[Worker]:
        with self._reader.connect() as connection:
            rows = connection.execute(sa.select(workers).order_by(W.name))
            return [_worker_from_row(row) for row in rows]

    def get_worker(self, name: str) -> Worker | None:
        with self._reader.connect() as connection:
            row = connection.execute(sa.select(workers).where(W.name == name)).first()
        return _worker_from_row(row) if row is not None else None

    def mark_lost(self, name: str, seen_before: datetime) -> bool:
        with self._engine.begin() as connection:
            changed = connection.execute(
                workers.update()
                .where(W.name == name, W.state == WorkerState.ALIVE.value, W.last_seen < seen_before)
                .values(state=WorkerState.LOST.value)
            )
            return bool(changed.rowcount)

    def forget(self, seen_before: datetime) -> int:
        with self._engine.begin() as connection:
            gone = connection.execute(
                workers.delete().where(
                    W.state.in_([WorkerState.LOST.value, WorkerState.STOPPED.value]),
                    W.last_seen < seen_before,
                )
            )
            return int(gone.rowcount)
