"""Directory trees to and from the blob store as tar streams, made and read by the system `tar`.

Why the `tar` binary: Python's tarfile spends ~50 µs of interpreter time per member, which is
seconds for a 20,000-file cache; GNU tar does the same work in C. The archive streams from
tar's stdout (through `zstd`) straight into BlobStore.put, through 1 MiB pipes and no
temporary copy; and back: a blob that is a local file is read by the first process itself,
otherwise Python feeds it.

Compression (DECISION, docs/artifacts-and-caches.md): `zstd -1` when the machine has zstd,
else none. At level 1 zstd compresses at ~300-500 MB/s on one core, faster than the disks of
machines like this one write, so a cache of text (node_modules, Go modules, build outputs) is
saved faster *and* stored in half the space or less, and a remote blob store moves half the
bytes; already-compressed files (jars, wheels) cost a little CPU and nothing else. gzip (~60
MB/s) would make saving several times slower than `tar`, so it is not used. The record of
each archive says which it is (`compression`), so both kinds restore.

Stopping: pack and unpack start each process in a process group of its own, through a
Stopper the caller may pass; `Stopper.stop` (from any thread: a cancel) SIGKILLs those groups
at once, and pack/unpack then raise Stopped. pack hands BlobStore.put a stream whose end only
counts as an end when tar and zstd exited well and were not stopped; otherwise reading its end
raises, so put stores nothing and a truncated archive never becomes a blob.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from circlet.core.blobs import BlobInfo, BlobStore
from circlet.runner.process import signal_group

TAR = shutil.which("tar") or "/bin/tar"
ZSTD = shutil.which("zstd")
NONE, ZSTD_NAME = "none", "zstd"
DEFAULT_COMPRESSION = ZSTD_NAME if ZSTD else NONE
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
COPY_CHUNK = 1 << 20

# Runs tar where it may only touch what a step could (runner/confine.py tar_wrapper): given
# tar's argv and its working directory, the argv to start instead.
Wrap = Callable[[list[str], Path], list[str]]


class ArchiveError(Exception):
    """tar (or zstd) failed; the message holds its own words."""


class Stopped(Exception):
    """The archive's processes were stopped on purpose (Stopper.stop): the work is incomplete."""


class Stopper:
    """Lets another thread stop the archives pack/unpack make with it (a step's cancel).

    `stop` SIGKILLs the process group of every tar/zstd started with this Stopper that has not
    been reaped yet, and makes any started later die at once; it returns at once and may be
    called any number of times, from any thread. `on_spawn` is told each new group's id (the
    runner's groups file, runner/process.py record_group). Thread-safe.
    """

    def __init__(self, on_spawn: Callable[[int], None] | None = None) -> None:
        self._on_spawn = on_spawn
        self._lock = threading.Lock()
        self._groups: set[int] = set()
        self._stopped = False

    @property
    def stopped(self) -> bool:
        with self._lock:
            return self._stopped

    def stop(self) -> None:
        with self._lock:  # signalled under the lock: a group is never one reaped (its id reused)
            self._stopped = True
            for pgid in self._groups:
                signal_group(pgid, signal.SIGKILL)

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """subprocess.Popen(argv, **kwargs), leader of a new process group."""
        with self._lock:
            proc = subprocess.Popen(argv, process_group=0, **kwargs)
            self._groups.add(proc.pid)
            if self._stopped:
                signal_group(proc.pid, signal.SIGKILL)
        if self._on_spawn is not None:
            self._on_spawn(proc.pid)
        return proc

    def reap(self, procs: list[subprocess.Popen[bytes]]) -> list[int]:
        """Wait for the processes to end; their exit codes. Their groups are no longer signalled."""
        for proc in procs:  # ended, not reaped yet: its number cannot be another's meanwhile
            if proc.returncode is not None:
                continue  # reaped already: its number may be another child's now, never wait on it
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        with self._lock:
            self._groups.difference_update(proc.pid for proc in procs)
            return [proc.wait() for proc in procs]

    def kill(self, procs: list[subprocess.Popen[bytes]]) -> None:
        """Kill and reap the processes (their groups: a wrapped tar's children too)."""
        with self._lock:
            for proc in procs:
                if proc.returncode is None:
                    signal_group(proc.pid, signal.SIGKILL)
        self.reap(procs)


@dataclass(frozen=True, kw_only=True)
class Packed:
    """An archive stored: the blob, how it is compressed, and what tar said that was not fatal."""

    info: BlobInfo | None  # None: put_if_absent found the key taken
    compression: str = NONE
    warnings: str = ""


def pack(
    blobs: BlobStore,
    key: str,
    base: Path,
    members: Sequence[str],
    *,
    if_absent: bool = False,
    compression: str = DEFAULT_COMPRESSION,
    wrap: Wrap | None = None,
    stopper: Stopper | None = None,
) -> Packed:
    """Archive `members` (paths relative to `base`, recursively; symlinks kept as links) into the
    blob `key`, tar started through `wrap` when given. ArchiveError when tar fails (an
    unreadable file, a vanished member); Stopped when `stopper` was stopped. Either way no blob
    is stored under `key` (unless one was there before)."""
    stopper = stopper or Stopper()
    with tempfile.TemporaryFile() as names, tempfile.TemporaryFile() as errors:
        names.write(b"".join(m.encode("utf-8", "surrogateescape") + b"\0" for m in members))
        names.seek(0)
        argv = [
            TAR,
            "--create",
            "--file=-",
            "--format=gnu",
            f"--directory={base}",
            "--null",
            "--files-from=-",
        ]
        if wrap is not None:
            argv = wrap(argv, base)
        procs = [stopper.popen(argv, stdin=names, stdout=subprocess.PIPE, stderr=errors)]

        def at_end() -> None:
            """The stream ended: a whole archive only if every process exited well, unstopped."""
            codes = stopper.reap(procs)
            if stopper.stopped:
                raise Stopped("stopped")
            if codes[0] not in (0, 1) or any(codes[1:]):  # tar 1: "file changed as we read it"
                raise ArchiveError(_read_errors(errors) or f"tar exited with code {codes[0]}")

        try:
            if compression == ZSTD_NAME:
                procs.append(_zstd(stopper, ["-1", "-q", "-c", "-T1"], procs[0].stdout, errors))
            out = procs[-1].stdout
            assert out is not None
            _grow_pipe(out)
            stream = io.BufferedReader(_Checked(out.fileno(), at_end), buffer_size=COPY_CHUNK)
            info = blobs.put_if_absent(key, stream) if if_absent else blobs.put(key, stream)
        finally:
            stopper.kill(procs)  # at the end they are gone already; else (key taken, error) stop them
            for proc in procs:
                if proc.stdout is not None:
                    proc.stdout.close()
        said = _read_errors(errors)
    if stopper.stopped and info is None:
        raise Stopped("stopped")
    return Packed(info=info, compression=compression, warnings=said if info is not None else "")


def unpack(
    stream: IO[bytes],
    dest: Path,
    compression: str = NONE,
    *,
    only: str | None = None,
    wrap: Wrap | None = None,
    stopper: Stopper | None = None,
) -> str:
    """Extract a tar stream into `dest` (created if missing), overwriting files there; returns
    tar's non-fatal words. ArchiveError when tar fails; Stopped when `stopper` was stopped (what
    was extracted by then stays). With `only`, just that member and what is below it (anything
    else in the archive is left out; ArchiveError when it is absent).

    GNU tar keeps members' names below `dest` (`..` and absolute names are refused) and makes
    links of the archive that point out as placeholders, but it writes through a symbolic link
    that is already in `dest` (`dest/a -> /elsewhere` and a member `a/f`). Whoever can plant such
    a link (a sandboxed step) must not gain writes outside its reach: pass `wrap` to run tar
    there (runner/confine.py tar_wrapper)."""
    if compression not in (NONE, ZSTD_NAME):
        raise ArchiveError(f"unknown compression {compression!r}")
    if compression == ZSTD_NAME and ZSTD is None:
        raise ArchiveError("this archive is compressed with zstd, which this machine does not have")
    stopper = stopper or Stopper()
    dest.mkdir(parents=True, exist_ok=True)
    argv = [TAR, "--extract", "--file=-", f"--directory={dest}", "--no-same-owner"]
    if only is not None:
        argv += ["--no-wildcards", "--", only]
    if wrap is not None:
        argv = wrap(argv, dest)
    fileno = _real_file(stream)
    feed: int | None = fileno if fileno is not None else subprocess.PIPE
    with tempfile.TemporaryFile() as errors:
        procs: list[subprocess.Popen[bytes]] = []
        try:
            if compression == ZSTD_NAME:
                procs.append(_zstd(stopper, ["-d", "-q", "-c"], feed, errors))
                procs.append(stopper.popen(argv, stdin=procs[0].stdout, stderr=errors))
                assert procs[0].stdout is not None
                procs[0].stdout.close()  # tar holds it now
            else:
                procs.append(stopper.popen(argv, stdin=feed, stderr=errors))
            first = procs[0]
            if fileno is None:
                assert first.stdin is not None
                _grow_pipe(first.stdin)
                try:
                    while chunk := stream.read(COPY_CHUNK):
                        first.stdin.write(chunk)
                except BrokenPipeError:
                    pass  # it stopped early: its exit code says why
                finally:
                    with contextlib.suppress(BrokenPipeError):
                        first.stdin.close()
        except BaseException:
            stopper.kill(procs)
            raise
        codes = stopper.reap(procs)
        said = _read_errors(errors)
    if stopper.stopped:
        raise Stopped("stopped")
    if any(codes):
        raise ArchiveError(said or f"tar exited with code {codes[-1]}")
    return said


class _Checked(io.RawIOBase):
    """The read end of a pipe whose end is checked by `at_end` (which raises when it is not
    a real end); the descriptor stays its owner's."""

    def __init__(self, fd: int, at_end: Callable[[], None]) -> None:
        super().__init__()
        self._file = io.FileIO(fd, "rb", closefd=False)
        self._at_end = at_end

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._file.readinto(buffer)
        if not n:
            self._at_end()
            return 0
        return n


def _zstd(
    stopper: Stopper, args: list[str], stdin: IO[bytes] | int | None, errors: IO[bytes]
) -> subprocess.Popen[bytes]:
    """zstd reading `stdin` (a descriptor, subprocess.PIPE, or the previous process's stdout,
    which is closed here: zstd holds it now)."""
    assert ZSTD is not None
    proc = stopper.popen([ZSTD, *args], stdin=stdin, stdout=subprocess.PIPE, stderr=errors)
    if stdin is not None and not isinstance(stdin, int):
        stdin.close()
    return proc


def _real_file(stream: IO[bytes]) -> int | None:
    """The descriptor of a stream that is a regular file at its start (a process can read it)."""
    try:
        fd = stream.fileno()
        if os.path.isfile(f"/proc/self/fd/{fd}") and stream.tell() == 0:
            return fd
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _grow_pipe(pipe: IO[bytes]) -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_SIZE)


def _read_errors(errors: IO[bytes]) -> str:
    errors.seek(0)
    return errors.read(16_384).decode("utf-8", "replace").strip()
