"""RunnerClient: how a worker reaches the server's runner gateway (gateway.py).

One client per worker process; thread-safe (httpx's connection pool is). Calls that fail on the
way (connection refused or reset, a timeout, 502/503/504: the server restarts) are resent with
backoff for up to `retry_for` seconds, with the same idempotency key, so a server restart loses
no report; the gateway makes resends harmless. A 4xx answer is final: GatewayError. Log output
is batched per action and sent by one flusher thread every FLUSH_INTERVAL (logstream.py).

    client = RunnerClient(base_url, token)
    reporter = client.reporter()                 # RunReporter; build tokens kept per build
    runner = JobRunner(..., source=client.checkout_source(build_id), reporter=reporter)
    reply = client.heartbeat(info)               # HeartbeatReply: builds to cancel
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

import httpx

from circlet import __version__
from circlet.core.model import Action, Message, Outcome
from circlet.core.ports import LogWriter
from circlet.core.workers import HeartbeatReply, WorkerInfo
from circlet.executors import protocol
from circlet.remote import tokens
from circlet.remote.blob_client import HttpBlobStore
from circlet.remote.errors import GatewayError
from circlet.remote.holdback import START_DELAY, HeldStarts
from circlet.remote.logstream import Flusher, RemoteLogWriter
from circlet.remote.source import RemoteCheckout

log = logging.getLogger("circlet.remote.client")

RETRY_FOR = 600.0  # seconds a report is resent before the worker gives up (a long server restart)
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
RETRY_STATUSES = frozenset({502, 503, 504})


class RunnerClient:
    """The worker's side of the runner gateway. `close()` when done."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        retry_for: float = RETRY_FOR,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry_for = retry_for
        self._http = httpx.Client(
            base_url=self.base_url + tokens.PREFIX,
            headers={"authorization": f"Bearer {token}", "user-agent": f"circlet-worker/{__version__}"},
            timeout=timeout,
            transport=transport,
        )
        self._build_tokens: dict[int, str] = {}
        self._lock = threading.Lock()
        self.flusher = Flusher()

    # ---------------------------------------------------------------- what a worker uses

    def reporter(self) -> RemoteReporter:
        """A RunReporter reaching the server's service (one per runner process is enough)."""
        return RemoteReporter(self)

    def checkout_source(self, build_id: int) -> RemoteCheckout:
        """The CheckoutSource of one build (after its build_started): downloads the revision."""
        return RemoteCheckout(self, build_id)

    def blob_store(self, build_id: int) -> HttpBlobStore:
        """The server's BlobStore as build `build_id` may use it (after its build_started)."""
        return HttpBlobStore(self, build_id)

    def heartbeat(
        self, info: WorkerInfo, *, retry_for: float = 0.0, timeout: float | None = None
    ) -> HeartbeatReply:
        """Send one heartbeat; by default a single attempt (the heartbeat loop tries again).
        `timeout`: seconds to wait for the answer (default: the client's)."""
        answer = self.call("POST", "/heartbeat", json=info.to_dict(), retry_for=retry_for, timeout=timeout)
        return HeartbeatReply.from_dict(answer.json())

    def close(self) -> None:
        self.flusher.stop()
        self._http.close()

    def __enter__(self) -> RunnerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- build tokens

    def set_build_token(self, build_id: int, token: str) -> None:
        with self._lock:
            self._build_tokens[build_id] = token

    def forget_build(self, build_id: int) -> None:
        with self._lock:
            self._build_tokens.pop(build_id, None)

    def build_headers(self, build_id: int) -> dict[str, str]:
        with self._lock:
            token = self._build_tokens.get(build_id)
        if token is None:
            raise GatewayError(f"build {build_id} has no build token: build_started was not called here")
        return {tokens.BUILD_TOKEN_HEADER: token}

    # ---------------------------------------------------------------- calls

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | Callable[[], Iterator[bytes]] | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        retry_for: float | None = None,
        ok: tuple[int, ...] = (),
        timeout: float | None = None,
    ) -> httpx.Response:
        """One call, resent on connection problems for `retry_for` seconds (default: the client's)
        with one idempotency key. `content` is bytes, or a function giving the body's chunks anew
        for each attempt. Returns a 2xx answer or one whose status is in `ok`; GatewayError
        otherwise. `timeout`: per attempt (default: the client's)."""
        answer = self._send(
            method, path, json, content, params, headers, retry_for, ok, stream=False, timeout=timeout
        )
        return answer

    @contextlib.contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (),
    ) -> Iterator[httpx.Response]:
        """Like call, with the answer's body left to be streamed (`iter_bytes`) in the block. Only
        reaching the server is retried, not a body broken half-way."""
        answer = self._send(method, path, None, None, params, headers, None, ok, stream=True)
        try:
            yield answer
        finally:
            answer.close()

    def _send(
        self,
        method: str,
        path: str,
        json: Any,
        content: bytes | Callable[[], Iterator[bytes]] | None,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        retry_for: float | None,
        ok: tuple[int, ...],
        *,
        stream: bool,
        timeout: float | None = None,
    ) -> httpx.Response:
        limit = self.retry_for if retry_for is None else retry_for
        deadline = time.monotonic() + limit
        sent_headers = {tokens.IDEMPOTENCY_HEADER: uuid.uuid4().hex, **(headers or {})}
        delay = BACKOFF_FIRST
        attempt = 0
        while True:
            attempt += 1
            problem: str
            body = content() if callable(content) else content
            try:
                request = self._http.build_request(
                    method,
                    path,
                    json=json,
                    content=body,
                    params=params,
                    headers=sent_headers,
                    timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
                )
                answer = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if answer.is_success or answer.status_code in ok:
                    if attempt > 1:
                        log.info("event=gateway_reached path=%s attempts=%s", path, attempt)
                    return answer
                if stream:
                    answer.read()
                    answer.close()
                if answer.status_code not in RETRY_STATUSES:
                    raise GatewayError(_message(answer), answer.status_code)
                problem = f"HTTP {answer.status_code}"
            if time.monotonic() + delay > deadline:
                raise GatewayError(f"the server at {self.base_url} did not answer {method} {path}: {problem}")
            log.warning("event=gateway_retry path=%s attempt=%s problem=%r", path, attempt, problem)
            time.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, BACKOFF_MAX)


def _message(answer: httpx.Response) -> str:
    try:
        text = str(answer.json().get("message"))
    except (ValueError, AttributeError):
        text = answer.text[:200]
    return f"HTTP {answer.status_code} from {answer.request.method} {answer.request.url.path}: {text}"


class RemoteReporter:
    """RunReporter over the gateway. Calls block until the server has the report (resending
    through a server restart); the build's token from build_started is kept for later calls."""

    def __init__(self, client: RunnerClient, *, start_delay: float = START_DELAY) -> None:
        self._client = client
        self._starts = HeldStarts(self._send_start, start_delay)

    def _post(self, build_id: int, path: str, body: dict[str, Any]) -> httpx.Response:
        headers = self._client.build_headers(build_id)
        return self._client.call("POST", f"/builds/{build_id}/{path}", json=body, headers=headers)

    def build_queued(self, build_id: int, at: datetime) -> None:
        self._client.call("POST", f"/builds/{build_id}/queued", json={"at": protocol.encode_time(at)})

    def build_started(self, build_id: int, at: datetime, worker: str, node: int | None = None) -> bool:
        body: dict[str, Any] = {"at": protocol.encode_time(at), "worker": worker}
        if node is not None:
            body["node"] = node
        answer = self._client.call("POST", f"/builds/{build_id}/started", json=body).json()
        if answer.get("ok") and answer.get("build_token"):
            self._client.set_build_token(build_id, str(answer["build_token"]))
            return True
        return False

    def action_started(self, build_id: int, action: Action) -> None:
        """Held back START_DELAY seconds (holdback.py): a quick step costs one call, not two."""
        self._starts.hold(build_id, action)

    def _send_start(self, build_id: int, action: Action) -> None:
        self._post(build_id, "actions/started", {"action": protocol.encode_action(action)})

    def log_writer(self, build_id: int, step: int, index: int) -> LogWriter:
        return RemoteLogWriter(self._client, build_id, step, index)

    def action_finished(self, build_id: int, action: Action) -> None:
        self._starts.release(build_id, action)
        self._post(build_id, "actions/finished", {"action": protocol.encode_action(action)})

    def test_results(
        self, build_id: int, index: int, tests: list[dict[str, Any]], exceptions: list[dict[str, Any]]
    ) -> None:
        self._post(build_id, "tests", {"index": index, "tests": tests, "exceptions": exceptions})

    def build_finished(
        self,
        build_id: int,
        outcome: Outcome,
        at: datetime,
        messages: tuple[Message, ...] = (),
        node: int | None = None,
    ) -> None:
        body: dict[str, Any] = {
            "outcome": outcome.value,
            "at": protocol.encode_time(at),
            "messages": protocol.encode_messages(messages),
        }
        if node is not None:
            body["node"] = node
        self._post(build_id, "finished", body)
        self._client.forget_build(build_id)
