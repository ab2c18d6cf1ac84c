"""The body of a log append: the writes of one action, each with its time and stream, in binary.

A body is a sequence of frames, each a header `<BqI` (stream: 0 out, 1 err; the write's time
in epoch milliseconds; the data's length) followed by the data. No JSON, no base64: a batch of
1 MiB of output costs 1 MiB and 13 bytes per write on the wire.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

HEADER = struct.Struct("<BqI")
STREAMS = ("out", "err")
_CODES = {name: code for code, name in enumerate(STREAMS)}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLI = timedelta(milliseconds=1)
CONTENT_TYPE = "application/vnd.circlet.log-frames"


@dataclass(frozen=True, kw_only=True)
class Frame:
    """One write of an action's output."""

    stream: str  # "out" or "err"
    at: datetime
    data: bytes


def pack(data: bytes, at: datetime, stream: str = "out") -> bytes:
    """One frame; ValueError for an unknown stream."""
    code = _CODES.get(stream)
    if code is None:
        raise ValueError(f"unknown stream {stream!r} (expected 'out' or 'err')")
    return HEADER.pack(code, (at - _EPOCH) // _MILLI, len(data)) + data


def unpack(body: bytes) -> Iterator[Frame]:
    """The frames of a body, in order; ValueError when it is cut short or malformed."""
    view = memoryview(body)
    position = 0
    while position < len(view):
        if position + HEADER.size > len(view):
            raise ValueError(f"log frame header cut short at byte {position}")
        code, millis, length = HEADER.unpack_from(view, position)
        position += HEADER.size
        if code >= len(STREAMS):
            raise ValueError(f"log frame at byte {position - HEADER.size} has unknown stream {code}")
        if position + length > len(view):
            raise ValueError(f"log frame at byte {position - HEADER.size} is cut short")
        try:
            at = _EPOCH + millis * _MILLI
        except OverflowError:
            raise ValueError(f"log frame at byte {position - HEADER.size} has an impossible time") from None
        yield Frame(stream=STREAMS[code], at=at, data=bytes(view[position : position + length]))
        position += length


def skip(frames: list[Frame], count: int) -> list[Frame]:
    """The frames without their first `count` bytes of data (what the server already has)."""
    kept: list[Frame] = []
    for frame in frames:
        if count >= len(frame.data):
            count -= len(frame.data)
            continue
        kept.append(Frame(stream=frame.stream, at=frame.at, data=frame.data[count:]) if count else frame)
        count = 0
    return kept
