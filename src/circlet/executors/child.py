"""Runner processes: the local executor's slots run builds in long-lived child processes.

Why not threads of the server: a runner thread shares the server's GIL with the API. Each step
needs the GIL a few times (spawn, wake-up, report), and a request being served holds it for up
to the switch interval: with one busy thread a spawn goes from 0.7 ms to 1.6 ms. A child
process has a GIL of its own, and a runner that crashes (a bug, the OOM killer) fails only its
build. The child writes step output straight to the log store (same machine, same files) and
reports everything else as JSON lines:

    server -> child (stdin):   {"op": "run", "request": {...}}  {"op": "cancel"}
                               {"op": "started", "ok": bool}     (the answer to build_started)
    child -> server (fd 1):    {"op": "build_started" | "action_started" | "action_finished" |
                                "build_finished" | "done", ...}

When its stdin closes (the server stopped or died) the child cancels what it runs and exits,
so no build outlives its server. The child's environment is reduced to what a runner needs:
nothing of the server's (database URL, broker URL) is there for a step to find.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from circlet.core.model import Action, Message, Outcome
from circlet.core.ports import LogWriter, RunReporter, RunRequest
from circlet.executors import protocol
from circlet.executors.protocol import RUNNER_ENV
from circlet.runner.process import kill_recorded_groups

log = logging.getLogger("circlet.executors.child")

START_DELAY = 0.02  # seconds a step's "started" is held back (PipeReporter)


# ---------------------------------------------------------------- in the child


class PipeReporter:
    """The RunReporter of a runner process: events go to the server, logs to the log store.

    A step's "started" is held back START_DELAY seconds: a step that ends sooner is reported
    once, finished, instead of twice (most `run: true`-like steps take a millisecond or two,
    and the server's journal would only throw the first record away). A step still running
    then is reported started, so a watcher sees it at most about START_DELAY late.
    """

    def __init__(self, out: IO[str], logs: Any) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._logs = logs
        self.replies: queue.Queue[bool] = queue.Queue()
        self._held: dict[tuple[int, int, int], tuple[float, dict[str, Any]]] = {}
        self._held_lock = threading.Condition()
        self._releaser = threading.Thread(target=self._release_loop, name="circlet-starts", daemon=True)
        self._releaser.start()

    def _release_loop(self) -> None:
        while True:
            with self._held_lock:
                while not self._held:
                    self._held_lock.wait()
                due_at = min(at for at, _ in self._held.values()) + START_DELAY
                wait = due_at - time.monotonic()
                if wait > 0:
                    self._held_lock.wait(wait)
                    continue
                now = time.monotonic()
                due = [k for k, (at, _) in self._held.items() if at + START_DELAY <= now]
                messages = [self._held.pop(k)[1] for k in due]
            for message in messages:
                self.send(message)

    def _release_all(self) -> None:
        with self._held_lock:
            messages = [message for _, message in self._held.values()]
            self._held.clear()
        for message in messages:
            self.send(message)

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":")) + "\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()

    def build_queued(self, build_id: int, at: datetime) -> None:
        return None  # the server's executor reports it

    def build_started(self, build_id: int, at: datetime, worker: str, node: int | None = None) -> bool:
        self.send(
            {"op": "build_started", "build_id": build_id, "at": protocol.encode_time(at), "worker": worker}
        )
        return self.replies.get()

    def action_started(self, build_id: int, action: Action) -> None:
        message = {"op": "action_started", "build_id": build_id, "action": protocol.encode_action(action)}
        with self._held_lock:
            self._held[(build_id, action.step, action.index)] = (time.monotonic(), message)
            self._held_lock.notify()

    def log_writer(self, build_id: int, step: int, index: int) -> LogWriter:
        writer: LogWriter = self._logs.writer(build_id, step, index)
        return writer

    def action_finished(self, build_id: int, action: Action) -> None:
        with self._held_lock:
            self._held.pop((build_id, action.step, action.index), None)  # ended before it was told
        self.send({"op": "action_finished", "build_id": build_id, "action": protocol.encode_action(action)})

    def test_results(
        self, build_id: int, index: int, tests: list[dict[str, Any]], exceptions: list[dict[str, Any]]
    ) -> None:
        self.send(
            {
                "op": "test_results",
                "build_id": build_id,
                "index": index,
                "tests": tests,
                "exceptions": exceptions,
            }
        )

    def build_finished(
        self,
        build_id: int,
        outcome: Outcome,
        at: datetime,
        messages: tuple[Message, ...] = (),
        node: int | None = None,  # (a whole build here: JobRunner's node is None)
    ) -> None:
        self._release_all()  # (none should be left: every started action has finished)
        self.send(
            {
                "op": "build_finished",
                "build_id": build_id,
                "outcome": outcome.value,
                "at": protocol.encode_time(at),
                "messages": protocol.encode_messages(messages),
            }
        )


def child_main(argv: list[str] | None = None) -> None:
    # `python -m` put the current directory first on sys.path: a later import must never pick
    # up a module from there (the server's directory, or anything a build could write to).
    sys.path[:] = [entry for entry in sys.path if entry not in ("", ".", os.getcwd())]
    from circlet.runner.run import JobRunner
    from circlet.store.blobs_fs import FileBlobStore
    from circlet.store.logs import FileLogStore
    from circlet.vcs.git import GitSourceHost

    parser = argparse.ArgumentParser(prog="circlet-runner")
    parser.add_argument("--workspaces", type=Path, required=True)
    parser.add_argument("--mirrors", type=Path, required=True)
    parser.add_argument("--logs", type=Path, required=True)
    parser.add_argument("--worker", default="local")
    parser.add_argument("--kill-grace", type=float, default=3.0)
    parser.add_argument("--keep-workspaces", action="store_true")
    parser.add_argument("--blobs", type=Path, default=None)  # the FileBlobStore's root
    parser.add_argument("--sandbox", default="")  # CIRCLET_SANDBOX: bwrap, none, or "" (none here)
    args = parser.parse_args(argv)
    from circlet.runner import sandbox

    try:  # steps under bubblewrap when the operator asked for it (runner/sandbox.py)
        sandbox.enable(args.sandbox, worker=False, workspace_root=args.workspaces)
    except sandbox.SandboxError as exc:
        raise SystemExit(f"circlet-runner: {exc}") from exc
    # The server stops its runners by closing their stdin, never by a terminal's Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # fd 1 is the protocol; anything else that prints (a library, a warning) goes to stderr.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    reporter = PipeReporter(out, FileLogStore(args.logs))
    source = GitSourceHost(args.mirrors)
    blobs = FileBlobStore(args.blobs) if args.blobs is not None else None
    current: list[JobRunner] = []
    worker: threading.Thread | None = None

    def run(request: RunRequest, runner: JobRunner) -> None:
        try:
            outcome = runner.run(request)
        except BaseException as exc:  # the runner reports its own failures; this is a last guard
            log.exception("event=runner_crashed build_id=%s", request.build_id)
            outcome = Outcome.INFRASTRUCTURE_FAIL
            reporter.build_finished(
                request.build_id,
                outcome,
                datetime.now(UTC),
                (Message(type="error", message=f"circlet's runner failed: {type(exc).__name__}: {exc}"),),
            )
        reporter.send({"op": "done", "build_id": request.build_id, "outcome": outcome.value})

    for line in sys.stdin:
        message = json.loads(line)
        op = message["op"]
        if op == "run":
            groups = message.get("groups_file")
            runner = JobRunner(
                workspace_root=args.workspaces,
                source=source,
                reporter=reporter,
                worker=args.worker,
                keep_workspace=args.keep_workspaces,
                kill_grace=args.kill_grace,
                groups_file=Path(groups) if groups else None,
                blobs=blobs,
            )
            current[:] = [runner]
            worker = threading.Thread(target=run, args=(protocol.decode_request(message["request"]), runner))
            worker.start()
        elif op == "cancel":
            for runner in current:
                runner.cancel()
        elif op == "started":
            reporter.replies.put(bool(message["ok"]))
    # stdin closed: the server is gone or stopping. Nothing may outlive it.
    for runner in current:
        runner.cancel()
    reporter.replies.put(False)
    if worker is not None:
        worker.join(10)


# ---------------------------------------------------------------- in the server


class ProcessRunner:
    """A slot's runner process, seen from the server: run() relays its events to the reporter.

    Used by one slot thread at a time; cancel() may come from any thread. The child is started
    on first use and kept for the next builds; if it dies, the build it ran ends
    infrastructure_fail and the next run starts a new one.
    """

    def __init__(
        self,
        *,
        workspace_root: Path,
        mirrors: Path,
        logs: Path,
        worker: str = "local",
        kill_grace: float = 3.0,
        keep_workspaces: bool = False,
        blobs: Path | None = None,
        sandbox: str = "",
    ) -> None:
        """`blobs`: the root of the FileBlobStore the runner keeps artifacts, caches and
        workspaces in (none: those steps fail). `sandbox`: CIRCLET_SANDBOX (runner/sandbox.py)."""
        self.argv = [
            sys.executable,
            "-m",
            "circlet.executors.child",
            "--workspaces",
            str(workspace_root),
            "--mirrors",
            str(mirrors),
            "--logs",
            str(logs),
            "--worker",
            worker,
            "--kill-grace",
            str(kill_grace),
            *(["--keep-workspaces"] if keep_workspaces else []),
            *(["--blobs", str(blobs)] if blobs is not None else []),
            *(["--sandbox", sandbox] if sandbox else []),
        ]
        self.groups_dir = groups_dir(workspace_root)
        self._proc: subprocess.Popen[str] | None = None
        self._write_lock = threading.Lock()
        self._running = False

    def start(self) -> None:
        """Start the child now if it is not running (to have it warm before the first build)."""
        if self._proc is None or self._proc.poll() is not None:
            env = {name: os.environ[name] for name in RUNNER_ENV if name in os.environ}
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                env=env,
                bufsize=1,
                start_new_session=True,  # a Ctrl-C on the server is not the runner's to act on
            )

    def _send(self, message: dict[str, Any]) -> None:
        with self._write_lock:
            proc = self._proc
            if proc is None or proc.stdin is None:
                return
            try:
                proc.stdin.write(json.dumps(message, separators=(",", ":")) + "\n")
                proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass  # it died; run() notices through its stdout

    def run(self, request: RunRequest, reporter: RunReporter) -> Outcome:
        self.start()
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        build_id = request.build_id
        self.groups_dir.mkdir(parents=True, exist_ok=True)
        groups = self.groups_dir / str(build_id)
        self._running = True
        try:
            return self._relay(proc, request, reporter, groups)
        finally:
            self._running = False

    def _relay(
        self, proc: subprocess.Popen[str], request: RunRequest, reporter: RunReporter, groups: Path
    ) -> Outcome:
        assert proc.stdout is not None
        build_id = request.build_id
        self._send({"op": "run", "request": protocol.encode_request(request), "groups_file": str(groups)})
        finished = False
        for line in proc.stdout:
            message = json.loads(line)
            op = message["op"]
            if op == "action_started":
                reporter.action_started(build_id, protocol.decode_action(message["action"]))
            elif op == "action_finished":
                reporter.action_finished(build_id, protocol.decode_action(message["action"]))
            elif op == "test_results":
                reporter.test_results(build_id, message["index"], message["tests"], message["exceptions"])
            elif op == "build_started":
                ok = reporter.build_started(build_id, protocol.decode_time(message["at"]), message["worker"])
                self._send({"op": "started", "ok": ok})
            elif op == "build_finished":
                finished = True
                reporter.build_finished(
                    build_id,
                    Outcome(message["outcome"]),
                    protocol.decode_time(message["at"]),
                    protocol.decode_messages(message["messages"]),
                )
            elif op == "done":
                groups.unlink(missing_ok=True)
                return Outcome(message["outcome"])
        code = proc.wait()
        self._proc = None
        _close_pipes(proc)
        # Its steps run in sessions of their own: they outlive it unless killed here.
        killed = kill_recorded_groups(groups)
        groups.unlink(missing_ok=True)
        log.error("event=runner_process_died build_id=%s code=%s groups_killed=%s", build_id, code, killed)
        if not finished:
            reporter.build_finished(
                build_id,
                Outcome.INFRASTRUCTURE_FAIL,
                datetime.now(UTC),
                (
                    Message(
                        type="error",
                        reason="infrastructure",
                        message=f"circlet's runner process for this build died (exit code {code}); "
                        "retry the build to run it again.",
                    ),
                ),
            )
        return Outcome.INFRASTRUCTURE_FAIL

    def cancel(self) -> None:
        self._send({"op": "cancel"})

    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def close(self, timeout: float = 10.0) -> None:
        """Close the child's stdin (it cancels what it runs and exits); kill it if it lingers."""
        proc = self._proc
        if proc is None:
            return
        with self._write_lock:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if not self._running:  # else run() sees the end of its output and closes it
            _close_pipes(proc)
        self._proc = None


def groups_dir(workspace_root: Path) -> Path:
    """Where runners record the process groups of running builds (runner/process.py)."""
    return workspace_root / ".groups"


def _close_pipes(proc: subprocess.Popen[str]) -> None:
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError, ValueError):
                pipe.close()


if __name__ == "__main__":
    child_main()
