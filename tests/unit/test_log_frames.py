"""Log append bodies of the runner gateway (remote/frames.py): round trip, skipping, refusals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from circlet.remote import frames

T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def test_frames_round_trip_with_stream_and_millisecond_time() -> None:
    body = frames.pack(b"hello ", T0) + frames.pack(b"", T0, "err") + frames.pack(b"world\n", T0, "err")
    got = list(frames.unpack(body))
    assert [(f.stream, f.at, f.data) for f in got] == [
        ("out", T0, b"hello "),
        ("err", T0, b""),
        ("err", T0, b"world\n"),
    ]


@pytest.mark.parametrize(
    ("count", "expected"),
    [(0, [b"abc", b"de"]), (2, [b"c", b"de"]), (3, [b"de"]), (4, [b"e"]), (5, []), (9, [])],
)
def test_skip_drops_what_the_server_has(count: int, expected: list[bytes]) -> None:
    batch = list(frames.unpack(frames.pack(b"abc", T0) + frames.pack(b"de", T0, "err")))
    kept = frames.skip(batch, count)
    assert [f.data for f in kept] == expected
    assert all(f.at == T0 for f in kept)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (frames.pack(b"abc", T0)[:5], "header cut short"),
        (frames.pack(b"abc", T0)[:-1], "is cut short"),
        (bytes([7]) + frames.pack(b"abc", T0)[1:], "unknown stream 7"),
        (frames.HEADER.pack(0, 2**62, 0), "impossible time"),  # not an OverflowError (a 500)
        (frames.HEADER.pack(0, -(2**62), 0), "impossible time"),
    ],
)
def test_malformed_bodies_are_value_errors(body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        list(frames.unpack(body))


def test_an_unknown_stream_cannot_be_packed() -> None:
    with pytest.raises(ValueError, match="unknown stream 'log'"):
        frames.pack(b"x", T0, "log")
