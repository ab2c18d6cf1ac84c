"""One command as a subprocess in its own process group, its output streamed as it comes.

A StepProcess starts the command in a new session (so its process group is its own: every child
it forks, `cmd &` included, is in that group) with stdin on /dev/null and stderr merged into stdout
(config.md 3.1). `pump` reads the pipe in chunks of up to 1 MiB with `poll`, hands each chunk and
its arrival time to a callback (the log writer) and keeps nothing: memory stays flat whatever the
output size. The same poll watches the leader (a pidfd) and a wake-up pipe, so a cancel or a
no-output timeout is acted on at once, without a polling interval.

Killing is always for the whole group: SIGTERM, then SIGKILL after a grace period. While waiting
out the grace the pump keeps reading, so what a TERM trap prints is still logged.

When the leader exits, the step is over: the pump drains what is still in the pipe (until EOF, or
until it has been quiet for a moment, or a cap) and returns. Children the command left running
(`server &`, `nohup x &`) survive the step, as on CircleCI where they die with the container;
`group_alive` tells the runner so it can kill them at the end of the job.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import math
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from circlet.runner import sandbox, spawn
from circlet.runner.spawn import SpawnedChild

log = logging.getLogger("circlet.runner.process")

READ_SIZE = 1 << 20  # bytes asked for per read
PIPE_SIZE = 1 << 20  # pipe capacity asked for (Linux default 64 KiB; unprivileged max 1 MiB)
KILL_GRACE = 3.0  # seconds between SIGTERM and SIGKILL for a no-output timeout
CANCEL_GRACE = 0.5  # the same for a cancel: it must take effect within a second
COALESCE_AFTER = 1 << 20  # once a step has printed this much, a read ...
COALESCE_BELOW = 64 << 10  # ... smaller than this ...
COALESCE_DELAY = 0.001  # ... is followed by this pause (seconds) before the next one
DRAIN_QUIET = 0.1  # after the leader exits, stop reading once the pipe was quiet this long
DRAIN_MAX = 1.0  # ... or after this long in any case (a chatty orphan must not hold the step)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

OnOutput = Callable[[bytes, datetime], None]


class Ending(StrEnum):
    """Why a pumped process ended."""

    EXITED = "exited"  # it exited on its own (or by a signal that was not ours)
    TIMED_OUT = "timed_out"  # no output for too long: we killed its group
    CANCELED = "canceled"  # cancel(): we killed its group
    STOPPED = "stopped"  # stop() (end of the job, for a background step): we killed its group


@dataclass(frozen=True, kw_only=True)
class ProcessResult:
    """How a command ended."""

    ending: Ending
    exit_code: int  # the exit status; 128+N when a signal N killed it
    output_bytes: int  # how many bytes the callback received


def exit_status(returncode: int) -> int:
    """Popen's returncode as a shell would say it: a negative (signal) code becomes 128+signal."""
    return 128 - returncode if returncode < 0 else returncode


class StepProcess:
    """A started command. `pump` is called once, from one thread; `cancel`/`stop` from any thread."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        cwd: Path | str,
        env: Mapping[str, str],
        on_spawn: Callable[[int], None] | None = None,
    ) -> None:
        """Start the command now; OSError (FileNotFoundError, PermissionError...) if it cannot start.

        `on_spawn(pgid)` runs first thing after the spawn, before anything else here: recording
        the group then leaves only the moments before the shell has even started unrecorded."""
        box = sandbox.current()
        # In the sandbox the step has a PID namespace of its own: when it ends the kernel kills
        # whatever it left, so no leftover needs looking for (steps.py NodeProcesses.done).
        self.sandboxed = box is not None
        if box is not None:  # bubblewrap around the step (runner/sandbox.py); same group, same pipe
            args = box.command(args, cwd=str(cwd), env=env)
        read_fd, write_fd = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(write_fd, _F_SETPIPE_SZ, PIPE_SIZE)
        try:
            self._proc: subprocess.Popen[bytes] | SpawnedChild
            if spawn.available():  # the cheaper way (runner/spawn.py); same child either way
                self._proc = SpawnedChild(spawn.spawn(list(args), cwd=str(cwd), env=env, output_fd=write_fd))
            else:
                self._proc = subprocess.Popen(
                    list(args),
                    cwd=cwd,
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=write_fd,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a new session, so a new process group led by the child
                    close_fds=True,
                )
        except BaseException:
            os.close(read_fd)
            os.close(write_fd)
            raise
        if on_spawn is not None:
            on_spawn(self._proc.pid)
        os.close(write_fd)
        self._rfd = read_fd
        self.pid = self._proc.pid
        self.pgid = self._proc.pid  # setsid() made the child the leader of its own group
        self._pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self._pidfd = os.pidfd_open(self.pid)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._lock = threading.Lock()
        self._closed = False
        self._request: tuple[Ending, float] | None = None

    # ---------------------------------------------------------------- from any thread

    def cancel(self, grace: float = CANCEL_GRACE) -> None:
        """Ask the pump to kill the group (TERM, KILL after `grace`); returns at once. Thread-safe."""
        self._interrupt(Ending.CANCELED, grace)

    def stop(self, grace: float = CANCEL_GRACE) -> None:
        """Like cancel, for a background step still running at the end of its job."""
        self._interrupt(Ending.STOPPED, grace)

    def _interrupt(self, ending: Ending, grace: float) -> None:
        with self._lock:
            if self._request is None:
                self._request = (ending, grace)
            if not self._closed:
                with contextlib.suppress(OSError):
                    os.write(self._wake_w, b"x")

    # ---------------------------------------------------------------- the pump

    def pump(
        self,
        on_output: OnOutput,
        *,
        no_output_timeout: float | None = None,
        kill_grace: float = KILL_GRACE,
    ) -> ProcessResult:
        """Stream the output to `on_output` until the command ends; blocking. Call once.

        `no_output_timeout` (seconds) restarts with every chunk; on expiry the group is killed
        with `kill_grace` between TERM and KILL and the ending is TIMED_OUT.
        """
        try:
            return self._pump(on_output, no_output_timeout, kill_grace)
        except BaseException:
            # The callback failed (a full disk...) or we were interrupted: leave nothing behind.
            signal_group(self.pgid, signal.SIGKILL)
            self._proc.wait()
            raise
        finally:
            self._close()

    def _pump(self, on_output: OnOutput, no_output_timeout: float | None, kill_grace: float) -> ProcessResult:
        poller = select.poll()
        poller.register(self._rfd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        if self._pidfd is not None:
            poller.register(self._pidfd, select.POLLIN)
        rfd, wake_r, pidfd = self._rfd, self._wake_r, self._pidfd
        proc = self._proc
        read = os.read
        now = time.monotonic
        limit = no_output_timeout if no_output_timeout and no_output_timeout > 0 else math.inf
        silence_deadline = now() + limit
        pipe_open = True
        total = 0
        ending: Ending | None = None
        kill_at: float | None = None  # when SIGKILL follows the SIGTERM already sent

        def start_kill(why: Ending, grace: float) -> None:
            nonlocal ending, kill_at
            ending = why
            kill_at = now() + grace
            signal_group(self.pgid, signal.SIGTERM)

        # Phase 1: until the leader has exited. The pidfd says when; without one (old kernels)
        # the loop looks every 50 ms.
        leader_done = False
        while not leader_done:
            if ending is None:
                if self._request is not None:
                    start_kill(*self._request)
                elif now() >= silence_deadline:
                    start_kill(Ending.TIMED_OUT, kill_grace)
            if kill_at is not None and now() >= kill_at:
                signal_group(self.pgid, signal.SIGKILL)
                kill_at = math.inf  # sent; now wait for the leader to go
            wake_at = kill_at if kill_at is not None else silence_deadline
            timeout = wake_at - now()
            if pidfd is None:
                timeout = min(timeout, 0.05)
            events = poller.poll(None if timeout == math.inf else max(0, math.ceil(timeout * 1000)))
            for fd, _ in events:
                if fd == rfd:
                    data = read(rfd, READ_SIZE)
                    if data:
                        total += len(data)
                        on_output(data, datetime.now(UTC))
                        silence_deadline = now() + limit
                        if len(data) < COALESCE_BELOW and total > COALESCE_AFTER:
                            # A small chunk from a big producer: let it fill the pipe a little
                            # before the next read. Fewer, larger chunks cost less here and in
                            # the log store (18k reads of 10 KiB for 200 MB become ~600); the
                            # pause is invisible in a live log. Steps printing little never wait.
                            time.sleep(COALESCE_DELAY)
                    else:  # every writer closed the pipe; the leader may still run
                        poller.unregister(rfd)
                        pipe_open = False
                elif fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        read(wake_r, 64)
                elif fd == pidfd:
                    poller.unregister(pidfd)
                    pidfd = None  # the leader exited: from now on, ask it directly
            if pidfd is None:
                leader_done = proc.poll() is not None

        # Phase 2: the leader is gone; what remains in the pipe belongs to the step. Children
        # still holding the pipe open must not hold the step: read until EOF, a quiet moment
        # or DRAIN_MAX (or the kill's deadline).
        if pipe_open:
            poller.unregister(wake_r)
            drain_end = now() + DRAIN_MAX
            if kill_at is not None and kill_at != math.inf:
                drain_end = min(drain_end, kill_at)
            while True:
                timeout = min(DRAIN_QUIET, drain_end - now())
                if timeout <= 0 or not poller.poll(math.ceil(timeout * 1000)):
                    break
                data = read(rfd, READ_SIZE)  # poll said readable: data or EOF, never a wait
                if not data:
                    break
                total += len(data)
                on_output(data, datetime.now(UTC))

        # Phase 3: a kill we started ends only when the whole group is gone.
        if kill_at is not None and kill_at != math.inf:
            while group_alive(self.pgid) and now() < kill_at:
                time.sleep(0.01)
            if group_alive(self.pgid):
                signal_group(self.pgid, signal.SIGKILL)

        code = exit_status(proc.wait())
        return ProcessResult(ending=ending or Ending.EXITED, exit_code=code, output_bytes=total)

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            for fd in (self._rfd, self._wake_r, self._wake_w, self._pidfd):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)


# -------------------------------------------------------------------- process groups


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to every process of the group; False when the group has no process left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed user (setuid); nothing more we can do
        return True
    return True


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs. Zombies do not count: they hold no resources
    and, where PID 1 does not reap orphans (some containers), they would never go away."""
    if not signal_group(pgid, 0):
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def kill_group(pgid: int, grace: float = KILL_GRACE) -> bool:
    """SIGTERM the whole group, SIGKILL it after `grace` seconds if anything is left. Blocking.

    Returns True once no process of the group runs (at most about grace + 1 s).
    """
    return kill_groups([pgid], grace)


def kill_groups(pgids: Iterable[int], grace: float = KILL_GRACE) -> bool:
    """kill_group for several groups at once: one grace period for all of them."""
    alive = [pgid for pgid in pgids if signal_group(pgid, signal.SIGTERM)]
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        alive = [pgid for pgid in alive if group_alive(pgid)]
        if alive:
            time.sleep(0.01)
    for pgid in alive:
        signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 1.0
    while alive and time.monotonic() < deadline:
        alive = [pgid for pgid in alive if group_alive(pgid)]
        if alive:
            time.sleep(0.01)
    for pgid in alive:
        log.warning("event=group_survived_kill pgid=%s", pgid)
    return not alive


def is_running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError as exc:
        return exc.errno != errno.ENOENT
    return stat[stat.rfind(b")") + 2 :][:1] not in (b"Z", b"X")


# -------------------------------------------------------------------- groups left behind

# A runner that dies (SIGKILL, OOM) or a server killed with its runners cannot kill its steps'
# process groups (each step has a session of its own). So every group a runner starts is
# recorded in a file as `pgid starttime`, and whoever notices the runner gone kills them:
# the server when a runner process dies, the executor on start after a crash.


def leader_start_time(pid: int) -> str | None:
    """The start time (in clock ticks since boot) of process `pid`, or None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None  # field 22 of stat(5), counted after `comm`


def record_group(groups_file: Path, pgid: int) -> None:
    """Append a just-started group (its leader alive) to the build's groups file."""
    started = leader_start_time(pgid) or "?"
    with open(groups_file, "a", encoding="ascii") as handle:
        handle.write(f"{pgid} {started}\n")


def kill_recorded_groups(groups_file: Path) -> int:
    """SIGKILL the groups a file records, where they are still the same groups; returns how
    many were signalled. Linux does not reuse a number while a process group of that number
    exists, so with the leader gone, what remains in the group is the step's. With a process of
    that number alive, it is killed only if its start time is the recorded leader's."""
    try:
        lines = groups_file.read_text(encoding="ascii").splitlines()
    except OSError:
        return 0
    killed = 0
    for line in lines:
        pgid_text, _, started = line.partition(" ")
        if not pgid_text.isdigit():
            continue
        pgid = int(pgid_text)
        now = leader_start_time(pgid)
        if now is not None and now != started:
            continue  # the number belongs to another process now
        if signal_group(pgid, signal.SIGKILL):
            killed += 1
    return killed


def reap_orphans(groups_dir: Path) -> int:
    """Kill the groups of every groups file in `groups_dir` and remove the files (after a crash)."""
    killed = 0
    if not groups_dir.is_dir():
        return 0
    for groups_file in groups_dir.iterdir():
        killed += kill_recorded_groups(groups_file)
        groups_file.unlink(missing_ok=True)
    return killed
