"""What each kind of step does: small handlers in a table keyed by StepKind.

A handler gets a StepContext (the step, its environment and directories, the action's log) and
returns a StepResult; the JobRunner does the bookkeeping around it (action records, when-rules,
cancel). Adding a kind means writing one function and putting it in HANDLERS. The steps that
keep files in the blob store (artifacts, caches, workspaces) are in BLOB_HANDLERS
(runner/blobsteps.py), which the JobRunner adds.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from circlet import results
from circlet.core.blobs import BlobStore
from circlet.core.errors import CircletError
from circlet.core.model import ActionStatus
from circlet.core.plan import DEFAULT_SHELL, JobPlan, PlannedStep, StepKind
from circlet.core.ports import CheckoutSource, LogWriter, RunRequest
from circlet.runner import sandbox
from circlet.runner.archive import Stopper
from circlet.runner.process import (
    CANCEL_GRACE,
    Ending,
    StepProcess,
    group_alive,
    kill_groups,
)
from circlet.runner.workspace import NodeWorkspace, expand_path

FALLBACK_SHELL = "/bin/sh -eo pipefail"


@dataclass(frozen=True, kw_only=True)
class StepResult:
    """How a step ended."""

    status: ActionStatus
    exit_code: int | None = None
    message: str | None = None  # for the build's messages (infrastructure problems)


class ActionLog:
    """One action's output on its way to the LogWriter; counts bytes, keeps none. One thread."""

    def __init__(self, writer: LogWriter) -> None:
        self._writer = writer
        self.size = 0
        self._ends_line = True

    def write(self, data: bytes, at: datetime) -> None:
        """The pump's callback: one chunk of output as it arrived."""
        self._writer.write(data, at, "out")
        self.size += len(data)
        self._ends_line = data.endswith(b"\n")

    def line(self, text: str) -> None:
        """A line of circlet's own, on a line of its own."""
        data = text.encode("utf-8", "replace") + b"\n"
        if not self._ends_line:
            data = b"\n" + data
        self.write(data, datetime.now(UTC))

    def close(self) -> None:
        self._writer.close()


class NodeProcesses:
    """The running processes of one node, so that a cancel or the end of the job can kill them.

    Thread-safe. A process added after a cancel (or after the end of the job was reached) is
    killed at once, so no race lets one slip through; so is a handler's own work registered
    with `on_cancel` (the file steps' tar, runner/archive.py Stopper).
    """

    def __init__(self, on_start: Callable[[int], None] | None = None) -> None:
        self._on_start = on_start  # told each new process group (runner/process.py record_group)
        self._lock = threading.Lock()
        self._running: set[StepProcess] = set()
        self._leftover_groups: set[int] = set()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._next_callback = 0
        self._canceled = False
        self._stopping = False

    def record(self, pgid: int) -> None:
        """Tell whoever watches (the groups file) about a group just spawned."""
        if self._on_start is not None:
            self._on_start(pgid)

    def add(self, proc: StepProcess) -> None:
        with self._lock:
            self._running.add(proc)
            if self._canceled:
                proc.cancel()
            elif self._stopping:
                proc.stop()

    def done(self, proc: StepProcess) -> None:
        """The step is over; children it left running are kept for `kill_leftovers`."""
        with self._lock:
            self._running.discard(proc)
        # (a sandboxed step's leftovers died with its PID namespace: spare the /proc scan)
        if not proc.sandboxed and group_alive(proc.pgid):
            with self._lock:
                self._leftover_groups.add(proc.pgid)

    @contextlib.contextmanager
    def on_cancel(self, callback: Callable[[], None]) -> Iterator[None]:
        """Call `callback` if the node is canceled or stopped (`cancel`, `stop_background`) while
        the block runs, at once if it was already. It runs on the canceling thread, so it must
        be quick, thread-safe and not raise; it is called at most once, and may come just as the
        block ends."""
        with self._lock:
            already = self._canceled or self._stopping
            token = self._next_callback
            self._next_callback += 1
            if not already:
                self._callbacks[token] = callback
        if already:
            callback()
        try:
            yield
        finally:
            with self._lock:
                self._callbacks.pop(token, None)

    def cancel(self) -> None:
        with self._lock:
            self._canceled = True
            running = list(self._running)
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
        for proc in running:
            proc.cancel()
        for callback in callbacks:
            callback()

    def stop_background(self) -> None:
        """The node's last step is done: stop what still runs (background steps)."""
        with self._lock:
            self._stopping = True
            running = list(self._running)
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
        for proc in running:
            proc.stop()
        for callback in callbacks:
            callback()

    def kill_leftovers(self, grace: float = CANCEL_GRACE) -> None:
        """Kill the children that finished steps left behind (`server &`). Blocking, about `grace`."""
        with self._lock:
            groups = list(self._leftover_groups)
            self._leftover_groups.clear()
        kill_groups(groups, grace)


@dataclass(frozen=True, kw_only=True)
class StepContext:
    """Everything a handler may use."""

    request: RunRequest
    step: PlannedStep
    number: int  # the action's step ordinal (0, 101, 102...)
    index: int  # the node
    workspace: NodeWorkspace
    workdir: Path  # the job's working directory, absolute
    env: dict[str, str]  # the step's full environment
    log: ActionLog
    source: CheckoutSource
    processes: NodeProcesses
    kill_grace: float
    report_tests: Callable[[list[dict[str, Any]], list[dict[str, Any]]], None] = lambda tests, problems: None
    blobs: BlobStore | None = None  # artifacts, caches, workspaces (runner/blobsteps.py)

    @property
    def home(self) -> Path:
        return Path(self.env.get("HOME") or self.workspace.home)

    @contextlib.contextmanager
    def stopper(self) -> Iterator[Stopper]:
        """A Stopper for the archives the block makes (runner/archive.py pack/unpack), stopped
        when the node is canceled: then they raise Stopped, and the handler ends canceled."""
        stopper = Stopper(on_spawn=self.processes.record)
        with self.processes.on_cancel(stopper.stop):
            yield stopper

    def directory(self) -> Path:
        """The step's working directory: its own (relative to the job's) or the job's."""
        if self.step.working_directory:
            return expand_path(self.step.working_directory, home=self.home, base=self.workdir)
        return self.workdir


Handler = Callable[[StepContext], StepResult]


# ------------------------------------------------------------------------- run


def shell_for(step: PlannedStep, plan: JobPlan) -> str:
    """Step shell > job shell > /bin/bash -eo pipefail (/bin/sh -eo pipefail without bash)."""
    for shell in (step.shell, plan.shell):
        if shell and shell.strip():
            return shell
    return DEFAULT_SHELL if os.path.exists("/bin/bash") else FALLBACK_SHELL


def bash_command(step: PlannedStep, plan: JobPlan) -> str | None:
    """The action's recorded `bash_command` (config.md 3.1); None for steps that are not run."""
    if step.kind is not StepKind.RUN:
        return None
    if plan.config_version == "1.0":  # config.md 12.3: the command text alone
        return step.command or ""
    return "#!" + shell_for(step, plan) + "\n" + (step.command or "")


def go_duration(seconds: float) -> str:
    """A duration as Go's time.Duration.String() writes it: 10m0s, 5s, 1h30m0s, 1.5s, 500ms."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)

    def fraction(value: int, unit: int) -> str:
        whole, rest = divmod(value, unit)
        if not rest:
            return str(whole)
        digits = len(str(unit)) - 1
        return f"{whole}.{rest:0{digits}d}".rstrip("0")

    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{fraction(ns, 1_000)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{fraction(ns, 1_000_000)}ms"
    total_seconds, rest = divmod(ns, 1_000_000_000)
    hours, remainder = divmod(total_seconds, 3600)
    minutes, secs = divmod(remainder, 60)
    text = fraction(secs * 1_000_000_000 + rest, 1_000_000_000) + "s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text


def run_command(ctx: StepContext) -> StepResult:
    """config.md 3.1: the command in a script file run by the shell, in its own process group."""
    step = ctx.step
    shell = shell_for(step, ctx.request.plan)
    try:
        argv = [*shlex.split(shell), str(ctx.workspace.script(ctx.number))]
    except ValueError as exc:
        ctx.log.line(f"Invalid shell {shell!r}: {exc}")
        return StepResult(status=ActionStatus.FAILED)
    ctx.workspace.script(ctx.number).write_text(step.command or "", encoding="utf-8")
    cwd = ctx.directory()
    try:
        cwd.mkdir(parents=True, exist_ok=True)
        proc = StepProcess(argv, cwd=cwd, env=ctx.env, on_spawn=ctx.processes.record)
    except OSError as exc:
        ctx.log.line(f"Cannot run {argv[0]} in {cwd}: {exc.strerror or exc}")
        return StepResult(status=ActionStatus.FAILED)
    ctx.processes.add(proc)
    try:
        result = proc.pump(ctx.log.write, no_output_timeout=step.no_output_timeout, kill_grace=ctx.kill_grace)
    finally:
        ctx.processes.done(proc)
    if result.ending is Ending.TIMED_OUT:
        ctx.log.line(
            f"Too long with no output (exceeded {go_duration(step.no_output_timeout)}): "
            "context deadline exceeded"
        )
        return StepResult(status=ActionStatus.TIMEDOUT)
    if result.ending is Ending.CANCELED:
        return StepResult(status=ActionStatus.CANCELED)
    if result.ending is Ending.STOPPED:
        ctx.log.line("Background step stopped at the end of the job")
        return StepResult(status=ActionStatus.SUCCESS)
    if result.exit_code != 0:
        ctx.log.line(f"Exited with code exit status {result.exit_code}")
        return StepResult(status=ActionStatus.FAILED, exit_code=result.exit_code)
    return StepResult(status=ActionStatus.SUCCESS, exit_code=0)


# ------------------------------------------------------------------------- checkout


def checkout(ctx: StepContext) -> StepResult:
    """config.md 3.3, through the SourceHost; a git problem fails the step."""
    request = ctx.request
    dest = expand_path(str(ctx.step.args.get("path") or "."), home=ctx.home, base=ctx.workdir)
    if (dest / ".git").exists():
        ctx.log.line("Fetching into the existing git repository")
    else:
        ctx.log.line("Cloning git repository")
    ctx.log.line(f"Cloning into '{dest}'...")
    if request.branch:
        ctx.log.line(f"Checking out branch {request.branch}")
    elif request.tag:
        ctx.log.line(f"Checking out tag {request.tag}")
    else:
        ctx.log.line(f"Checking out revision {request.revision}")
    try:
        ctx.source.checkout(request.project, request.revision, dest, branch=request.branch, tag=request.tag)
    except CircletError as exc:
        ctx.log.line(exc.message)
        return StepResult(status=ActionStatus.FAILED)
    ctx.log.line(f"HEAD is now at {request.revision[:7]}")
    return StepResult(status=ActionStatus.SUCCESS)


# ------------------------------------------------------------------------- test results


def store_test_results(ctx: StepContext) -> StepResult:
    """config.md 3.6: read the JUnit/Cucumber reports under `path`; never fails the step."""
    raw = ctx.step.args.get("path")
    if not isinstance(raw, str) or not raw:
        ctx.log.line("Warning: store_test_results needs a path; nothing stored")
        return StepResult(status=ActionStatus.SUCCESS)
    # a sandboxed step's /tmp is its build's own folder (runner/sandbox.py)
    path = sandbox.host_path(expand_path(raw, home=ctx.home, base=ctx.workdir), ctx.workspace.root)
    if not path.exists():
        ctx.log.line(f"Warning: test results path {path} does not exist; nothing stored")
        return StepResult(status=ActionStatus.SUCCESS)
    cases, problems = results.collect(path)
    ctx.report_tests([results.to_api(c) for c in cases], [results.problem_to_api(p) for p in problems])
    failed = sum(1 for c in cases if c.result in ("failure", "error"))
    ctx.log.line(f"Archiving test results from {path}: {len(cases)} tests, {failed} failed or in error")
    for problem in problems:
        ctx.log.line(f"Could not read {problem.file}: {problem.message}")
    return StepResult(status=ActionStatus.SUCCESS)


def noop(ctx: StepContext) -> StepResult:
    ctx.log.line(f'Nothing to do on circlet for "{ctx.step.name}"')
    return StepResult(status=ActionStatus.SUCCESS)


HANDLERS: dict[StepKind, Handler] = {
    StepKind.RUN: run_command,
    StepKind.CHECKOUT: checkout,
    StepKind.STORE_TEST_RESULTS: store_test_results,
    StepKind.NOOP: noop,
}
