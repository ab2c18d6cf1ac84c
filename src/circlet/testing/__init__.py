"""Fakes for every port, for tests (in circlet and in code built on it).

Each fake passes the same contract tests as the real adapter (tests/contract/), so a test that
uses a fake can trust it behaves like the real thing. Assert on the fake's state, not on calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from circlet.core.model import Action, ActionStatus, Message, Outcome
from circlet.core.ports import RunReporter, RunRequest
from circlet.testing.logs import InMemoryLogStore, InMemoryLogWriter
from circlet.testing.project_settings import InMemoryDeliveryStore, InMemoryProjectSettingsStore
from circlet.testing.sessions import InMemorySessionStore
from circlet.testing.source import FakeSourceHost
from circlet.testing.store import InMemoryBuildStore, _now

__all__ = [
    "FakeSourceHost",
    "InMemoryBuildStore",
    "InMemoryDeliveryStore",
    "InMemoryLogStore",
    "InMemoryLogWriter",
    "InMemoryProjectSettingsStore",
    "InMemorySessionStore",
    "RecordingDispatcher",
    "RecordingReporter",
    "RecordingWriter",
]


# --- runner fakes
# RecordingDispatcher (Dispatcher) keeps what the service asks; RecordingReporter (RunReporter)
# keeps what a runner says. Neither runs anything in the background.


class RecordingDispatcher:
    """A Dispatcher that runs nothing by itself and keeps what it is asked, for tests to read.

    `submitted` lists every RunRequest in order, `canceled` every build id passed to cancel,
    `waiting()` the requests neither run nor canceled (keyed by build id, as the local executor:
    submitting a build again replaces its request). `run_next()` plays the oldest waiting build
    through a reporter synchronously: queued, started and, if the reporter lets it start,
    finished with the given outcome. To run real steps, hand a request to a JobRunner instead.
    """

    def __init__(self) -> None:
        self.reporter: RunReporter | None = None
        self.submitted: list[RunRequest] = []
        self.canceled: list[int] = []
        self.stopped = False
        self._waiting: dict[int, RunRequest] = {}
        self._lock = threading.Lock()

    def start(self, reporter: RunReporter) -> None:
        self.reporter = reporter
        self.stopped = False

    def submit(self, request: RunRequest) -> None:
        with self._lock:
            self.submitted.append(request)
            self._waiting[request.build_id] = request

    def cancel(self, build_id: int) -> bool:
        """True when the build was waiting here (it then never runs)."""
        with self._lock:
            self.canceled.append(build_id)
            return self._waiting.pop(build_id, None) is not None

    def stop(self, timeout: float = 10.0) -> None:
        self.stopped = True

    def waiting(self) -> list[RunRequest]:
        with self._lock:
            return list(self._waiting.values())

    def run_next(
        self,
        reporter: RunReporter | None = None,
        *,
        outcome: Outcome = Outcome.SUCCESS,
        at: datetime | None = None,
        worker: str = "fake",
    ) -> RunRequest | None:
        """Take the oldest waiting request and report it run to `reporter` (default: the one given
        to start); None when nothing waits."""
        target = reporter or self.reporter
        if target is None:
            raise RuntimeError("no reporter: pass one or call start() first")
        with self._lock:
            if not self._waiting:
                return None
            build_id = next(iter(self._waiting))
            request = self._waiting.pop(build_id)
        when = at or _now()
        target.build_queued(build_id, when)
        if target.build_started(build_id, when, worker):
            target.build_finished(build_id, outcome, when)
        return request


class RecordingWriter:
    """A LogWriter that counts everything and keeps the first `keep` bytes."""

    def __init__(self, keep: int, on_chunk: Callable[[int], None] | None) -> None:
        self.keep = keep
        self.on_chunk = on_chunk
        self.data = bytearray()
        self.size = 0
        self.chunks = 0
        self.closed = False

    def write(self, data: bytes, at: datetime, stream: str = "out") -> None:
        assert not self.closed, "write after close"
        assert at.tzinfo is not None
        assert stream == "out"
        self.chunks += 1
        self.size += len(data)
        room = self.keep - len(self.data)
        if room > 0:
            self.data += data[:room]
        if self.on_chunk is not None:
            self.on_chunk(len(data))

    def close(self) -> None:
        self.closed = True


@dataclass
class RecordingReporter:
    """A RunReporter that keeps what the runner said, for asserting on the resulting state."""

    allow_start: bool = True
    keep: int = 1 << 20
    on_chunk: Callable[[int], None] | None = None
    on_action_started: Callable[[Action], None] | None = None
    started_builds: list[tuple[int, str]] = field(default_factory=list)
    started: list[Action] = field(default_factory=list)
    finished: dict[tuple[int, int], Action] = field(default_factory=dict)
    writers: dict[tuple[int, int], RecordingWriter] = field(default_factory=dict)
    finished_builds: list[tuple[int, Outcome, datetime, tuple[Message, ...]]] = field(default_factory=list)
    tests: list[tuple[int, list[dict[str, Any]], list[dict[str, Any]]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def build_queued(self, build_id: int, at: datetime) -> None:
        pass

    def build_started(self, build_id: int, at: datetime, worker: str, node: int | None = None) -> bool:
        with self.lock:
            self.started_builds.append((build_id, worker))
        return self.allow_start

    def action_started(self, build_id: int, action: Action) -> None:
        with self.lock:
            self.started.append(action)
        if self.on_action_started is not None:
            self.on_action_started(action)

    def log_writer(self, build_id: int, step: int, index: int) -> RecordingWriter:
        writer = RecordingWriter(self.keep, self.on_chunk)
        with self.lock:
            self.writers[(step, index)] = writer
        return writer

    def action_finished(self, build_id: int, action: Action) -> None:
        with self.lock:
            assert (action.step, action.index) not in self.finished
            self.finished[(action.step, action.index)] = action

    def test_results(
        self, build_id: int, index: int, tests: list[dict[str, Any]], exceptions: list[dict[str, Any]]
    ) -> None:
        self.tests.append((index, list(tests), list(exceptions)))

    def build_finished(
        self,
        build_id: int,
        outcome: Outcome,
        at: datetime,
        messages: tuple[Message, ...] = (),
        node: int | None = None,  # (a whole build here: JobRunner's node is None)
    ) -> None:
        with self.lock:
            self.finished_builds.append((build_id, outcome, at, messages))

    # helpers
    def log(self, step: int, index: int = 0) -> str:
        return self.writers[(step, index)].data.decode()

    def steps(self, index: int = 0) -> list[int]:
        return sorted(step for step, i in self.finished if i == index)

    def status(self, step: int, index: int = 0) -> ActionStatus:
        return self.finished[(step, index)].status
