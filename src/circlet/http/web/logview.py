"""Windows of an action's log as HTML, and the live stream of a running one.

A log can be hundreds of megabytes: the page shows its tail (TAIL_BYTES) and fetches earlier
windows on demand, each found through the log index (LogStore.chunks seeks by offset, it does
not scan). The live stream (server-sent events) sends what was written since the last offset
and skips ahead when a step writes faster than a page could show, saying so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from circlet.core.model import ActionStatus, Build
from circlet.http.web.ansi import AnsiHtml
from circlet.service import Circlet

log = logging.getLogger("circlet.web")

TAIL_BYTES = 64 * 1024  # what a page shows of a log at first
WINDOW_BYTES = 256 * 1024  # what "load earlier" adds
STREAM_BEHIND_LIMIT = 512 * 1024  # a stream further behind than this jumps to the tail
POLL_SECONDS = 0.25  # between two looks at a log that grows
IDLE_POLL_SECONDS = 2.0  # at most between two looks at a log that does not
MAX_STREAMS = 200  # live log streams open at once in one server (StreamSlots)
MAX_STREAMS_PER_SESSION = 12  # ... and for one signed-in session
BUSY_RETRY_MS = 5000  # a refused stream tries again after this
STREAM_SECONDS = 25.0  # a stream ends after this; EventSource reconnects from its last offset
_LINE_SEARCH = 4096  # how far a window's start may move to begin on a whole line


@dataclass(frozen=True, kw_only=True)
class LogWindow:
    """Bytes [start, end) of a log as HTML; `size` is the log's size when read."""

    html: str
    start: int
    end: int
    size: int

    def json(self) -> dict[str, object]:
        return {"html": self.html, "start": self.start, "end": self.end, "size": self.size}


def window(
    circlet: Circlet, build: Build, step: int, index: int, *, start: int, end: int | None
) -> LogWindow:
    """The log from `start` to `end` (None: to the end as of now), at most WINDOW_BYTES of it
    (a request for more gets its first WINDOW_BYTES: a 100 MB log is never held whole). A window
    that starts inside a line begins at the next line instead (unless that is more than
    _LINE_SEARCH away)."""
    size = circlet.logs.size(build.id or 0, step, index) or 0
    stop = min(size if end is None else min(end, size), max(0, start) + WINDOW_BYTES)
    start = max(0, min(start, stop))
    if start > 0:
        before = circlet.logs.read(build.id or 0, step, index, offset=start - 1, length=_LINE_SEARCH + 1)
        newline = before.find(b"\n")
        if newline >= 0 and start + newline <= stop:
            start += newline  # the byte after the newline (before[0] is the byte at start-1)
    converter = AnsiHtml()
    parts: list[str] = []
    reached = start
    for chunk in circlet.log_chunks(build, step, index, offset=start):
        if chunk.offset >= stop:
            break
        data = chunk.data[: stop - chunk.offset]
        parts.append(converter.feed(data, chunk.time))
        reached = chunk.offset + len(data)
    parts.append(converter.finish())
    return LogWindow(html="".join(parts), start=start, end=reached, size=max(size, reached))


def tail(circlet: Circlet, build: Build, step: int, index: int, nbytes: int = TAIL_BYTES) -> LogWindow:
    size = circlet.logs.size(build.id or 0, step, index) or 0
    return window(circlet, build, step, index, start=max(0, size - nbytes), end=None)


def _event(name: str, payload: dict[str, object], event_id: int | None = None) -> bytes:
    lines = [f"event: {name}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(payload))
    return ("\n".join(lines) + "\n\n").encode()


class StreamSlots:
    """How many live log streams are open, in all and per session (a browser with many tabs).

    A stream holds no thread (it sleeps in the event loop and borrows a pool thread for each
    look at the store), but each look costs a few queries: the caps keep a crowd of watchers
    from starving the API. A stream refused answers `busy` and the page retries later.
    Thread-safe; one per application (`slots`)."""

    def __init__(self, *, total: int = MAX_STREAMS, per_session: int = MAX_STREAMS_PER_SESSION) -> None:
        self.total = total
        self.per_session = per_session
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}

    def acquire(self, key: str) -> bool:
        with self._lock:
            if sum(self._open.values()) >= self.total or self._open.get(key, 0) >= self.per_session:
                return False
            self._open[key] = self._open.get(key, 0) + 1
            return True

    def release(self, key: str) -> None:
        with self._lock:
            left = self._open.get(key, 0) - 1
            if left > 0:
                self._open[key] = left
            else:
                self._open.pop(key, None)

    def count(self) -> int:
        with self._lock:
            return sum(self._open.values())


def slots(request: Request) -> StreamSlots:
    """The application's StreamSlots (made on first use)."""
    state = request.app.state
    if not hasattr(state, "web_stream_slots"):
        state.web_stream_slots = StreamSlots()
    found: StreamSlots = state.web_stream_slots
    return found


@dataclass(frozen=True, kw_only=True)
class _Look:
    """One look at a running action: its status, whether it is over, its log's size."""

    status: ActionStatus
    finished: bool
    size: int


def _look(circlet: Circlet, build: Build, step: int, index: int) -> _Look:
    action = circlet.action(build, step, index)
    now = circlet.build_by_id(build.id or 0)
    size = circlet.logs.size(build.id or 0, step, index) or 0
    # a step left "running" by a runner that died ends with its build
    finished = action.status is not ActionStatus.RUNNING or now is None or now.finished
    return _Look(status=action.status, finished=finished, size=size)


async def stream(
    request: Request, circlet: Circlet, build: Build, step: int, index: int, offset: int, *, key: str = ""
) -> AsyncIterator[bytes]:
    """Server-sent events: `chunk` {html, start, end} as the log grows, `skipped` {from, to}
    when it jumped ahead, then `end` {status} once the action finished and everything was sent;
    `busy` {retry_ms} (and nothing else) when too many streams are open (StreamSlots, `key`: the
    session). Ends after STREAM_SECONDS (the browser reconnects with Last-Event-ID = the last
    offset). Looks at the log every POLL_SECONDS while it grows, up to IDLE_POLL_SECONDS when
    it does not."""
    taken = slots(request)
    if not taken.acquire(key):
        log.warning("event=web_stream_refused open=%s", taken.count())
        yield _event("busy", {"retry_ms": BUSY_RETRY_MS})
        return
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STREAM_SECONDS
        converter = AnsiHtml(at_line_start=False) if offset else AnsiHtml()
        pause = POLL_SECONDS
        yield b"retry: 1000\n\n"
        while True:
            look = await run_in_threadpool(_look, circlet, build, step, index)
            size = look.size
            if size - offset > STREAM_BEHIND_LIMIT:
                jump = size - TAIL_BYTES
                yield _event("skipped", {"from": offset, "to": jump})
                offset, converter = jump, AnsiHtml(at_line_start=False)
            grew = size > offset
            if grew:
                piece = await run_in_threadpool(_read, circlet, build, step, index, offset, size, converter)
                if piece.end > offset:
                    yield _event("chunk", piece.json(), piece.end)
                    offset = piece.end
            if look.finished and offset >= size:
                yield _event("end", {"status": look.status.value, "end": offset})
                return
            if loop.time() > deadline or await request.is_disconnected():
                return
            pause = POLL_SECONDS if grew else min(pause * 2, IDLE_POLL_SECONDS)
            await asyncio.sleep(pause)
    finally:
        taken.release(key)


def _read(
    circlet: Circlet, build: Build, step: int, index: int, offset: int, stop: int, converter: AnsiHtml
) -> LogWindow:
    parts: list[str] = []
    reached = offset
    for chunk in circlet.log_chunks(build, step, index, offset=offset):
        if chunk.offset >= stop:
            break
        data = chunk.data[: stop - chunk.offset]
        parts.append(converter.feed(data, chunk.time))
        reached = chunk.offset + len(data)
    return LogWindow(html="".join(parts), start=offset, end=reached, size=stop)
