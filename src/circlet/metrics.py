"""Prometheus metrics of a circlet server (`GET /metrics`, docs/metrics.md).

Counted as builds finish (Circlet calls `build_finished` for each): finished builds by outcome
and their durations. Read from the store when scraped (so they hold across restarts and
servers): builds waiting and running, the age of the oldest waiting build, and the workers of
the fleet by state, with their slots and busy slots per resource class. Plus the process's own
CPU, memory and open files (prometheus_client's process collector).

Everything lives in one CollectorRegistry per server (no module-level state): tests make as
many servers as they like.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from circlet.core.model import Build, Lifecycle
from circlet.core.ports import BuildStore
from circlet.core.workers import Worker, WorkerState

log = logging.getLogger("circlet.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Build durations, seconds: from a quick `true` to a long integration suite.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
WAITING = (Lifecycle.NOT_RUNNING, Lifecycle.QUEUED)


class _StoreCollector(Collector):
    """The gauges read at each scrape."""

    def __init__(
        self,
        store: BuildStore,
        workers: Callable[[], list[Worker]] | None,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.workers = workers
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        builds = GaugeMetricFamily("circlet_builds", "Builds waiting or running now", labels=["lifecycle"])
        waiting = [b for b in self.store.builds_in(WAITING) if b.outcome is None]
        running = self.store.builds_in((Lifecycle.RUNNING,))
        for lifecycle in WAITING:
            builds.add_metric([lifecycle.value], sum(1 for b in waiting if b.lifecycle is lifecycle))
        builds.add_metric([Lifecycle.RUNNING.value], len(running))
        yield builds
        oldest = GaugeMetricFamily(
            "circlet_oldest_waiting_build_seconds",
            "How long the oldest waiting build has waited (0: none waits)",
        )
        oldest.add_metric([], max((self._waited(b) for b in waiting), default=0.0))
        yield oldest
        if self.workers is None:
            return
        fleet = self.workers()
        states = GaugeMetricFamily("circlet_workers", "Workers known to the server", labels=["state"])
        for state in WorkerState:
            states.add_metric([state.value], sum(1 for w in fleet if w.state is state))
        yield states
        slots = GaugeMetricFamily(
            "circlet_worker_slots", "Slots of alive workers by resource class", labels=["resource_class"]
        )
        busy = GaugeMetricFamily(
            "circlet_worker_busy_slots",
            "Busy slots of alive workers by resource class",
            labels=["resource_class"],
        )
        total: dict[str, int] = {}
        used: dict[str, int] = {}
        for worker in fleet:
            if worker.state is not WorkerState.ALIVE:
                continue
            for resource_class in worker.info.resource_classes:  # (a worker counts in each it serves)
                total[resource_class] = total.get(resource_class, 0) + worker.info.slots
                used[resource_class] = used.get(resource_class, 0) + worker.info.busy
        for resource_class in sorted(total):
            slots.add_metric([resource_class], total[resource_class])
            busy.add_metric([resource_class], used[resource_class])
        yield slots
        yield busy

    def _waited(self, build: Build) -> float:
        since = build.usage_queued_at or build.queued_at
        return max(0.0, (self.clock() - since).total_seconds()) if since is not None else 0.0


class Metrics:
    """A server's metrics. `build_finished` is thread-safe (prometheus_client's counters are)."""

    def __init__(
        self,
        store: BuildStore,
        *,
        workers: Callable[[], list[Worker]] | None = None,
        clock: Callable[[], datetime],
    ) -> None:
        """`workers`: the fleet's list (the celery executor); None: no worker metrics."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.finished = Counter(
            "circlet_builds_finished",
            "Builds finished since the server started, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.durations = Histogram(
            "circlet_build_duration_seconds",
            "Run time of finished builds (start to stop), by outcome",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StoreCollector(store, workers, clock))
        ProcessCollector(registry=self.registry)

    def build_finished(self, build: Build) -> None:
        """Count a build that just finished (Circlet's observer)."""
        outcome = build.outcome.value if build.outcome is not None else "none"
        self.finished.labels(outcome).inc()
        if build.start_time is not None and build.stop_time is not None:
            self.durations.labels(outcome).observe((build.stop_time - build.start_time).total_seconds())

    def render(self) -> bytes:
        """The text exposition format, for a scrape."""
        return generate_latest(self.registry)
