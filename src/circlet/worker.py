"""`circlet worker`: runs builds of the celery executor on this machine.

A Celery worker consumes the queues of the resource classes it serves (`circlet.<class>`), with
concurrency = slots (a thread per slot), prefetch 1 and late acknowledgement (celery_exec.py).
A task is one container of a build (`parallelism: N` makes N tasks, which any workers of the
class take). Each slot thread hands its container to a runner process of its own (executors/remote_child.py),
which runs it with a JobRunner and reports straight to the server's runner interface
(remote/client.py). The worker holds no database credentials: only the server's URL, the worker
token and the broker URL, none of which its runner processes or their steps inherit.

A heartbeat thread tells the server every `interval` seconds which builds run here and stops the
ones the reply names (a user's cancel, or a build that was given up on). A watchdog thread
fences the worker when no heartbeat has been answered for 90% of the server's lost-worker
timeout: its builds are stopped without a report, because the server is about to end them and
run them again elsewhere. The watchdog does not wait for a heartbeat call to fail: on a network
that silently drops packets (a cut cable) a call only times out, and a build must not run on
here while its retry runs elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circlet import __version__
from circlet.core.model import Outcome
from circlet.core.ports import RunRequest
from circlet.core.workers import HeartbeatReply, WorkerInfo
from circlet.executors.celery_app import TASK_NAME, decode_message, make_celery, queue_name
from circlet.executors.protocol import RUNNER_ENV
from circlet.runner.process import kill_recorded_groups, reap_orphans

log = logging.getLogger("circlet.worker")

FENCE_FRACTION = 0.9  # of the server's lost_after: stop our builds before the server retries them
HEARTBEAT_TIMEOUT = 5.0  # seconds a heartbeat waits for its answer (at most lost_after / 3)


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    """What `circlet worker` was started with."""

    server: str  # the server's base URL (its runner interface is under /internal/runner/v1)
    token: str  # CIRCLET_WORKER_TOKEN
    broker_url: str
    resource_classes: tuple[str, ...]
    slots: int
    name: str  # unique per worker process
    host: str
    workspaces: Path
    kill_grace: float = 3.0
    keep_workspaces: bool = False
    sandbox: str = ""  # CIRCLET_SANDBOX: "" or bwrap = steps under bubblewrap; none = not
    hidden: tuple[Path, ...] = ()  # files steps must not see (the credentials file)
    heartbeat: float = 0.5  # seconds, until the server's first reply says otherwise


def groups_dir(workspace_root: Path) -> Path:
    """Where runner processes record the process groups of their builds' steps (process.py)."""
    return workspace_root / ".groups"


def default_name(host: str | None = None) -> str:
    return f"{host or socket.gethostname()}:{os.getpid()}"


class SlotProcess:
    """One slot's runner process (remote_child.py), seen from the worker. Used by one slot
    thread at a time; cancel/fence from the heartbeat thread."""

    def __init__(self, options: WorkerOptions, on_started: Any) -> None:
        self.options = options
        self.on_started = on_started  # callable(build_id, node, SlotProcess) once the server said go
        self._proc: subprocess.Popen[str] | None = None
        self._write = threading.Lock()

    def _start(self) -> subprocess.Popen[str]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        argv = [
            sys.executable,
            "-m",
            "circlet.executors.remote_child",
            "--workspaces",
            str(self.options.workspaces),
            "--kill-grace",
            str(self.options.kill_grace),
            "--sandbox",
            self.options.sandbox,
            *(["--keep-workspaces"] if self.options.keep_workspaces else []),
        ]
        env = {name: os.environ[name] for name in RUNNER_ENV if name in os.environ}
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env,
            bufsize=1,
            start_new_session=True,
        )
        self.send(
            {
                "op": "hello",
                "server": self.options.server,
                "token": self.options.token,
                "worker": self.options.name,
                "hidden": [str(p) for p in self.options.hidden],
            }
        )
        return self._proc

    def send(self, message: dict[str, Any]) -> None:
        with self._write:
            proc = self._proc
            if proc is None or proc.stdin is None:
                return
            try:
                proc.stdin.write(json.dumps(message, separators=(",", ":")) + "\n")
                proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass  # it died; run() notices

    def run(self, request: RunRequest, node: int, message: dict[str, Any]) -> Outcome | None:
        """Run container `node` of the build to its end; None when the runner process died
        under it."""
        proc = self._start()
        assert proc.stdout is not None
        folder = groups_dir(self.options.workspaces)
        folder.mkdir(parents=True, exist_ok=True)
        groups = folder / f"{request.build_id}-{node}"
        self.send({"op": "run", "request": message["request"], "node": node, "groups_file": str(groups)})
        for line in proc.stdout:
            event = json.loads(line)
            if event["op"] == "started" and event["ok"]:
                self.on_started(request.build_id, node, self)
            elif event["op"] == "done":
                groups.unlink(missing_ok=True)
                return Outcome(event["outcome"])
        code = proc.wait()
        self._proc = None
        killed = kill_recorded_groups(groups)
        groups.unlink(missing_ok=True)
        log.error(
            "event=runner_process_died build_id=%s node=%s code=%s groups_killed=%s",
            request.build_id,
            node,
            code,
            killed,
        )
        return None

    def close(self) -> None:
        proc = self._proc
        if proc is None:
            return
        with self._write, contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


class WorkerAgent:
    """The worker's state: its slots' runner processes, the builds they run, the heartbeat."""

    def __init__(self, options: WorkerOptions, client: Any) -> None:
        self.options = options
        self.client = client  # remote.client.RunnerClient (heartbeat)
        self.stopping = False
        self._lock = threading.Lock()
        self._running: dict[tuple[int, int], SlotProcess] = {}  # started (build id, node)
        self._crashed: set[int] = set()  # builds whose runner process died, until the server heard
        self._busy = 0
        self._slots = threading.local()
        self._all: list[SlotProcess] = []
        self._stop = threading.Event()
        self._interval = options.heartbeat
        self._lost_after: float | None = None
        self._last_ok = time.monotonic()
        self._fenced: set[tuple[int, int]] = set()  # containers fenced since the last answered heartbeat
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None

    # ------------------------------------------------------------ builds (slot threads)

    def _started(self, build_id: int, node: int, slot: SlotProcess) -> None:
        with self._lock:
            self._running[(build_id, node)] = slot

    def _runner_died(self, build_id: int, node: int, slot: SlotProcess) -> None:
        """The slot's runner process died under a task: if the container had started there (not
        a duplicate the server refused), the next heartbeats say so and the server ends the
        build at once rather than after lost_after."""
        with self._lock:
            if self._running.get((build_id, node)) is slot:
                self._crashed.add(build_id)

    def _finished(self, build_id: int, node: int, slot: SlotProcess) -> None:
        """A slot is done with a task. Only its own record goes: the same container delivered
        twice (a redelivered or republished message) is refused by the server on the second
        slot, and that slot ending must not make the first one's container unlisted, which
        would leave it deaf to a cancel and, unlisted for lost_after, ended as lost."""
        with self._lock:
            self._busy -= 1
            if self._running.get((build_id, node)) is slot:
                del self._running[(build_id, node)]

    def _slots_of(self, build_id: int) -> list[SlotProcess]:
        """The slots running containers of the build (two of its containers may run here)."""
        with self._lock:
            return [slot for (build, _), slot in self._running.items() if build == build_id]

    def run(self, message: dict[str, Any]) -> None:
        """The celery task: run one container of a build here, blocking the slot until it is over."""
        try:
            request, node = decode_message(message)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("event=bad_task_message error=%r", exc)
            return  # acknowledged and dropped: it can never run
        slot: SlotProcess | None = getattr(self._slots, "slot", None)
        if slot is None:
            slot = SlotProcess(self.options, self._started)
            self._slots.slot = slot
            with self._lock:
                self._all.append(slot)
        with self._lock:
            self._busy += 1
        log.info("event=build_received build_id=%s node=%s", request.build_id, node)
        try:
            outcome = slot.run(request, node, message)
            log.info("event=build_done build_id=%s node=%s outcome=%s", request.build_id, node, outcome)
            if outcome is None:
                self._runner_died(request.build_id, node, slot)
        finally:
            self._finished(request.build_id, node, slot)

    # ------------------------------------------------------------ heartbeat

    def info(self) -> WorkerInfo:
        with self._lock:
            running = tuple(sorted({build_id for build_id, _ in self._running}))
            busy = self._busy
            crashed = tuple(sorted(self._crashed))
        return WorkerInfo(
            name=self.options.name,
            host=self.options.host,
            pid=os.getpid(),
            resource_classes=self.options.resource_classes,
            slots=self.options.slots,
            busy=busy,
            running=running,
            version=__version__,
            stopping=self.stopping,
            crashed=crashed,
        )

    def beat(self) -> HeartbeatReply | None:
        """One heartbeat: report, obey the reply; fence when the server has been out of reach."""
        info = self.info()
        lost_after = self._lost_after
        timeout = (
            HEARTBEAT_TIMEOUT if lost_after is None else min(HEARTBEAT_TIMEOUT, max(0.5, lost_after / 3))
        )
        sent = time.monotonic()  # (the server heard us after this, not after its answer came)
        try:
            reply: HeartbeatReply = self.client.heartbeat(info, timeout=timeout)
        except Exception as exc:
            silent = time.monotonic() - self._last_ok
            log.warning("event=heartbeat_failed silent_s=%.1f error=%r", silent, exc)
            self.check_fence()  # (the watchdog does it too, without waiting for a call to fail)
            return None
        with self._lock:
            self._last_ok = max(self._last_ok, sent)
            self._fenced.clear()
            self._crashed.difference_update(info.crashed)
        self._interval = reply.interval
        self._lost_after = reply.lost_after
        for build_id in reply.cancel:
            for slot in self._slots_of(build_id):
                log.info("event=build_cancel build_id=%s", build_id)
                slot.send({"op": "cancel", "build_id": build_id})
        return reply

    def check_fence(self) -> bool:
        """Fence the containers running here (each once per silence, also one that started
        during it) when no heartbeat sent in the last FENCE_FRACTION of the server's lost_after
        was answered; True when it fenced any now."""
        with self._lock:  # (checked and marked together: an answer cannot slip in between)
            lost_after = self._lost_after
            silent = time.monotonic() - self._last_ok
            if lost_after is None or silent <= FENCE_FRACTION * lost_after:
                return False
            fence = {key: slot for key, slot in self._running.items() if key not in self._fenced}
            self._fenced.update(fence)
        if fence:
            log.warning("event=server_unreachable silent_s=%.1f lost_after=%s", silent, lost_after)
        for (build_id, _), slot in fence.items():
            log.warning("event=build_fenced build_id=%s reason=server_unreachable", build_id)
            slot.send({"op": "fence", "build_id": build_id})
        return bool(fence)

    def start_heartbeat(self) -> None:
        """Start the heartbeat thread (once)."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.is_set():
                self.beat()
                self._stop.wait(self._interval)

        def watch() -> None:
            while not self._stop.is_set():
                lost_after = self._lost_after
                if lost_after is None:  # (until the server's first answer says it)
                    self._stop.wait(0.5)
                    continue
                due = self._last_ok + FENCE_FRACTION * lost_after - time.monotonic()
                if due > 0:
                    self._stop.wait(min(due, 1.0) + 0.01)
                    continue
                self.check_fence()
                self._stop.wait(0.1)

        self._thread = threading.Thread(target=loop, name="circlet-heartbeat", daemon=True)
        self._thread.start()
        self._watchdog = threading.Thread(target=watch, name="circlet-fence-watchdog", daemon=True)
        self._watchdog.start()

    def stop(self) -> None:
        """After the celery worker returned: close runner processes, say goodbye."""
        self._stop.set()
        for thread in (self._thread, self._watchdog):
            if thread is not None:
                thread.join(5)
        with self._lock:
            slots = list(self._all)
        for slot in slots:
            slot.close()
        self.stopping = True
        with contextlib.suppress(Exception):
            self.client.heartbeat(self.info())


def run_worker(options: WorkerOptions, *, loglevel: str = "INFO") -> None:
    """Run the worker until it is told to stop (SIGTERM/SIGINT: warm shutdown, running builds
    finish first; twice: cold). Blocking."""
    from celery import signals  # type: ignore[import-untyped]

    from circlet.remote.client import RunnerClient

    killed = reap_orphans(groups_dir(options.workspaces))  # steps a previous worker here left
    if killed:
        log.warning("event=orphan_steps_killed count=%s", killed)
    options.workspaces.mkdir(parents=True, exist_ok=True)
    agent = WorkerAgent(options, RunnerClient(options.server, options.token))
    app = make_celery(options.broker_url, name="circlet-worker")

    @app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def run_build(message: dict[str, Any]) -> None:
        agent.run(message)

    def shutting_down(**_: Any) -> None:
        agent.stopping = True  # serves() no longer counts us; builds running finish

    def ready(**_: Any) -> None:
        agent.start_heartbeat()  # only now: the server counts our slots as free once we speak

    signals.worker_shutting_down.connect(shutting_down, weak=False)
    signals.worker_ready.connect(ready, weak=False)
    queues = ",".join(queue_name(c) for c in options.resource_classes)
    log.info(
        "event=worker_starting name=%s classes=%s slots=%s server=%s",
        options.name,
        ",".join(options.resource_classes),
        options.slots,
        options.server,
    )
    try:
        app.worker_main(
            [
                "worker",
                "--queues",
                queues,
                "--concurrency",
                str(options.slots),
                "--pool",
                "threads",
                "--prefetch-multiplier",
                "1",
                "--hostname",
                f"circlet-{options.name.replace(':', '-')}@{options.host}",
                "--without-mingle",
                "--without-gossip",
                "--loglevel",
                loglevel.upper(),
            ]
        )
    finally:
        agent.stop()
