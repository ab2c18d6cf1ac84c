"""1.0 deployment waits for every container of a build run here (runner/run.py, config.md 12.1)."""

from __future__ import annotations

import threading

from circlet.core.phases import Phase
from circlet.core.plan import JobPlan


class DeployGate:
    """Where the nodes of one run meet before a 1.0 plan's deployment steps (config.md 12.1:
    deployment runs only if everything before succeeded, on every node).

    Each node arrives once (a later arrival is ignored), saying whether it failed: at the first
    deployment step, or when it ends without reaching it. Node 0 then waits in `any_failed` until
    every node arrived; a cancel wakes it (`wake`) so that it never blocks one. Thread-safe."""

    def __init__(self, total: int, canceled: threading.Event) -> None:
        self._total = total
        self._canceled = canceled
        self._arrived: set[int] = set()
        self._failed = False
        self._changed = threading.Condition()

    def arrive(self, index: int, *, failed: bool) -> None:
        with self._changed:
            if index not in self._arrived:
                self._arrived.add(index)
                self._failed = self._failed or failed
                self._changed.notify_all()

    def any_failed(self) -> bool:
        """Block until every node arrived or the run is canceled; True if a node failed (a
        cancel is the caller's to notice)."""
        with self._changed:
            self._changed.wait_for(lambda: len(self._arrived) >= self._total or self._canceled.is_set())
            return self._failed

    def wake(self) -> None:
        """The run was canceled (the event is set): stop waiting."""
        with self._changed:
            self._changed.notify_all()


def deployment_start(plan: JobPlan) -> int | None:
    """The position of a 1.0 plan's first deployment step, None without one (every 2.x plan)."""
    if plan.config_version != "1.0":
        return None
    return next((i for i, step in enumerate(plan.steps) if step.type == Phase.DEPLOYMENT), None)
