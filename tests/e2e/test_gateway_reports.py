"""The gateway's batch of reports (`POST /builds/{id}/reports`, sent by executors/report_batch.py):
applied in order, the build's end included; a malformed batch is refused whole. Real server on
loopback, as test_gateway.py (whose fixtures these are)."""

from __future__ import annotations

from typing import Any

import pytest
from test_gateway import SLUG, WORKER_TOKEN, client, repo, server, waiting_build  # type: ignore[import-not-found]

from circlet.core.model import Action, ActionStatus
from circlet.executors import protocol
from circlet.harness import ServerProcess
from circlet.remote.client import RunnerClient
from circlet.remote.errors import GatewayError

__all__ = ["WORKER_TOKEN", "client", "repo", "server"]  # (fixtures shared with test_gateway.py)


def _report(op: str, step: int, status: ActionStatus) -> dict[str, Any]:
    reporter_action = Action(step=step, index=0, name=f"step {step}", type="test", status=status)
    return {"op": op, "action": protocol.encode_action(reporter_action)}


def test_a_batch_of_reports_ends_the_build(server: ServerProcess, client: RunnerClient) -> None:
    build_num, build_id = waiting_build(server)
    assert client.reporter().build_started(build_id, protocol.decode_time("2026-11-28T06:00:00Z"), "w-b")
    headers = client.build_headers(build_id)

    with pytest.raises(GatewayError) as refused:  # nothing of a malformed batch is applied
        body = {"actions": [_report("finished", 101, ActionStatus.SUCCESS), {"op": "paused", "action": {}}]}
        client.call("POST", f"/builds/{build_id}/reports", json=body, headers=headers, retry_for=0)
    assert refused.value.status == 400
    body = {
        "actions": [
            _report("finished", 101, ActionStatus.SUCCESS),
            _report("started", 102, ActionStatus.RUNNING),
            _report("finished", 102, ActionStatus.FAILED),
        ],
        "finished": {"outcome": "failed", "at": "2026-11-28T06:00:05Z", "messages": []},
    }
    client.call("POST", f"/builds/{build_id}/reports", json=body, headers=headers)

    build = server.wait_finished(SLUG, build_num)
    assert build["outcome"] == "failed"
    statuses = {s["name"]: s["actions"][0]["status"] for s in build["steps"]}
    assert statuses == {"step 101": "success", "step 102": "failed"}
