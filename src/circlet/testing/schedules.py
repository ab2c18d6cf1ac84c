"""InMemoryScheduleStore: the ScheduleStore fake (same tests as the SQL store: test_scheduler.py)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime

from circlet.core.pipeline import ScheduleRun, ScheduleRunState

_Key = tuple[int, str, str, datetime]


def _key(run: ScheduleRun) -> _Key:
    return (run.project_id, run.workflow, run.branch, run.minute)


class InMemoryScheduleStore:
    """ScheduleStore in a dict behind a lock; `created_at` defaults to the current time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[_Key, ScheduleRun] = {}

    def claim_run(self, run: ScheduleRun) -> bool:
        with self._lock:
            if _key(run) in self._runs:
                return False
            self._runs[_key(run)] = replace(run, created_at=run.created_at or datetime.now(UTC))
            return True

    def take_pending(self, limit: int = 100) -> list[ScheduleRun]:
        with self._lock:
            pending = [r for r in self._runs.values() if r.state is ScheduleRunState.PENDING]
            pending.sort(key=lambda r: (r.created_at or r.minute, r.minute))
            taken = [replace(r, state=ScheduleRunState.STARTED) for r in pending[:limit]]
            for run in taken:
                self._runs[_key(run)] = run
            return taken

    def save_run(self, run: ScheduleRun) -> None:
        with self._lock:
            if _key(run) in self._runs:
                self._runs[_key(run)] = run

    def list_runs(self, project_id: int | None = None, limit: int = 50) -> list[ScheduleRun]:
        with self._lock:
            found = [r for r in self._runs.values() if project_id is None or r.project_id == project_id]
            found.sort(key=lambda r: (-r.minute.timestamp(), r.workflow, r.branch))
            return found[:limit]

    def prune_runs(self, before: datetime) -> int:
        with self._lock:
            old = [k for k, r in self._runs.items() if r.minute < before]
            for key in old:
                del self._runs[key]
            return len(old)
