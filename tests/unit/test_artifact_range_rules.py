"""The byte-range rules of artifact downloads (http/artifacts.py): Range parsing table-driven,
If-Range, and reading a range from a stream that can seek and from one that cannot (a pipe)."""

from __future__ import annotations

import io
import os
import threading
import time
from datetime import UTC, datetime
from typing import IO

import pytest

from circlet.core.blobs import BlobInfo
from circlet.core.errors import NotFound
from circlet.http.artifacts import (
    CHUNK,
    UNSATISFIABLE,
    _opened,
    byte_range,
    entity_tag,
    http_date,
    if_range_holds,
    read_chunks,
)
from circlet.testing.blobs import InMemoryBlobStore

U = UNSATISFIABLE


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        pytest.param("bytes=0-9", 100, (0, 10), id="first-last"),
        pytest.param("bytes=90-200", 100, (90, 100), id="last-clipped"),
        pytest.param("bytes=99-99", 100, (99, 100), id="last-byte"),
        pytest.param("bytes=40-", 100, (40, 100), id="open"),
        pytest.param("bytes=-30", 100, (70, 100), id="suffix"),
        pytest.param("bytes=-300", 100, (0, 100), id="suffix-over-size"),
        pytest.param("BYTES = 1-2", 100, (1, 3), id="unit-case-and-spaces"),
        pytest.param("bytes=1-2, ", 100, (1, 3), id="empty-list-elements"),
        pytest.param("bytes=1-" + "9" * 5000, 100, (1, 100), id="huge-last"),
        pytest.param("bytes=-" + "9" * 5000, 100, (0, 100), id="huge-suffix"),
        pytest.param("bytes=100-", 100, U, id="start-at-size"),
        pytest.param("bytes=" + "9" * 5000 + "-", 100, U, id="huge-start"),
        pytest.param("bytes=-0", 100, U, id="empty-suffix"),
        pytest.param("bytes=0-", 0, U, id="empty-file"),
        pytest.param("bytes=-1", 0, U, id="empty-file-suffix"),
        pytest.param("bytes=5-4", 100, None, id="last-before-first"),
        pytest.param("bytes=0-1,3-4", 100, None, id="two-ranges"),
        pytest.param("bytes=-", 100, None, id="only-dash"),
        pytest.param("bytes=", 100, None, id="nothing"),
        pytest.param("bytes", 100, None, id="no-equals"),
        pytest.param("bytes=1", 100, None, id="no-dash"),
        pytest.param("bytes=1-2-3", 100, None, id="two-dashes"),
        pytest.param("bytes=+1-2", 100, None, id="sign"),
        pytest.param("bytes=\u0661-2", 100, None, id="non-ascii-digit"),
        pytest.param("bytes=1 - 2", 100, None, id="space-inside"),
        pytest.param("lines=1-2", 100, None, id="other-unit"),
    ],
)
def test_byte_range(header: str, size: int, expected: object) -> None:
    assert byte_range(header, size) == expected


INFO = BlobInfo(key="artifacts/1/0/a", size=10, created_at=datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC))


@pytest.mark.parametrize(
    ("value", "holds"),
    [
        pytest.param(entity_tag(INFO), True, id="etag"),
        pytest.param(" " + entity_tag(INFO), True, id="etag-spaced"),
        pytest.param("W/" + entity_tag(INFO), False, id="weak-etag"),
        pytest.param(
            entity_tag(BlobInfo(key=INFO.key, size=11, created_at=INFO.created_at)), False, id="other-size"
        ),
        pytest.param("Mon, 06 May 2024 07:08:09 GMT", True, id="date"),
        pytest.param("Mon, 06 May 2024 07:08:10 GMT", False, id="other-date"),
        pytest.param("Mon, 06 May 2024 07:08:09 -0000", False, id="date-without-zone"),
        pytest.param("yesterday", False, id="no-date"),
        pytest.param("", False, id="empty"),
    ],
)
def test_if_range_holds(value: str, holds: bool) -> None:
    assert http_date(INFO.created_at) == "Mon, 06 May 2024 07:08:09 GMT"
    assert if_range_holds(value, INFO) is holds


DATA = bytes(range(256)) * (3 * CHUNK // 256 + 41)


class Tracked(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[int] = []

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.reads.append(len(chunk))
        return chunk


@pytest.mark.parametrize(
    ("start", "stop"),
    [(0, None), (0, len(DATA)), (CHUNK + 3, None), (5, 2 * CHUNK + 9), (len(DATA) - 1, len(DATA)), (7, 7)],
)
def test_read_chunks_seeks_a_seekable_stream(start: int, stop: int | None) -> None:
    stream = Tracked(DATA)
    pieces = list(read_chunks(stream, start, stop))
    assert b"".join(pieces) == DATA[start:stop]
    assert all(len(piece) <= CHUNK for piece in pieces)
    assert sum(stream.reads) == len(DATA[start:stop])  # nothing read before `start`
    assert stream.closed


@pytest.mark.parametrize(
    ("start", "stop"), [(0, None), (CHUNK + 3, None), (5, 2 * CHUNK + 9), (2 * CHUNK, 2 * CHUNK + 1)]
)
def test_read_chunks_skips_by_reading_a_pipe(start: int, stop: int | None) -> None:
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        try:
            with open(write_fd, "wb") as sink:
                sink.write(DATA)
        except BrokenPipeError:  # the reader stopped at `stop` and closed its end
            pass

    writer = threading.Thread(target=feed)
    writer.start()
    stream = open(read_fd, "rb")  # noqa: SIM115 (read_chunks closes it)
    assert not stream.seekable()
    try:
        pieces = list(read_chunks(stream, start, stop))
    finally:
        writer.join(timeout=30)
    assert b"".join(pieces) == DATA[start:stop]
    assert all(len(piece) <= CHUNK for piece in pieces)
    assert stream.closed


def test_read_chunks_closes_a_stream_dropped_half_way() -> None:
    stream = io.BytesIO(DATA)
    pieces = read_chunks(stream, 10, None)
    assert len(next(pieces)) == CHUNK
    pieces.close()
    assert stream.closed


class ReplacedOnce(InMemoryBlobStore):
    """A store whose blob is replaced (by another writer) just after the first open."""

    def __init__(self) -> None:
        super().__init__()
        self.opens = 0

    def open(self, key: str) -> IO[bytes]:
        stream = super().open(key)
        self.opens += 1
        if self.opens == 1:
            time.sleep(0.002)  # (a new write time)
            self.put(key, io.BytesIO(b"the second version, longer"))
        return stream


def test_a_blob_replaced_while_opened_is_opened_again_so_headers_match_the_bytes() -> None:
    store = ReplacedOnce()
    store.put("artifacts/1/0/a.txt", io.BytesIO(b"first"))

    info, stream = _opened(store, "artifacts/1/0/a.txt", headers_only=False)

    assert stream is not None
    with stream:
        assert stream.read() == b"the second version, longer"
    assert info.size == len(b"the second version, longer") and store.opens == 2


def test_a_missing_blob_is_not_found_and_head_opens_nothing() -> None:
    store = ReplacedOnce()
    with pytest.raises(NotFound):
        _opened(store, "artifacts/1/0/none", headers_only=False)
    store.put("artifacts/1/0/a.txt", io.BytesIO(b"x"))
    assert _opened(store, "artifacts/1/0/a.txt", headers_only=True)[1] is None and store.opens == 0
