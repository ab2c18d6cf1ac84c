"""LogStore on plain files: action output streams to disk and is read back lazily.

Per action, under `<root>/<build_id>/`:

- `<step>-<index>.log`: the raw output bytes, exactly as written;
- `<step>-<index>.idx`: one fixed-size record per write, `<QqB` (17 bytes, little-endian):
  the log's size *after* the write (u64), the write's time in epoch milliseconds (i64) and its
  stream (u8: 0 = out, 1 = err). A chunk runs from the previous record's end (0 for the first)
  to its own.

Recording where a chunk ends, rather than where it starts, is what lets a reader follow a live
log safely: the writer appends the bytes first and the record after, so every complete record
describes bytes that are already in the log, and a reader never has to guess where the last
chunk ends from a file size that may include half of the next write.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from circlet.core.ports import LogChunk

RECORD = struct.Struct("<QqB")  # end offset, epoch millis, stream
STREAMS = ("out", "err")  # stream code -> name
_STREAM_CODES = {name: code for code, name in enumerate(STREAMS)}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLI = timedelta(milliseconds=1)
MAX_CHUNK = 1 << 20  # chunks() splits longer writes so a reader holds at most 1 MiB at a time
_BATCH = 4096  # index records read at once


def to_millis(at: datetime) -> int:
    """Epoch milliseconds of an aware datetime (floored, as the index stores it)."""
    return (at - EPOCH) // _MILLI


def from_millis(millis: int) -> datetime:
    return EPOCH + timedelta(milliseconds=millis)


class FileLogWriter:
    """Appends to one action's log. Not thread-safe: one writer per action (LogWriter).

    Each write goes to the OS before write() returns (bytes first, then their index record), so
    readers in other threads or processes see it at once; nothing is fsynced. Reopening a log
    appends; bytes a crashed writer left without an index record are cut off first.
    """

    def __init__(self, log_path: Path, index_path: Path) -> None:
        # Files are opened on the first byte: a step that prints nothing costs no file at all.
        self._log_path = log_path
        self._index_path = index_path
        self._log: BinaryIO | None = None
        self._index: BinaryIO | None = None
        self._end = 0
        self._closed = False

    def _open(self) -> tuple[BinaryIO, BinaryIO]:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self._log_path, "ab")  # noqa: SIM115 - closed by close()
        try:
            # a+b: appends, and _repair can read the last record
            index = open(self._index_path, "a+b")  # noqa: SIM115 - closed by close()
        except BaseException:
            log.close()
            raise
        self._log, self._index = log, index
        self._end = self._repair()
        return log, index

    def _repair(self) -> int:
        """Make the log and its index agree; return the log's committed size."""
        assert self._log is not None and self._index is not None
        index_size = os.fstat(self._index.fileno()).st_size
        whole = index_size - index_size % RECORD.size
        end = 0
        if whole:
            end = RECORD.unpack(os.pread(self._index.fileno(), RECORD.size, whole - RECORD.size))[0]
        if whole != index_size:
            self._index.truncate(whole)
        if os.fstat(self._log.fileno()).st_size != end:
            self._log.truncate(end)
        return end

    @property
    def size(self) -> int:
        """Bytes in the log so far (including what an earlier writer left)."""
        if self._log is None and not self._closed and self._index_path.exists():
            self._open()
        return self._end

    def write(self, data: bytes, at: datetime, stream: str = "out") -> None:
        """Append `data` written to `stream` ("out" or "err") at `at` (aware). Empty data is ignored."""
        if self._closed:
            raise ValueError("write to a closed log writer")
        code = _STREAM_CODES.get(stream)
        if code is None:
            raise ValueError(f"unknown stream {stream!r} (expected 'out' or 'err')")
        if not data:
            return
        log, index = (self._log, self._index) if self._log and self._index else self._open()
        log.write(data)
        log.flush()  # the bytes reach the file before the record that points at them
        self._end += len(data)
        index.write(RECORD.pack(self._end, to_millis(at), code))
        index.flush()

    def close(self) -> None:
        """Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._log is not None:
                self._log.close()
        finally:
            if self._index is not None:
                self._index.close()

    def __enter__(self) -> FileLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileLogStore:
    """LogStore keeping each action's output in `<root>/<build_id>/<step>-<index>.{log,idx}`.

    Thread-safe (it keeps no state but `root`); readers may read while a writer appends.
    Beyond the protocol: `path(...)` gives an action's raw log file, and `writer()` returns a
    FileLogWriter, a context manager that also tells its `size`.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, build_id: int, step: int, index: int) -> Path:
        """The raw log file of one action (it may not exist)."""
        return self.root / str(build_id) / f"{step}-{index}.log"

    def _index_path(self, build_id: int, step: int, index: int) -> Path:
        return self.root / str(build_id) / f"{step}-{index}.idx"

    def writer(self, build_id: int, step: int, index: int) -> FileLogWriter:
        return FileLogWriter(self.path(build_id, step, index), self._index_path(build_id, step, index))

    def size(self, build_id: int, step: int, index: int) -> int | None:
        """The log file's size (it may run ahead of chunks() by a write in progress)."""
        try:
            return self.path(build_id, step, index).stat().st_size
        except FileNotFoundError:
            return None

    def read(
        self, build_id: int, step: int, index: int, *, offset: int = 0, length: int | None = None
    ) -> bytes:
        if length is not None and length <= 0:
            return b""
        try:
            with open(self.path(build_id, step, index), "rb") as log:
                log.seek(max(offset, 0))
                return log.read(-1 if length is None else length)
        except FileNotFoundError:
            return b""

    def chunks(self, build_id: int, step: int, index: int, *, offset: int = 0) -> Iterator[LogChunk]:
        """Chunks from byte `offset` on (the first one cut to start there) up to the last write
        whose index record was complete when iteration began; a reader following a live log
        calls again from the last chunk's end. Writes over 1 MiB come as several chunks."""
        with ExitStack() as files:
            try:
                log = files.enter_context(open(self.path(build_id, step, index), "rb"))
                index_file = files.enter_context(open(self._index_path(build_id, step, index), "rb"))
            except FileNotFoundError:
                return
            yield from _read_chunks(log, index_file, max(offset, 0))

    def delete_build(self, build_id: int) -> None:
        """Remove every log of the build; nothing happens when there is none."""
        shutil.rmtree(self.root / str(build_id), ignore_errors=True)


def _read_chunks(log: BinaryIO, index_file: BinaryIO, offset: int) -> Iterator[LogChunk]:
    fd = index_file.fileno()
    count = os.fstat(fd).st_size // RECORD.size  # complete records as of now; later ones wait
    # Binary search for the first record ending after `offset`.
    low, high = 0, count
    while low < high:
        middle = (low + high) // 2
        if RECORD.unpack(os.pread(fd, RECORD.size, middle * RECORD.size))[0] <= offset:
            low = middle + 1
        else:
            high = middle
    start = RECORD.unpack(os.pread(fd, RECORD.size, (low - 1) * RECORD.size))[0] if low else 0
    for position in range(low, count, _BATCH):
        batch = os.pread(fd, RECORD.size * min(_BATCH, count - position), position * RECORD.size)
        for end, millis, code in RECORD.iter_unpack(batch):
            begin = max(start, offset)
            time = from_millis(millis)
            stream = STREAMS[code] if code < len(STREAMS) else "out"
            while begin < end:
                # pieces of a long write fall on the same 1 MiB grid whatever the offset asked
                piece_end = min(end, start + ((begin - start) // MAX_CHUNK + 1) * MAX_CHUNK)
                log.seek(begin)
                data = log.read(piece_end - begin)
                if not data:  # the log was cut short under us (another writer reopened it)
                    return
                yield LogChunk(type=stream, time=time, data=data, offset=begin)
                begin += len(data)
            start = end
