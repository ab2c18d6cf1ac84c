"""`parallelism: N` on the celery executor: one task per container, spread over the workers of the
class (issue #6). Real server, PostgreSQL, Redis and worker processes, as test_workers.py."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_workers import (  # type: ignore[import-not-found]
    LOST_AFTER,
    SLUG,
    Fleet,
    Redis,
    _steps_alive,
    redis,
    wait_for,
)

from circlet.harness import config_yaml, make_repo

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]
__all__ = ["redis"]  # (the fixture, shared with test_workers.py)

PARALLELISM = 3


@pytest.fixture
def parallel_fleet(tmp_path: Path, postgres_url: str, redis: Redis) -> Iterator[Callable[..., Fleet]]:
    """A server whose project's job has `parallelism: 3`, and 3 workers of one slot each (so the
    containers of one build must use several workers)."""
    made: list[Fleet] = []

    def make(steps: list[Any], names: tuple[str, ...] = ("w1", "w2", "w3")) -> Fleet:
        fleet = Fleet(tmp_path, postgres_url, redis.url)
        fleet.start_server()
        config = config_yaml(steps).replace("  build:\n", f"  build:\n    parallelism: {PARALLELISM}\n", 1)
        make_repo(tmp_path / "repo", {".circleci/config.yml": config, "README.md": "widget\n"})
        fleet.server.cli("project", "add", SLUG, "--repo", str(tmp_path / "repo"))
        made.append(fleet)
        for name in names:
            fleet.start_worker(name, slots=1)
        return fleet

    yield make
    for fleet in made:
        fleet.stop()


def _containers(database_url: str, build_num: int) -> dict[int, dict[str, Any]]:
    """node -> {"worker", "outcome"}: where each container of the build ran (builds.extra)."""
    import psycopg

    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT extra FROM builds WHERE build_num = %s", (build_num,)).fetchone()
    assert row is not None
    extra = row[0] if isinstance(row[0], dict) else json.loads(row[0])
    return {int(node): entry for node, entry in (extra.get("containers") or {}).items()}


def _outputs(fleet: Fleet, build: dict[str, Any], step_name: str) -> dict[int, str]:
    """container index -> the output of its action of `step_name`."""
    step = next(s for s in build["steps"] if s["name"] == step_name)
    found: dict[int, str] = {}
    for action in step["actions"]:
        status, chunks = fleet.server.request("GET", action["output_url"].removeprefix(fleet.server.base))
        assert status == 200, chunks
        found[int(action["index"])] = "".join(c["message"] for c in chunks)
    return found


def test_containers_spread_over_workers_and_the_worst_one_decides(
    parallel_fleet: Callable[..., Fleet], postgres_url: str
) -> None:
    command = 'echo "node=$CIRCLE_NODE_INDEX of $CIRCLE_NODE_TOTAL"; sleep 1; [ "$CIRCLE_NODE_INDEX" != 2 ]'
    fleet = parallel_fleet([{"run": {"name": "which node", "command": command}}])

    num = fleet.trigger()
    build = fleet.server.wait_finished(SLUG, num, timeout=60)

    assert build["outcome"] == "failed", fleet.logs()  # container 2 failed, 0 and 1 passed
    assert build["parallel"] == PARALLELISM
    outputs = _outputs(fleet, build, "which node")
    assert {i: text.splitlines()[0] for i, text in outputs.items()} == {
        i: f"node={i} of {PARALLELISM}" for i in range(PARALLELISM)
    }
    step = next(s for s in build["steps"] if s["name"] == "which node")
    assert {a["index"]: a["status"] for a in step["actions"]} == {0: "success", 1: "success", 2: "failed"}
    containers = _containers(postgres_url, num)
    assert sorted(containers) == [0, 1, 2]
    assert len({c["worker"] for c in containers.values()}) > 1, containers  # spread, not one worker
    assert [containers[i]["outcome"] for i in range(3)] == ["success", "success", "failed"]


def test_cancel_reaches_every_container(parallel_fleet: Callable[..., Fleet]) -> None:
    marker = "63.25"
    fleet = parallel_fleet([{"run": {"name": "long", "command": f"sleep {marker}"}}])
    num = fleet.trigger()
    wait_for(lambda: len(_steps_alive(marker)) == PARALLELISM, 30, "every container's step to run")

    started = time.monotonic()
    status, _ = fleet.server.request("POST", f"/api/v1.1/project/{SLUG}/{num}/cancel")
    assert status == 200
    wait_for(lambda: not _steps_alive(marker), 5, "every container's step to be killed", poll=0.02)

    assert time.monotonic() - started < 3.0
    assert fleet.server.wait_finished(SLUG, num, timeout=15)["outcome"] == "canceled"


def test_killed_worker_fails_the_build_once_and_it_is_retried_once(
    parallel_fleet: Callable[..., Fleet], postgres_url: str
) -> None:
    marker = "64.75"
    command = f'[ "$CIRCLE_BUILD_NUM" != 1 ] || sleep {marker}'
    fleet = parallel_fleet([{"run": {"name": "slow once", "command": command}}])
    num = fleet.trigger()
    wait_for(lambda: len(_steps_alive(marker)) == PARALLELISM, 30, "every container's step to run")
    victim = _containers(postgres_url, num)[1]["worker"]

    fleet.kill_worker(victim)
    lost = fleet.server.wait_finished(SLUG, num, timeout=LOST_AFTER + 20)

    assert lost["outcome"] == "infrastructure_fail"
    assert sum(f"worker {victim}" in m["message"] for m in lost["messages"]) == 1, lost["messages"]
    wait_for(lambda: not _steps_alive(marker), 15, "the other containers' steps to be stopped")
    retry = fleet.server.wait_finished(SLUG, num + 1, timeout=60)
    assert (retry["retry_of"], retry["why"], retry["outcome"]) == (num, "auto-retry", "success"), fleet.logs()
    assert victim not in {c["worker"] for c in _containers(postgres_url, num + 1).values()}
    assert fleet.trigger() == num + 2  # exactly one retry was made
