"""The runner process of a worker slot (`circlet worker`, worker.py): runs builds with a
JobRunner and reports them straight to the server's runner interface (remote/client.py).

Like the local executor's runner processes (child.py) it is long-lived, one per slot, with an
environment reduced to what a runner needs; unlike them it reports over HTTP itself, so the
worker process only relays control:

    worker -> child (stdin):  {"op": "hello", "server": URL, "token": T, "worker": NAME,
                               "hidden": [paths steps must not see]}                 (first)
                              {"op": "run", "request": {...}, "node": I, "groups_file": PATH}
                                  (container I of the build; null: all its containers)
                              {"op": "cancel", "build_id": N}   a user's cancel, from a heartbeat
                              {"op": "fence", "build_id": N}    the worker lost the server: stop
                                                                 the build and report nothing
    child -> worker (fd 1):   {"op": "started", "build_id": N, "ok": bool}
                              {"op": "done", "build_id": N, "outcome": "..."}

The worker token reaches the child on its stdin, never in its environment or command line,
where a step could read it from /proc. When stdin closes (the worker died or stops) the child
fences what it runs and exits: the server will find the worker lost and retry the build.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from circlet.core.model import Action, Message, Outcome
from circlet.core.ports import LogWriter, RunReporter
from circlet.executors import protocol
from circlet.executors.report_batch import ReportBatcher

log = logging.getLogger("circlet.executors.remote_child")


class _Mutable:
    """A LogWriter that stops writing once its reporter is muted."""

    def __init__(self, writer: LogWriter, muted: threading.Event) -> None:
        self._writer = writer
        self._muted = muted

    def write(self, data: bytes, at: datetime, stream: str = "out") -> None:
        if not self._muted.is_set():
            self._writer.write(data, at, stream)

    def close(self) -> None:
        self._writer.close()


class FencedReporter:
    """Relays to the server's reporter until muted; tells the worker when a build starts.

    Once muted (the worker lost the server, or died) nothing more is reported: the server
    ends the build itself, naming the lost worker, and a report from here would race it.
    """

    def __init__(
        self,
        inner: RunReporter,
        out: IO[str],
        lock: threading.Lock,
        batch: ReportBatcher | None = None,
        client: Any = None,
    ) -> None:
        """`batch` (with the RunnerClient `client`): action reports and the build's end go in
        batches (report_batch.py) instead of one call each through `inner`."""
        self.inner = inner
        self.batch = batch
        self.client = client
        self.muted = threading.Event()
        self._out = out
        self._lock = lock

    def send(self, message: dict[str, Any]) -> None:
        with self._lock:
            self._out.write(json.dumps(message, separators=(",", ":")) + "\n")
            self._out.flush()

    def build_queued(self, build_id: int, at: datetime) -> None:
        if not self.muted.is_set():
            self.inner.build_queued(build_id, at)

    def build_started(self, build_id: int, at: datetime, worker: str, node: int | None = None) -> bool:
        ok = not self.muted.is_set() and self.inner.build_started(build_id, at, worker, node)
        self.send({"op": "started", "build_id": build_id, "ok": ok})
        return ok

    def action_started(self, build_id: int, action: Action) -> None:
        if self.muted.is_set():
            return
        if self.batch is not None:
            self.batch.action_started(build_id, action)
        else:
            self.inner.action_started(build_id, action)

    def log_writer(self, build_id: int, step: int, index: int) -> LogWriter:
        return _Mutable(self.inner.log_writer(build_id, step, index), self.muted)

    def action_finished(self, build_id: int, action: Action) -> None:
        if self.muted.is_set():
            return
        if self.batch is not None:
            self.batch.action_finished(build_id, action)
        else:
            self.inner.action_finished(build_id, action)

    def test_results(
        self, build_id: int, index: int, tests: list[dict[str, Any]], exceptions: list[dict[str, Any]]
    ) -> None:
        if not self.muted.is_set():
            self.inner.test_results(build_id, index, tests, exceptions)

    def build_finished(
        self,
        build_id: int,
        outcome: Outcome,
        at: datetime,
        messages: tuple[Message, ...] = (),
        node: int | None = None,
    ) -> None:
        if self.muted.is_set():
            if self.batch is not None:
                self.batch.drop(build_id)
                self.client.forget_build(build_id)
            return
        if self.batch is None:
            self.inner.build_finished(build_id, outcome, at, messages, node)
            return
        end: dict[str, Any] = {
            "outcome": outcome.value,
            "at": protocol.encode_time(at),
            "messages": protocol.encode_messages(messages),
        }
        if node is not None:
            end["node"] = node
        try:
            self.batch.build_finished(build_id, end)
        finally:
            self.client.forget_build(build_id)


def remote_child_main(argv: list[str] | None = None) -> None:
    sys.path[:] = [entry for entry in sys.path if entry not in ("", ".", os.getcwd())]
    from circlet.remote.client import RunnerClient
    from circlet.runner import sandbox
    from circlet.runner.run import JobRunner

    parser = argparse.ArgumentParser(prog="circlet-worker-runner")
    parser.add_argument("--workspaces", type=Path, required=True)
    parser.add_argument("--kill-grace", type=float, default=3.0)
    parser.add_argument("--keep-workspaces", action="store_true")
    parser.add_argument("--sandbox", default="", help="CIRCLET_SANDBOX: bwrap, none, or empty (bwrap)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker stops us by closing stdin
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    lock = threading.Lock()
    hello = json.loads(sys.stdin.readline() or "{}")
    if hello.get("op") != "hello":
        raise SystemExit("circlet-worker-runner: expected a hello message first")
    client = RunnerClient(hello["server"], hello["token"])
    hidden = tuple(Path(p) for p in hello.get("hidden", ()))
    # Steps run under bubblewrap unless CIRCLET_SANDBOX=none (runner/sandbox.py); the worker
    # checked at its start that it works here.
    sandbox.enable(args.sandbox, worker=True, workspace_root=args.workspaces, extra_hidden=hidden)
    worker_name = str(hello["worker"])
    reporter = FencedReporter(client.reporter(), out, lock, ReportBatcher(client), client)
    current: dict[str, Any] = {}
    thread: threading.Thread | None = None

    def run(message: dict[str, Any]) -> None:
        request = protocol.decode_request(message["request"])
        groups = message.get("groups_file")
        node = message.get("node")
        runner = JobRunner(
            workspace_root=args.workspaces,
            source=client.checkout_source(request.build_id),
            blobs=client.blob_store(request.build_id),
            reporter=reporter,
            worker=worker_name,
            keep_workspace=args.keep_workspaces,
            kill_grace=args.kill_grace,
            groups_file=Path(groups) if groups else None,
            node=None if node is None else int(node),
        )
        current["runner"], current["build_id"] = runner, request.build_id
        try:
            outcome = runner.run(request)
        except BaseException:  # the runner reports its own failures; this is a last guard
            log.exception("event=runner_crashed build_id=%s", request.build_id)
            outcome = Outcome.INFRASTRUCTURE_FAIL
        finally:
            current.clear()
        reporter.send({"op": "done", "build_id": request.build_id, "outcome": outcome.value})

    for line in sys.stdin:
        message = json.loads(line)
        op = message["op"]
        if op == "run":
            reporter.muted.clear()
            thread = threading.Thread(target=run, args=(message,), name="circlet-build")
            thread.start()
        elif op in ("cancel", "fence") and current.get("build_id") == message.get("build_id"):
            if op == "fence":
                reporter.muted.set()
            runner = current.get("runner")
            if runner is not None:
                runner.cancel()
    reporter.muted.set()  # the worker is gone: stop the build, report nothing
    runner = current.get("runner")
    if runner is not None:
        runner.cancel()
    if thread is not None:
        thread.join(15)


if __name__ == "__main__":
    remote_child_main()
