"""A LogWriter that streams an action's output to the server, batched.

`write` only appends a frame (frames.py) to the writer's pending bytes and asks the client's one
Flusher thread to send them: it never waits for the network, so the step's output pump is never
slowed by it, unless PENDING_MAX bytes are waiting (the server is down for long): then `write`
sends them itself, which holds the step back rather than growing memory without bound. The
flusher sends FLUSH_INTERVAL after the first unsent write, so what a step prints is on the server
within FLUSH_INTERVAL plus a round trip (API readers see it well within a second).

Each append names the log offset of its first byte; bytes stay pending until the server has
acknowledged them, so a resend after a lost answer or a server restart duplicates nothing.
`close` sends what is left and returns once the server has it.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING

from circlet.remote import frames
from circlet.remote.errors import GatewayError

if TYPE_CHECKING:
    from circlet.remote.client import RunnerClient

log = logging.getLogger("circlet.remote.logs")

FLUSH_INTERVAL = 0.2  # seconds between a write and its sending
PENDING_MAX = 8 << 20  # unsent bytes at which write() sends them itself (back-pressure)


class RemoteLogWriter:
    """LogWriter of one action on a remote worker. write/close from the action's thread; the
    flusher thread sends in between."""

    def __init__(self, client: RunnerClient, build_id: int, step: int, index: int) -> None:
        self._client = client
        self._path = f"/builds/{build_id}/logs/{step}/{index}"
        self._build_id = build_id
        self._pending = bytearray()  # frames not yet acknowledged by the server
        self._pending_data = 0  # output bytes in them
        self._acked = 0  # output bytes the server has: the offset of the next batch
        self._lock = threading.Lock()  # guards the three above
        self._send_lock = threading.Lock()  # one batch in flight per writer
        self._closed = False
        self.error: GatewayError | None = None  # the last failure of a background send

    @property
    def size(self) -> int:
        """Output bytes written so far (sent or not)."""
        with self._lock:
            return self._acked + self._pending_data

    def write(self, data: bytes, at: datetime, stream: str = "out") -> None:
        if self._closed:
            raise ValueError("write to a closed log writer")
        if not data:
            return
        frame = frames.pack(data, at, stream)
        with self._lock:
            self._pending += frame
            self._pending_data += len(data)
            full = len(self._pending) >= PENDING_MAX
        if full:
            self.flush()
        else:
            self._client.flusher.want(self)

    def flush(self) -> None:
        """Send everything pending; blocking. GatewayError when the server stays unreachable."""
        with self._send_lock:
            while True:
                with self._lock:
                    if not self._pending:
                        return
                    body, count, offset = bytes(self._pending), self._pending_data, self._acked
                answer = self._client.call(
                    "POST",
                    self._path,
                    params={"offset": offset},
                    content=body,
                    headers={
                        **self._client.build_headers(self._build_id),
                        "content-type": frames.CONTENT_TYPE,
                    },
                    ok=(409,),
                )
                size = int(answer.json()["size"])
                with self._lock:
                    if answer.status_code == 409:
                        # The server lost bytes it had acknowledged (its log was removed): write on
                        # at its end rather than never again.
                        log.warning("event=log_rebased path=%s offset=%s size=%s", self._path, offset, size)
                        self._acked = size
                        continue
                    del self._pending[: len(body)]
                    self._pending_data -= count
                    self._acked = offset + count

    def send_quietly(self) -> None:
        """flush() for the flusher thread: a failure is kept for close() to raise."""
        try:
            self.flush()
        except GatewayError as exc:
            self.error = exc
            log.error("event=log_send_failed path=%s error=%r", self._path, exc.message)
        except Exception as exc:  # never kill the flusher thread
            self.error = GatewayError(f"{type(exc).__name__}: {exc}")
            log.exception("event=log_send_failed path=%s", self._path)

    def close(self) -> None:
        """Send what is left (blocking); idempotent. GatewayError if it could not be sent."""
        if self._closed:
            return
        self._closed = True
        self._client.flusher.discard(self)
        self.flush()


class Flusher:
    """One thread per client sending the pending output of every writer that asked, once per
    FLUSH_INTERVAL: many actions' writes cost one request per action per interval."""

    def __init__(self, interval: float = FLUSH_INTERVAL) -> None:
        self.interval = interval
        self._wanted: dict[int, RemoteLogWriter] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def want(self, writer: RemoteLogWriter) -> None:
        with self._cond:
            if id(writer) in self._wanted:
                return
            self._wanted[id(writer)] = writer
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name="circlet-log-flusher", daemon=True)
                self._thread.start()
            self._cond.notify()

    def discard(self, writer: RemoteLogWriter) -> None:
        with self._cond:
            self._wanted.pop(id(writer), None)

    def stop(self) -> None:
        """Send what is pending and stop the thread."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._wanted and not self._stopped:
                    self._cond.wait()
                if not self._wanted:
                    return
            if not self._stopped:
                time.sleep(self.interval)  # let the output of this interval gather
            with self._cond:
                writers = list(self._wanted.values())
                self._wanted.clear()
            for writer in writers:
                writer.send_quietly()
