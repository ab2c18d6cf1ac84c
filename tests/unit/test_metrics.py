"""metrics.py on the fakes: gauges read from the store and the fleet at scrape time, counters
counted as builds finish; parsed back with prometheus_client's own parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from circlet.core.model import Build, Lifecycle, Outcome, Project, VcsType
from circlet.core.workers import Worker, WorkerInfo, WorkerState
from circlet.metrics import Metrics
from circlet.testing import InMemoryBuildStore

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def worker(name: str, state: WorkerState, classes: tuple[str, ...], slots: int, busy: int) -> Worker:
    info = WorkerInfo(name=name, host="ci-1", pid=1, resource_classes=classes, slots=slots, busy=busy)
    return Worker(info=info, first_seen=NOW, last_seen=NOW, state=state)


def test_gauges_counters_and_durations() -> None:
    store = InMemoryBuildStore()
    project = store.add_project(
        Project(vcs_type=VcsType.GITHUB, username="a", reponame="r", repo_url="x", default_branch="main")
    )
    pid = project.id or 0
    store.create_build(
        Build(project_id=pid, lifecycle=Lifecycle.NOT_RUNNING, usage_queued_at=NOW - timedelta(seconds=90))
    )
    store.create_build(
        Build(project_id=pid, lifecycle=Lifecycle.QUEUED, usage_queued_at=NOW - timedelta(seconds=30))
    )
    store.create_build(Build(project_id=pid, lifecycle=Lifecycle.RUNNING))
    store.create_build(Build(project_id=pid, lifecycle=Lifecycle.FINISHED, outcome=Outcome.SUCCESS))
    fleet = [
        worker("w1", WorkerState.ALIVE, ("medium",), 2, 1),
        worker("w2", WorkerState.ALIVE, ("medium", "large"), 4, 3),
        worker("w3", WorkerState.LOST, ("medium",), 8, 8),
    ]
    metrics = Metrics(store, workers=lambda: fleet, clock=lambda: NOW)
    ok = Build(project_id=pid, outcome=Outcome.SUCCESS, start_time=NOW, stop_time=NOW + timedelta(seconds=42))
    metrics.build_finished(ok)
    metrics.build_finished(ok)
    metrics.build_finished(Build(project_id=pid, outcome=Outcome.FAILED, start_time=NOW, stop_time=NOW))

    got = samples(metrics)

    assert got[("circlet_builds", (("lifecycle", "not_running"),))] == 1
    assert got[("circlet_builds", (("lifecycle", "queued"),))] == 1
    assert got[("circlet_builds", (("lifecycle", "running"),))] == 1
    assert got[("circlet_oldest_waiting_build_seconds", ())] == 90
    assert got[("circlet_workers", (("state", "alive"),))] == 2
    assert got[("circlet_workers", (("state", "lost"),))] == 1
    assert got[("circlet_worker_slots", (("resource_class", "medium"),))] == 6  # (lost ones not counted)
    assert got[("circlet_worker_busy_slots", (("resource_class", "medium"),))] == 4
    assert got[("circlet_worker_slots", (("resource_class", "large"),))] == 4
    assert got[("circlet_builds_finished_total", (("outcome", "success"),))] == 2
    assert got[("circlet_builds_finished_total", (("outcome", "failed"),))] == 1
    assert got[("circlet_build_duration_seconds_sum", (("outcome", "success"),))] == 84
    assert got[("circlet_build_duration_seconds_bucket", (("le", "30.0"), ("outcome", "success")))] == 0
    assert got[("circlet_build_duration_seconds_bucket", (("le", "60.0"), ("outcome", "success")))] == 2
    assert ("process_cpu_seconds_total", ()) in got


def test_without_a_fleet_there_are_no_worker_metrics_and_nothing_waits() -> None:
    metrics = Metrics(InMemoryBuildStore(), clock=lambda: NOW)

    got = samples(metrics)

    assert got[("circlet_oldest_waiting_build_seconds", ())] == 0
    assert not [name for name, _ in got if name.startswith("circlet_worker")]
