"""InMemoryLogStore and its writer: the fake of core/ports.py LogStore.

A dict behind a lock, with the semantics of store/logs.py (contract tests:
tests/contract/test_log_store.py run on both).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from circlet.core.ports import LogChunk

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLI = timedelta(milliseconds=1)
_MAX_CHUNK = 1 << 20  # as store/logs.py: longer writes are read back as several chunks


@dataclass
class _Log:
    data: bytearray = field(default_factory=bytearray)
    writes: list[tuple[int, datetime, str]] = field(default_factory=list)  # (end, time, stream)


class InMemoryLogWriter:
    """LogWriter for InMemoryLogStore. Times are kept to the millisecond, as on disk."""

    def __init__(
        self, logs: dict[tuple[int, int, int], _Log], key: tuple[int, int, int], lock: threading.Lock
    ) -> None:
        self._logs = logs
        self._key = key
        self._lock = lock
        self._closed = False

    def write(self, data: bytes, at: datetime, stream: str = "out") -> None:
        if self._closed:
            raise ValueError("write to a closed log writer")
        if stream not in ("out", "err"):
            raise ValueError(f"unknown stream {stream!r} (expected 'out' or 'err')")
        if not data:
            return
        time = _EPOCH + ((at - _EPOCH) // _MILLI) * _MILLI
        with self._lock:
            log = self._logs.setdefault(self._key, _Log())  # created on the first byte, as on disk
            log.data += data
            log.writes.append((len(log.data), time, stream))

    def close(self) -> None:
        self._closed = True


class InMemoryLogStore:
    """LogStore in memory; thread-safe. Beyond the protocol: `text()` decodes a whole log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logs: dict[tuple[int, int, int], _Log] = {}

    def writer(self, build_id: int, step: int, index: int) -> InMemoryLogWriter:
        return InMemoryLogWriter(self._logs, (build_id, step, index), self._lock)

    def size(self, build_id: int, step: int, index: int) -> int | None:
        with self._lock:
            log = self._logs.get((build_id, step, index))
            return len(log.data) if log is not None else None

    def chunks(self, build_id: int, step: int, index: int, *, offset: int = 0) -> Iterator[LogChunk]:
        with self._lock:
            log = self._logs.get((build_id, step, index))
            if log is None:
                return
            writes = list(log.writes)  # the writes so far; later ones wait for the next call
        start = 0
        for end, time, stream in writes:
            begin = max(start, offset)
            while begin < end:
                piece_end = min(end, start + ((begin - start) // _MAX_CHUNK + 1) * _MAX_CHUNK)
                with self._lock:
                    piece = bytes(log.data[begin:piece_end])
                yield LogChunk(type=stream, time=time, data=piece, offset=begin)
                begin += len(piece)
            start = end

    def read(
        self, build_id: int, step: int, index: int, *, offset: int = 0, length: int | None = None
    ) -> bytes:
        with self._lock:
            log = self._logs.get((build_id, step, index))
            if log is None or (length is not None and length <= 0):
                return b""
            offset = max(offset, 0)
            return bytes(log.data[offset : None if length is None else offset + length])

    def delete_build(self, build_id: int) -> None:
        with self._lock:
            for key in [k for k in self._logs if k[0] == build_id]:
                del self._logs[key]

    def text(self, build_id: int, step: int, index: int) -> str:
        """The whole log decoded as UTF-8 (with replacement characters)."""
        return self.read(build_id, step, index).decode("utf-8", "replace")
