"""The `local` executor: builds run on this machine, on a fixed number of slots.

Builds wait in submission order (FIFO) until a slot is free. Each slot is a thread of the
server that hands one build at a time to its runner:

- `ProcessRunner` (the default): a long-lived runner process per slot (executors/child.py),
  so runners share no GIL with the API and a crashing runner fails only its build;
- `ThreadRunner`: the JobRunner in the slot's own thread (tests, and CIRCLET_RUNNER=thread).

Either way the runner reports through the RunReporter port only.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from circlet.core.blobs import BlobStore
from circlet.core.model import Outcome
from circlet.core.ports import CheckoutSource, RunReporter, RunRequest
from circlet.runner.run import JobRunner

log = logging.getLogger("circlet.executors.local")


class SlotRunner(Protocol):
    """What a slot runs builds with, one at a time."""

    def run(self, request: RunRequest, reporter: RunReporter) -> Outcome:
        """Run the build to its end, reporting it; blocking."""
        ...

    def cancel(self) -> None:
        """Stop the build being run, if any; from any thread; returns at once."""
        ...

    def close(self) -> None: ...


class ThreadRunner:
    """Runs each build with a JobRunner in the calling (slot) thread."""

    def __init__(
        self,
        *,
        workspace_root: Path,
        source: CheckoutSource,
        worker: str = "local",
        keep_workspace: bool = False,
        kill_grace: float = 3.0,
        groups_dir: Path | None = None,
        blobs: BlobStore | None = None,
    ) -> None:
        self.blobs = blobs
        self.groups_dir = groups_dir
        self.workspace_root = workspace_root
        self.source = source
        self.worker = worker
        self.keep_workspace = keep_workspace
        self.kill_grace = kill_grace
        self._current: JobRunner | None = None

    def run(self, request: RunRequest, reporter: RunReporter) -> Outcome:
        groups = None
        if self.groups_dir is not None:
            self.groups_dir.mkdir(parents=True, exist_ok=True)
            groups = self.groups_dir / str(request.build_id)
        self._current = JobRunner(
            groups_file=groups,
            workspace_root=self.workspace_root,
            source=self.source,
            reporter=reporter,
            worker=self.worker,
            keep_workspace=self.keep_workspace,
            kill_grace=self.kill_grace,
            blobs=self.blobs,
        )
        try:
            return self._current.run(request)
        finally:
            self._current = None
            if groups is not None:
                groups.unlink(missing_ok=True)

    def cancel(self) -> None:
        current = self._current
        if current is not None:
            current.cancel()

    def close(self) -> None:
        self.cancel()


class LocalExecutor:
    """A Dispatcher that runs builds on `slots` slots of this machine."""

    def __init__(
        self,
        *,
        slots: int,
        runner_factory: Callable[[], SlotRunner],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_start: Callable[[], object] | None = None,
    ) -> None:
        """`on_start` runs once before the slots start (the cleanup after a crash)."""
        self.on_start = on_start
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self.runner_factory = runner_factory
        self.clock = clock
        self._reporter: RunReporter | None = None
        self._waiting: OrderedDict[int, RunRequest] = OrderedDict()
        self._running: dict[int, SlotRunner] = {}
        self._runners: list[SlotRunner] = []
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def start(self, reporter: RunReporter) -> None:
        with self._cond:
            if self._threads:
                return
            self._reporter = reporter
            self._stopping = False
            if self.on_start is not None:
                self.on_start()
            for n in range(self.slots):
                runner = self.runner_factory()
                warm = getattr(runner, "start", None)
                if callable(warm):
                    warm()  # start runner processes now, not on the first build
                self._runners.append(runner)
                thread = threading.Thread(
                    target=self._slot, args=(runner,), name=f"circlet-slot-{n}", daemon=True
                )
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
        """Stop: running builds are canceled (their processes killed), runners closed."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for runner in self._runners:
            runner.close()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        self._runners = []

    def _slot(self, runner: SlotRunner) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                build_id, request = self._waiting.popitem(last=False)
                reporter = self._reporter
                assert reporter is not None
                self._running[build_id] = runner
            try:
                reporter.build_queued(build_id, self.clock())
                runner.run(request, reporter)
            except Exception:  # runners report their own failures; this is a last guard
                log.exception("event=runner_crashed build_id=%s", build_id)
                try:
                    reporter.build_finished(build_id, Outcome.INFRASTRUCTURE_FAIL, self.clock())
                except Exception:
                    log.exception("event=report_failed build_id=%s", build_id)
            finally:
                with self._cond:
                    self._running.pop(build_id, None)
