"""The server's bookkeeping of its worker fleet (celery executor): heartbeats, lost workers,
waiting builds.

- `heartbeat` records what a worker says (WorkerInfo) and answers which of its builds it must
  stop: canceled, finished, or started by other workers only (core/workers.py to_cancel; a build
  of several containers runs on every worker that started one).
- A sweeper thread, every `sweep_every` seconds:
  1. marks workers silent for more than `lost_after` seconds lost (atomically: with several
     servers only one handles a worker), ends each running build of theirs (a build any of whose
     unfinished containers ran there, core/workers.py running_workers) `infrastructure_fail`
     with a message naming the worker, and retries it once as a new build (`why: auto-retry`,
     `retry_of` set; the lost build's status becomes `retried`, api-v1.1.md 6.3);
  2. ends the same way running builds whose worker is unknown (it died while no server ran);
  3. gives each waiting build a message while no worker serves its resource class (removed when
     one comes), and publishes again a build whose message may have been lost (the broker
     restarted empty, or was down when it was submitted): never published, or published more
     than `resubmit_after` seconds ago while a worker of its class had a free slot. A running
     build of several containers some of which have not started is watched the same way (only
     their messages are sent again). A duplicate message is harmless: the service refuses to
     start a build or container twice (build_started), and the worker keeps listing the one it
     runs (worker.py).

Thread-safety: every method may be called from any thread; build rows are changed under the
service's lock, through its own verbs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from circlet.core.model import ActionStatus, Build, Lifecycle, Message, Outcome, Why
from circlet.core.workers import (
    LOST_AFTER,
    HeartbeatReply,
    Worker,
    WorkerInfo,
    WorkerState,
    WorkerStore,
    all_started,
    crash_message,
    is_lost,
    lost_message,
    orphan_message,
    retry_message,
    running_workers,
    serves,
    should_retry,
    to_cancel,
    unstarted_containers,
    waiting_message,
)

if TYPE_CHECKING:
    from circlet.service import Circlet

log = logging.getLogger("circlet.fleet")

# Publishes a build's task messages again: those of the given containers (None: every one).
Publish = Callable[[frozenset[int] | None], bool]

WAITING = (Lifecycle.NOT_RUNNING, Lifecycle.QUEUED)
FORGET_AFTER = timedelta(days=1)  # a lost or stopped worker stays listed this long
FORGET_EVERY = 600  # sweeps
ENDED_KEPT = 10_000  # lost builds remembered, so that none is ended (and retried) twice


@dataclass
class _Pending:
    """A submitted build not yet started, as the executor published it."""

    resource_class: str
    publish: Publish  # sends the messages of the given containers (None: all); True when the broker took them
    published_at: float | None  # monotonic time of the last publish that worked
    noted: bool = False  # it carries the "no worker serves its class" message


class Fleet:
    """Workers and their builds, on the server. `bind` it to the service before use."""

    def __init__(
        self,
        workers: WorkerStore,
        *,
        lost_after: float = LOST_AFTER,
        heartbeat_interval: float = 0.5,
        sweep_every: float = 1.0,
        resubmit_after: float = 30.0,
        sweeping: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`sweeping`: run the sweeper thread (the celery executor); without it heartbeats are
        still recorded and listed, but no build is ever ended for a lost worker."""
        self.workers = workers
        self.lost_after = lost_after
        self.heartbeat_interval = heartbeat_interval
        self.sweep_every = sweep_every
        self.resubmit_after = resubmit_after
        self.sweeping = sweeping
        self.clock = clock
        self._circlet: Circlet | None = None
        self._pending: dict[int, _Pending] = {}
        self._ended: dict[int, None] = {}  # builds ended as lost here, oldest first
        self._crashed: set[tuple[int, str]] = set()  # (build, worker) whose runner died there
        self._listed: dict[int, datetime] = {}  # running build -> when a heartbeat last listed it
        self._alive: set[str] = set()  # workers whose last heartbeat here found them alive
        self._sweeps = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at = clock()

    # ------------------------------------------------------------ wiring

    def bind(self, circlet: Circlet) -> None:
        """Called by the service's constructor."""
        self._circlet = circlet

    @property
    def circlet(self) -> Circlet:
        if self._circlet is None:
            raise RuntimeError("Fleet.bind(circlet) was not called")
        return self._circlet

    def start(self) -> None:
        """Start the sweeper (when sweeping). A worker that last spoke before now gets a full
        `lost_after` from now: it could not reach a server that was not running."""
        self._started_at = self.clock()
        if not self.sweeping or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="circlet-fleet", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def adopts(self, build: Build) -> bool:
        """True for a running build the fleet answers for on restart (recover() must leave it
        alone: it runs on a worker that may well be alive)."""
        return self.sweeping and build.lifecycle is Lifecycle.RUNNING and build.worker is not None

    # ------------------------------------------------------------ workers

    def heartbeat(self, info: WorkerInfo) -> HeartbeatReply:
        """Record the heartbeat; reply with the builds the worker must stop."""
        now = self.clock()
        with self._lock:
            known = info.name in self._alive  # (spares a query per heartbeat: only the log needs it)
        previous = None if known else self.workers.get_worker(info.name)
        self.workers.save_heartbeat(info, now)
        with self._lock:
            self._alive.add(info.name)
        if not known and (previous is None or previous.state is not WorkerState.ALIVE):
            log.info(
                "event=worker_up name=%s host=%s classes=%s slots=%s",
                info.name,
                info.host,
                ",".join(info.resource_classes),
                info.slots,
            )
        with self._lock:
            for build_id in info.running:
                self._listed[build_id] = now
        store = self.circlet.store
        if info.crashed:  # its runner died there: the sweeper ends it next pass, not after lost_after
            with self._lock:  # (not here: a retry's trigger must not hold up the heartbeat's answer)
                self._crashed.update((build_id, info.name) for build_id in info.crashed)
        cancel = to_cancel(info.name, {b: store.get_build_by_id(b) for b in info.running})
        if cancel:
            log.info("event=worker_told_to_cancel name=%s builds=%s", info.name, list(cancel))
        return HeartbeatReply(cancel=cancel, interval=self.heartbeat_interval, lost_after=self.lost_after)

    def list_workers(self) -> list[Worker]:
        return self.workers.list_workers()

    # ------------------------------------------------------------ waiting builds

    def submitted(self, build_id: int, resource_class: str, publish: Publish) -> None:
        """The executor hands over a build: publish it now, and again if its message seems lost.

        The sweeper sees the build only once this first publish is over: seen while it was in
        flight, it looked never published and was published a second time (two tasks for one
        container: the service refuses the second start, but it is work for nothing)."""
        published_at = time.monotonic() if publish(None) else None
        pending = _Pending(resource_class=resource_class, publish=publish, published_at=published_at)
        with self._lock:
            self._pending[build_id] = pending

    def forget(self, build_id: int) -> None:
        with self._lock:
            self._pending.pop(build_id, None)

    # ------------------------------------------------------------ the sweeper

    def _loop(self) -> None:
        while not self._stop.wait(self.sweep_every):
            try:
                self.sweep()
            except Exception:  # a database hiccup must not end the sweeper
                log.exception("event=fleet_sweep_failed")

    def sweep(self) -> list[str]:
        """One pass of the sweeper (see the module docstring); the names of workers found lost."""
        now = self.clock()
        self._sweeps += 1
        if self._sweeps % FORGET_EVERY == 0:
            self.workers.forget(now - FORGET_AFTER)  # lost and stopped workers, listed for a day
        workers = {w.name: w for w in self.workers.list_workers()}
        self._end_crashed(workers, now)
        lost: list[str] = []
        if now - self._started_at <= timedelta(seconds=self.lost_after):
            # Just started: workers could not reach a server that was not running; give them
            # a full lost_after to speak before judging them or their builds.
            self._watch_waiting(list(workers.values()), self.circlet.store.builds_in((Lifecycle.RUNNING,)))
            return lost
        cutoff = now - timedelta(seconds=self.lost_after)
        with self._lock:
            self._alive &= {w.name for w in workers.values() if w.state is WorkerState.ALIVE}
        for worker in list(workers.values()):
            if is_lost(worker, now, self.lost_after):
                with self._lock:
                    self._alive.discard(worker.name)
                if self.workers.mark_lost(worker.name, cutoff):
                    lost.append(worker.name)
                    log.warning("event=worker_lost name=%s host=%s", worker.name, worker.info.host)
                workers[worker.name] = replace(worker, state=WorkerState.LOST)
        grace = timedelta(seconds=self.lost_after)
        running = self.circlet.store.builds_in((Lifecycle.RUNNING,))
        with self._lock:
            listed = {b.id or 0: self._listed.setdefault(b.id or 0, now) for b in running}
            self._listed = listed  # (forget builds no longer running)
        for build in running:
            owner = workers.get(build.worker or "")
            # A build of several containers (one task each) is lost with any worker that still
            # runs one of them: ended once, retried once; the other workers are told to stop
            # their containers by the reply to their next heartbeat (to_cancel).
            gone = [workers[n] for n in sorted(running_workers(build)) if n in workers]
            lost_owner = next((w for w in gone if w.state is WorkerState.LOST), None)
            if lost_owner is not None:
                self._end_lost(build, lost_owner, now)
            elif all_started(build) and listed[build.id or 0] + grace < now:
                # Its worker is unknown (it died while no server ran), or alive but has not
                # listed the build in its heartbeats for lost_after: its runner is gone.
                self._end_lost(build, owner, now, orphaned=owner is not None)
        self._watch_waiting(list(workers.values()), running)
        return lost

    def _end_crashed(self, workers: dict[str, Worker], now: datetime) -> None:
        """End the builds whose runner process died on a worker that said so (a heartbeat's
        `crashed`), if that worker still runs a container of theirs."""
        with self._lock:
            crashed, self._crashed = sorted(self._crashed), set()
        for at, (build_id, name) in enumerate(crashed):
            try:
                build = self.circlet.store.get_build_by_id(build_id)
                worker = workers.get(name)
                if build is None or worker is None or build.lifecycle is not Lifecycle.RUNNING:
                    continue
                if name in running_workers(build):
                    self._end_lost(build, worker, now, why=crash_message(worker))
            except BaseException:
                with self._lock:  # (a database hiccup: the next pass tries again)
                    self._crashed.update(crashed[at:])
                raise

    def _end_lost(
        self,
        build: Build,
        owner: Worker | None,
        now: datetime,
        *,
        orphaned: bool = False,
        why: Message | None = None,
    ) -> None:
        build_id = build.id or 0
        with self._lock:  # two paths may find it lost at once: end and retry it once
            if build_id in self._ended:
                return
            self._ended[build_id] = None
            while len(self._ended) > ENDED_KEPT:
                self._ended.pop(next(iter(self._ended)))
        try:
            self._end_and_retry(build, owner, now, orphaned=orphaned, why=why)
        except BaseException:
            with self._lock:  # (a database hiccup: the next sweep tries again)
                self._ended.pop(build_id, None)
            raise

    def _end_and_retry(
        self, build: Build, owner: Worker | None, now: datetime, *, orphaned: bool, why: Message | None
    ) -> None:
        circlet = self.circlet
        build_id = build.id or 0
        if owner is None:
            owner = Worker(
                info=WorkerInfo(
                    name=build.worker or "?", host="unknown", pid=0, resource_classes=("?",), slots=0, busy=0
                ),
                first_seen=now,
                last_seen=build.start_time or now,
                state=WorkerState.LOST,
            )
        retry = should_retry(build)
        circlet.journal.flush(build_id)
        for action in circlet.store.list_actions(build_id):
            if action.status is ActionStatus.RUNNING:
                circlet.store.save_action(
                    build_id, replace(action, status=ActionStatus.INFRASTRUCTURE_FAIL, end_time=now)
                )
        why = why or (orphan_message(owner) if orphaned else lost_message(owner, now))
        circlet.build_finished(build_id, Outcome.INFRASTRUCTURE_FAIL, now, (why,))
        ended = circlet.store.get_build_by_id(build_id)
        if ended is None or why not in ended.messages:
            return  # its runner's own end came first (or it is gone): nothing was lost
        log.warning("event=build_lost build_id=%s worker=%s retry=%s", build_id, owner.name, retry)
        if ended.outcome is Outcome.CANCELED:
            return  # a user's cancel (before, or while it was being ended): not retried
        project = circlet.store.get_project_by_id(build.project_id)
        retry_num: int | None = None
        problem: str | None = None if project is not None else "its project is gone"
        if retry and project is not None:
            try:
                new = circlet.trigger(
                    project,
                    branch=build.branch,
                    tag=build.vcs_tag,
                    pin=build.vcs_revision,
                    build_parameters=build.build_parameters,
                    parallel=build.parallel,
                    job=build.extra.get("requested_job"),
                    why=Why.AUTO_RETRY,
                    retry_of=build.build_num,
                )
                retry_num = new.build_num
                log.info("event=build_auto_retried build_id=%s retry_num=%s", build_id, retry_num)
            except Exception as exc:  # the repository cannot be fetched, the database hiccups...
                log.exception("event=auto_retry_failed build_id=%s", build_id)
                problem = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        circlet.add_build_message(build_id, retry_message(retry_num, problem if retry else None))

    def _watch_waiting(self, workers: list[Worker], running: list[Build]) -> None:
        """Waiting builds, and running ones some of whose containers have not started (their
        messages can be lost the same way): the no-worker note, and publishing again."""
        circlet = self.circlet
        waiting = {b.id or 0: b for b in circlet.store.builds_in(WAITING) if b.outcome is None}
        waiting.update({b.id or 0: b for b in running if b.outcome is None and not all_started(b)})
        with self._lock:
            gone = {b: self._pending.pop(b) for b in list(self._pending) if b not in waiting}
            pending = dict(self._pending)
        for build_id, entry in gone.items():
            if entry.noted:  # it started (or ended) since: the note no longer holds
                circlet.remove_build_message(build_id, waiting_message(entry.resource_class))
        now = time.monotonic()
        for build_id, entry in pending.items():
            build = waiting[build_id]
            note = waiting_message(entry.resource_class)
            served = serves(workers, entry.resource_class)
            has_note = note in build.messages
            entry.noted = not served
            if not served and not has_note:
                circlet.add_build_message(build_id, note)
                log.info("event=build_waits_for_worker build_id=%s class=%s", build_id, entry.resource_class)
            elif served and has_note:
                circlet.remove_build_message(build_id, note)
            free = any(
                w.state is WorkerState.ALIVE
                and entry.resource_class in w.info.resource_classes
                and w.info.busy < w.info.slots
                and not w.info.stopping
                for w in workers
            )
            stale = entry.published_at is None or (now - entry.published_at > self.resubmit_after and free)
            nodes = unstarted_containers(build) if build.lifecycle is Lifecycle.RUNNING else None
            if stale and entry.publish(nodes):
                if entry.published_at is not None:
                    log.warning("event=build_republished build_id=%s containers=%s", build_id, nodes or "all")
                entry.published_at = now
