"""The worker fleet of the celery executor, as data and rules (pure: the time is a parameter).

A worker (`circlet worker`) tells the server every HEARTBEAT_INTERVAL seconds who it is and which
builds it runs (`WorkerInfo`); the server answers with the builds it must stop (`HeartbeatReply`).
A worker silent for longer than `lost_after` seconds is lost: its running builds end
`infrastructure_fail` with a message naming it and are retried once on another worker
(docs/workers.md). Nothing here touches the network or the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from circlet.core.model import Build, Lifecycle, Message, Outcome, Why
from circlet.core.status import decide_outcome

HEARTBEAT_INTERVAL = 0.5  # seconds between a worker's heartbeats (cancel reaches it this fast)
LOST_AFTER = 30.0  # seconds without a heartbeat after which a worker is lost (setting)
DEFAULT_RESOURCE_CLASS = "medium"


class WorkerState(StrEnum):
    """Where a worker stands, as the server sees it."""

    ALIVE = "alive"  # heartbeats arrive
    LOST = "lost"  # silent past lost_after; its builds were ended and retried
    STOPPED = "stopped"  # said goodbye (a warm shutdown): nothing was running on it


@dataclass(frozen=True, kw_only=True)
class WorkerInfo:
    """What a worker says about itself in each heartbeat."""

    name: str  # unique per worker process: `host:pid` unless --name says otherwise
    host: str
    pid: int
    resource_classes: tuple[str, ...]  # the classes whose queues it consumes
    slots: int  # builds it runs at once
    busy: int  # builds running now
    running: tuple[int, ...] = ()  # ids of the builds running now
    version: str = ""
    stopping: bool = False  # the worker shuts down (warm): takes no more work
    crashed: tuple[int, ...] = ()  # builds whose runner process died here (said until heard)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "pid": self.pid,
            "resource_classes": list(self.resource_classes),
            "slots": self.slots,
            "busy": self.busy,
            "running": list(self.running),
            "version": self.version,
            "stopping": self.stopping,
            "crashed": list(self.crashed),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkerInfo:
        """Parse a heartbeat body; ValueError/KeyError/TypeError on a malformed one."""
        classes = tuple(str(c) for c in data["resource_classes"])
        if not classes or not all(classes):
            raise ValueError("resource_classes must name at least one class")
        return cls(
            name=str(data["name"]),
            host=str(data["host"]),
            pid=int(data["pid"]),
            resource_classes=classes,
            slots=int(data["slots"]),
            busy=int(data["busy"]),
            running=tuple(int(b) for b in data.get("running", ())),
            version=str(data.get("version", "")),
            stopping=bool(data.get("stopping", False)),
            crashed=tuple(int(b) for b in data.get("crashed", ())),
        )


@dataclass(frozen=True, kw_only=True)
class HeartbeatReply:
    """The server's answer to a heartbeat."""

    cancel: tuple[int, ...] = ()  # builds the worker must stop now (kill their process groups)
    interval: float = HEARTBEAT_INTERVAL  # seconds until the next heartbeat
    lost_after: float = LOST_AFTER  # the server's lost-worker timeout, for the worker's information

    def to_dict(self) -> dict[str, Any]:
        return {"cancel": list(self.cancel), "interval": self.interval, "lost_after": self.lost_after}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeartbeatReply:
        return cls(
            cancel=tuple(int(b) for b in data.get("cancel", ())),
            interval=float(data.get("interval", HEARTBEAT_INTERVAL)),
            lost_after=float(data.get("lost_after", LOST_AFTER)),
        )


@dataclass(frozen=True, kw_only=True)
class Worker:
    """A worker as the server records it: its last heartbeat and its state."""

    info: WorkerInfo
    first_seen: datetime
    last_seen: datetime
    state: WorkerState = WorkerState.ALIVE

    @property
    def name(self) -> str:
        return self.info.name


# ---------------------------------------------------------------- rules


def heartbeat_state(info: WorkerInfo) -> WorkerState:
    """The state a heartbeat puts its worker in: stopped once it shuts down with nothing left
    running (a worker finishing its builds during a warm shutdown is still alive)."""
    if info.stopping and not info.running and info.busy == 0:
        return WorkerState.STOPPED
    return WorkerState.ALIVE


def is_lost(worker: Worker, now: datetime, lost_after: float) -> bool:
    """An alive worker whose last heartbeat is older than `lost_after` seconds."""
    return worker.state is WorkerState.ALIVE and now - worker.last_seen > timedelta(seconds=lost_after)


def serves(workers: Iterable[Worker], resource_class: str) -> bool:
    """True when an alive worker that still takes work consumes this class's queue."""
    return any(
        w.state is WorkerState.ALIVE and not w.info.stopping and resource_class in w.info.resource_classes
        for w in workers
    )


def to_cancel(worker: str, running: Mapping[int, Build | None]) -> tuple[int, ...]:
    """Which of the builds a worker says it runs it must stop: those gone, finished, canceled
    (outcome set while running), or started by other workers only (a container never runs
    twice; a build of several containers runs on every worker that started one)."""
    stop: list[int] = []
    for build_id, build in running.items():
        over = build is None or build.outcome is not None or build.lifecycle is not Lifecycle.RUNNING
        if over or (build is not None and worker not in build_workers(build)):
            stop.append(build_id)
    return tuple(sorted(stop))


# ---------------------------------------------------------------- containers (parallelism: N)
#
# With the celery executor each container (node index) of a build is a task of its own, run by
# whichever worker of the class takes it. The build records them in Build.extra["containers"]:
# {"<node>": {"worker": NAME, "at": START TIME, "outcome": null | "success" | ...}}. The build
# is running from the first container's start and finishes when the last container reports,
# with the worst of their outcomes (decide_outcome's precedence: canceled > infrastructure_fail
# > timedout > failed > no_tests > success).

CONTAINERS = "containers"  # the Build.extra key


def containers_of(build: Build) -> dict[int, dict[str, Any]]:
    """The build's started containers by node index (empty for a build run whole)."""
    raw = build.extra.get(CONTAINERS) or {}
    return {int(node): dict(entry) for node, entry in raw.items()}


def build_workers(build: Build) -> frozenset[str]:
    """Every worker that started a container of the build (its `worker` for a build run whole)."""
    names = {str(e["worker"]) for e in containers_of(build).values() if e.get("worker")}
    if build.worker:
        names.add(build.worker)
    return frozenset(names)


def running_workers(build: Build) -> frozenset[str]:
    """The workers still running a container of the build: a lost one among them loses the build."""
    containers = containers_of(build)
    if not containers:
        return frozenset({build.worker}) if build.worker else frozenset()
    return frozenset(
        str(e["worker"]) for e in containers.values() if e.get("worker") and not e.get("outcome")
    )


def all_started(build: Build) -> bool:
    """True when every container of the build has started (always for a build run whole)."""
    containers = containers_of(build)
    return not containers or len(containers) >= max(1, build.parallel)


def unstarted_containers(build: Build) -> frozenset[int]:
    """The node indexes of the build's containers that have not started."""
    return frozenset(range(max(1, build.parallel))) - containers_of(build).keys()


def _with_containers(build: Build, containers: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    return {**build.extra, CONTAINERS: {str(n): dict(e) for n, e in sorted(containers.items())}}


def start_container(build: Build, node: int, worker: str, at: datetime) -> Build | None:
    """The build once container `node` started on `worker`; None when it must not run: the build
    is over or canceled, the node is out of range, or it already started (a redelivered message:
    a container never runs twice). The first container makes the build running."""
    startable = (Lifecycle.NOT_RUNNING, Lifecycle.QUEUED, Lifecycle.RUNNING)
    in_range = 0 <= node < max(1, build.parallel)
    if build.outcome is not None or build.lifecycle not in startable or not in_range:
        return None
    containers = containers_of(build)
    stamp = at.isoformat()
    if node in containers:
        entry = containers[node]
        # The same call resent (the server restarted before answering: same worker, same
        # time) is answered yes again; any other start of a started container is refused.
        resent = entry.get("worker") == worker and entry.get("at") == stamp and not entry.get("outcome")
        return build if resent else None
    containers[node] = {"worker": worker, "at": stamp, "outcome": None}
    first = build.lifecycle is not Lifecycle.RUNNING
    return replace(
        build,
        lifecycle=Lifecycle.RUNNING,
        queued_at=build.queued_at or at,
        start_time=at if first or build.start_time is None else build.start_time,
        worker=worker if first or not build.worker else build.worker,
        extra=_with_containers(build, containers),
        messages=without_waiting_note(build.messages),
    )


def without_waiting_note(messages: tuple[Message, ...]) -> tuple[Message, ...]:
    """A build's messages once it started: the note that no worker served its class is over."""
    return tuple(m for m in messages if m.reason != WAITING_REASON)


def combine_outcomes(outcomes: Iterable[Outcome]) -> Outcome:
    """The outcome of a build from its containers' outcomes: the worst by the spec's precedence."""
    seen = set(outcomes)
    return decide_outcome(
        canceled=Outcome.CANCELED in seen,
        infrastructure_fail=Outcome.INFRASTRUCTURE_FAIL in seen,
        timedout=Outcome.TIMEDOUT in seen,
        failed=Outcome.FAILED in seen,
        no_tests=Outcome.NO_TESTS in seen,
    )


def finish_container(
    build: Build, node: int, outcome: Outcome, messages: tuple[Message, ...] = ()
) -> tuple[Build | None, Outcome | None]:
    """Record container `node`'s end: (the build to save, or None when nothing changes: the build
    is over or this container already reported; the build's outcome when this was the last
    container, else None). The container's messages are added to the build's at once."""
    if build.lifecycle in (Lifecycle.FINISHED, Lifecycle.NOT_RUN):
        return None, None
    containers = containers_of(build)
    entry = containers.get(node, {"worker": None, "outcome": None})
    if entry.get("outcome"):
        return None, None
    containers[node] = {**entry, "outcome": outcome.value}
    fresh = tuple(m for m in messages if m not in build.messages)
    saved = replace(build, messages=(*build.messages, *fresh), extra=_with_containers(build, containers))
    total = max(1, build.parallel)
    ended = [containers[i].get("outcome") for i in range(total) if i in containers]
    if len(ended) < total or not all(ended):
        return saved, None
    return saved, combine_outcomes(Outcome(str(o)) for o in ended)


def should_retry(build: Build) -> bool:
    """A build lost with its worker is retried once: not when it is itself such a retry, nor
    when a user canceled it meanwhile."""
    return build.why is not Why.AUTO_RETRY and build.outcome is None


def lost_message(worker: Worker, now: datetime) -> Message:
    """The message a build lost with its worker ends with."""
    silent = (now - worker.last_seen).total_seconds()
    return Message(
        type="error",
        reason="infrastructure",
        message=f"worker {worker.name} (host {worker.info.host}) stopped answering "
        f"{silent:.0f} s ago while running this build; circlet considers it lost.",
    )


def orphan_message(worker: Worker) -> Message:
    """The message of a build its (still answering) worker stopped listing as running."""
    return Message(
        type="error",
        reason="infrastructure",
        message=f"worker {worker.name} (host {worker.info.host}) no longer runs this build: its runner "
        "stopped without reporting the end (it lost contact with the server for too long, or crashed).",
    )


def crash_message(worker: Worker) -> Message:
    """The message of a build whose runner process died on its (still answering) worker."""
    return Message(
        type="error",
        reason="infrastructure",
        message=f"the runner process of worker {worker.name} (host {worker.info.host}) died while "
        "running this build (killed, or out of memory); its steps were stopped.",
    )


def retry_message(retry_num: int | None, problem: str | None = None) -> Message:
    """The message added to a lost build: the number of its automatic retry, or why there is none
    (`problem`: the retry failed; neither: it was itself an automatic retry)."""
    if retry_num is not None:
        text = f"circlet retried this build as build {retry_num}."
    elif problem is not None:
        text = f"circlet could not retry this build: {problem}"
    else:
        text = "circlet did not retry this build (it was already a retry after a lost worker)."
    return Message(type="warning", reason="infrastructure", message=text)


WAITING_REASON = "no_worker"  # the reason of waiting_message's note


def waiting_message(resource_class: str) -> Message:
    """The message a waiting build carries while no worker serves its resource class."""
    return Message(
        type="warning",
        reason=WAITING_REASON,
        message=f"no worker serves resource class `{resource_class}`: this build waits until one does "
        f"(start one with `circlet worker --resource-class {resource_class}`).",
    )


class WorkerStore(Protocol):
    """Where the server keeps its workers. Every method is one transaction; thread-safe."""

    def save_heartbeat(self, info: WorkerInfo, now: datetime) -> Worker:
        """Insert or update the worker named `info.name`: its info, last_seen = now, state
        heartbeat_state(info); first_seen is kept from the first heartbeat."""
        ...

    def list_workers(self) -> list[Worker]:
        """Every worker known, by name."""
        ...

    def get_worker(self, name: str) -> Worker | None: ...

    def mark_lost(self, name: str, seen_before: datetime) -> bool:
        """Mark the worker lost if it is alive and its last heartbeat is older than
        `seen_before`; True only for the one caller that changed it (several servers may sweep)."""
        ...

    def forget(self, seen_before: datetime) -> int:
        """Delete lost or stopped workers last seen before this moment; how many went."""
        ...


def worker_json(worker: Worker, now: datetime) -> dict[str, Any]:
    """How `GET /api/v1.1/admin/workers` and `circlet workers` show a worker."""
    info = worker.info
    return {
        "name": info.name,
        "host": info.host,
        "pid": info.pid,
        "resource_classes": list(info.resource_classes),
        "slots": info.slots,
        "busy": info.busy,
        "running": list(info.running),
        "version": info.version,
        "state": worker.state.value,
        "stopping": info.stopping,
        "first_seen": worker.first_seen.isoformat().replace("+00:00", "Z"),
        "last_heartbeat": worker.last_seen.isoformat().replace("+00:00", "Z"),
        "seconds_since_heartbeat": round((now - worker.last_seen).total_seconds(), 1),
    }
