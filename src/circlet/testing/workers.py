"""InMemoryWorkerStore: the fake of core/workers.py WorkerStore (contract:
tests/contract/test_worker_store.py runs against it and against store/workers_sql.py)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime

from circlet.core.workers import Worker, WorkerInfo, WorkerState, heartbeat_state


class InMemoryWorkerStore:
    """Workers in a dict behind a lock, with the semantics of SqlWorkerStore."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.workers: dict[str, Worker] = {}

    def save_heartbeat(self, info: WorkerInfo, now: datetime) -> Worker:
        state = heartbeat_state(info)
        with self._lock:
            old = self.workers.get(info.name)
            worker = Worker(info=info, first_seen=old.first_seen if old else now, last_seen=now, state=state)
            self.workers[info.name] = worker
            return worker

    def list_workers(self) -> list[Worker]:
        with self._lock:
            return [self.workers[name] for name in sorted(self.workers)]

    def get_worker(self, name: str) -> Worker | None:
        with self._lock:
            return self.workers.get(name)

    def mark_lost(self, name: str, seen_before: datetime) -> bool:
        with self._lock:
            worker = self.workers.get(name)
            if worker is None or worker.state is not WorkerState.ALIVE or worker.last_seen >= seen_before:
                return False
            self.workers[name] = replace(worker, state=WorkerState.LOST)
            return True

    def forget(self, seen_before: datetime) -> int:
        with self._lock:
            gone = [
                name
                for name, w in self.workers.items()
                if w.state is not WorkerState.ALIVE and w.last_seen < seen_before
            ]
            for name in gone:
                del self.workers[name]
            return len(gone)
