"""The worker's bookkeeping of what its slots run (worker.py WorkerAgent), on a fake server client."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from circlet.core.workers import HeartbeatReply, WorkerInfo
from circlet.worker import WorkerAgent, WorkerOptions


class Slot:
    """Stands for a slot's runner process: records what the heartbeat sends it."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


class Server:
    def __init__(self, cancel: tuple[int, ...] = ()) -> None:
        self.cancel = cancel
        self.seen: list[WorkerInfo] = []

    def heartbeat(self, info: WorkerInfo, timeout: float | None = None) -> HeartbeatReply:
        self.seen.append(info)
        return HeartbeatReply(cancel=self.cancel, interval=0.5, lost_after=3.0)


def agent(server: Server, tmp_path: Path) -> WorkerAgent:
    options = WorkerOptions(
        server="http://127.0.0.1:1",
        token="t",
        broker_url="redis://127.0.0.1:1/0",
        resource_classes=("medium",),
        slots=2,
        name="w1",
        host="ci-1",
        workspaces=tmp_path,
    )
    return WorkerAgent(options, server)


def test_a_duplicate_task_ending_leaves_the_running_container_listed_and_cancelable(tmp_path: Path) -> None:
    server = Server(cancel=(7,))
    worker = agent(server, tmp_path)
    first, duplicate = Slot(), Slot()
    worker._busy = 2  # both slots took a task for container 0 of build 7
    worker._started(7, 0, first)  # type: ignore[arg-type]  # the server let the first one start
    # The duplicate was refused by the server (never started) and is over:
    worker._finished(7, 0, duplicate)  # type: ignore[arg-type]

    worker.beat()

    assert server.seen[-1].running == (7,) and server.seen[-1].busy == 1
    assert first.sent == [{"op": "cancel", "build_id": 7}]
    assert duplicate.sent == []


def test_a_finished_container_is_no_longer_listed(tmp_path: Path) -> None:
    server = Server()
    worker = agent(server, tmp_path)
    slot = Slot()
    worker._busy = 1
    worker._started(7, 0, slot)  # type: ignore[arg-type]
    worker._finished(7, 0, slot)  # type: ignore[arg-type]

    worker.beat()

    assert server.seen[-1].running == () and server.seen[-1].busy == 0


def test_a_crash_is_said_until_the_server_heard_it(tmp_path: Path) -> None:
    server = Server()
    worker = agent(server, tmp_path)
    worker._crashed.add(7)  # (what run() records when its runner process died)

    class Down:
        def heartbeat(self, info: WorkerInfo, timeout: float | None = None) -> HeartbeatReply:
            raise ConnectionError("server unreachable")

    worker.client = Down()
    worker.beat()
    assert worker.info().crashed == (7,)

    worker.client = server
    worker.beat()
    worker.beat()

    assert [info.crashed for info in server.seen] == [(7,), ()]


class CutOff:
    """A server that answers once (lost_after 1 s), then never again: each later heartbeat
    hangs, as a call over a cut cable does until it times out."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()

    def heartbeat(self, info: WorkerInfo, timeout: float | None = None) -> HeartbeatReply:
        self.calls += 1
        if self.calls > 1:
            self.release.wait(30)
            raise TimeoutError("timed out")
        return HeartbeatReply(interval=0.05, lost_after=1.0)


def test_a_cut_off_worker_fences_its_builds_while_its_heartbeat_still_hangs(tmp_path: Path) -> None:
    server = CutOff()
    worker = agent(server, tmp_path)  # type: ignore[arg-type]
    slot = Slot()
    worker._busy = 1
    worker._started(7, 0, slot)  # type: ignore[arg-type]
    started = time.monotonic()
    worker.start_heartbeat()
    try:
        deadline = started + 5
        while not slot.sent and time.monotonic() < deadline:
            time.sleep(0.01)
        fenced_after = time.monotonic() - started
        assert slot.sent == [{"op": "fence", "build_id": 7}]
        assert server.calls == 2  # the second heartbeat was still hanging
        assert 0.85 < fenced_after < 1.5  # 90% of lost_after, not the call's timeout
        time.sleep(0.3)
        assert len(slot.sent) == 1  # once per silence
    finally:
        server.release.set()
        worker.stop()


def test_a_runner_that_died_under_a_refused_duplicate_is_no_crash_of_the_build(tmp_path: Path) -> None:
    server = Server()
    worker = agent(server, tmp_path)
    running, duplicate = Slot(), Slot()
    worker._busy = 2
    worker._started(7, 0, running)  # type: ignore[arg-type]

    worker._runner_died(7, 0, duplicate)  # type: ignore[arg-type]
    assert worker.info().crashed == ()
    worker._runner_died(7, 0, running)  # type: ignore[arg-type]
    assert worker.info().crashed == (7,)


def test_a_container_started_during_the_silence_is_fenced_too_and_each_only_once(tmp_path: Path) -> None:
    server = Server()
    worker = agent(server, tmp_path)
    worker.beat()  # the server's answer: lost_after 3 s
    first, second = Slot(), Slot()
    worker._busy = 2
    worker._started(7, 0, first)  # type: ignore[arg-type]
    worker._last_ok -= 2.8  # silent for more than 90% of lost_after

    assert worker.check_fence()
    worker._started(8, 0, second)  # type: ignore[arg-type]  # (its start got through meanwhile)
    assert worker.check_fence()
    assert not worker.check_fence()

    assert first.sent == [{"op": "fence", "build_id": 7}]
    assert second.sent == [{"op": "fence", "build_id": 8}]
    worker.beat()  # answered again: nothing fenced while the server hears us
    assert not worker.check_fence()
