"""executors/report_batch.py: a worker's action reports go to the server in batches, in order."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from circlet.core.model import Action, ActionStatus
from circlet.executors.report_batch import ReportBatcher

T0 = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)


class FakeClient:
    """The part of RunnerClient the batcher uses; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def build_headers(self, build_id: int) -> dict[str, str]:
        return {"x-build": str(build_id)}

    def call(self, method: str, path: str, *, json: dict[str, Any], headers: dict[str, str]) -> None:
        assert (method, headers) == ("POST", {"x-build": path.split("/")[2]})
        with self.lock:
            self.calls.append((path, json))


def _action(step: int, status: ActionStatus = ActionStatus.RUNNING) -> Action:
    return Action(step=step, index=0, name=f"s{step}", type="test", status=status, start_time=T0)


def _ops(body: dict[str, Any]) -> list[tuple[str, int]]:
    return [(item["op"], item["action"]["step"]) for item in body["actions"]]


def test_a_steps_end_and_the_next_start_go_in_one_call() -> None:
    client = FakeClient()
    batch = ReportBatcher(client, gather=0.05)

    batch.action_finished(7, _action(101, ActionStatus.SUCCESS))
    batch.action_started(7, _action(102))
    time.sleep(0.3)

    assert [(path, _ops(body)) for path, body in client.calls] == [
        ("/builds/7/reports", [("finished", 101), ("started", 102)])
    ]


def test_a_start_ended_before_it_went_is_not_sent_and_the_end_carries_the_rest() -> None:
    client = FakeClient()
    batch = ReportBatcher(client, gather=5.0)  # nothing goes by itself during this test
    batch.action_started(7, _action(0))
    batch.action_finished(7, _action(0, ActionStatus.SUCCESS))
    batch.action_started(7, _action(101))
    batch.action_finished(7, _action(101, ActionStatus.FAILED))

    batch.build_finished(7, {"outcome": "failed", "at": "2026-11-28T06:00:00Z", "messages": [], "node": 1})

    [(path, body)] = client.calls
    assert path == "/builds/7/reports"
    assert _ops(body) == [("finished", 0), ("finished", 101)]
    assert body["finished"]["outcome"] == "failed" and body["finished"]["node"] == 1


def test_a_dropped_build_reports_nothing_more() -> None:
    client = FakeClient()
    batch = ReportBatcher(client, gather=5.0)
    batch.action_started(8, _action(101))

    batch.drop(8)
    time.sleep(0.05)

    assert client.calls == []
