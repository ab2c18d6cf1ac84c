"""The `local` executor: runs builds in this process, on a fixed number of slots (threads).

Builds wait in submission order (FIFO) until a slot is free. Each slot is one thread that runs
one build at a time through a JobRunner, which reports through the RunReporter port only; so a
worker elsewhere can run the same runner with a reporter that reaches the server.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from circlet.core.model import Outcome
from circlet.core.ports import CheckoutSource, RunReporter, RunRequest
from circlet.runner.run import JobRunner

log = logging.getLogger("circlet.executors.local")


class LocalExecutor:
    """A Dispatcher that runs builds on `slots` threads of this process."""

    def __init__(
        self,
        *,
        slots: int,
        workspace_root: Path,
        source: CheckoutSource,
        keep_workspaces: bool = False,
        kill_grace: float = 3.0,
        worker_name: str = "local",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self.workspace_root = workspace_root
        self.source = source
        self.keep_workspaces = keep_workspaces
        self.kill_grace = kill_grace
        self.worker_name = worker_name
        self.clock = clock
        self._reporter: RunReporter | None = None
        self._waiting: OrderedDict[int, RunRequest] = OrderedDict()
        self._running: dict[int, JobRunner] = {}
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def start(self, reporter: RunReporter) -> None:
        with self._cond:
            if self._threads:
                return
            self._reporter = reporter
            self._stopping = False
            for n in range(self.slots):
                thread = threading.Thread(target=self._slot, name=f"circlet-slot-{n}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def submit(self, request: RunRequest) -> None:
        with self._cond:
            self._waiting[request.build_id] = request
            self._cond.notify()

    def cancel(self, build_id: int) -> bool:
        with self._cond:
            if self._waiting.pop(build_id, None) is not None:
                return True
            runner = self._running.get(build_id)
        if runner is not None:
            runner.cancel()
            return True
        return False

    def busy(self) -> int:
        with self._cond:
            return len(self._running)

    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            runners = list(self._running.values())
            self._cond.notify_all()
        for runner in runners:
            runner.cancel()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def _slot(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                build_id, request = self._waiting.popitem(last=False)
                reporter = self._reporter
                assert reporter is not None
                runner = JobRunner(
                    workspace_root=self.workspace_root,
                    source=self.source,
                    reporter=reporter,
                    worker=self.worker_name,
                    keep_workspace=self.keep_workspaces,
                    kill_grace=self.kill_grace,
                )
                self._running[build_id] = runner
            try:
                reporter.build_queued(build_id, self.clock())
                runner.run(request)
            except Exception:  # the runner reports its own failures; this is a last guard
                log.exception("event=runner_crashed build_id=%s", build_id)
                try:
                    reporter.build_finished(build_id, Outcome.INFRASTRUCTURE_FAIL, self.clock())
                except Exception:
                    log.exception("event=report_failed build_id=%s", build_id)
            finally:
                with self._cond:
                    self._running.pop(build_id, None)
