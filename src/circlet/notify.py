"""Outbound notification webhooks (api-v1.1.md section 10; docs/webhooks.md).

When a build finishes the service hands its URLs to `Notifier.enqueue`, which records one
pending Delivery per URL and returns: nothing here ever runs on a build's thread but that insert.
One background thread sends due deliveries, one at a time, with httpx: `{"payload": <the build
exactly as GET P/:build_num shows it, rendered when sent>}`, signed with HMAC-SHA256 of the
body. A 2xx answer delivers it; anything else (another status, a timeout, a refused connection)
is retried on a schedule of delays and marked failed after the last attempt. Every attempt is
recorded in the DeliveryStore, which also makes the queue survive a restart: `start` picks up
whatever a previous process left pending.

Delivery is at least once: a process killed during a request sends that delivery again after
the restart; receivers can tell by the `X-Circlet-Delivery` id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from circlet import __version__
from circlet.core.model import Build, BuildView
from circlet.core.ports import DeliveryStore
from circlet.core.projects import Delivery, DeliveryState
from circlet.wire import Links, build_details

log = logging.getLogger("circlet.notify")

# Seconds to wait after each failed attempt; one attempt more than there are delays.
DEFAULT_SCHEDULE: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 1800.0)
TIMEOUT = 5.0  # seconds per request (connect, write, read)
EVENT = "build-finished"
SIGNATURE_HEADER = "X-Circlet-Signature"
DELIVERY_HEADER = "X-Circlet-Delivery"
EVENT_HEADER = "X-Circlet-Event"
MAX_ERROR = 500  # characters of an error kept in last_error


def utcnow() -> datetime:
    return datetime.now(UTC)


def signature(secret: bytes, body: bytes) -> str:
    """The `X-Circlet-Signature` value: `sha256=` + hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def encode_payload(build_json: dict[str, Any]) -> bytes:
    """The request body: `{"payload": ...}` as compact UTF-8 JSON."""
    return json.dumps({"payload": build_json}, separators=(",", ":"), ensure_ascii=False).encode()


def _shown(url: str) -> str:
    """A URL for the log, without query or credentials (they may hold a receiver's secret)."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"
    except ValueError:
        return "<invalid url>"


class Notifier:
    """Webhook deliveries: `enqueue` records them, one background thread sends them.

    `schedule` holds the delays after each failed attempt (tests pass tiny ones); `poll_interval`
    is how often the thread looks for due retries when nothing wakes it. `transport` replaces
    httpx's network transport (tests). Thread-safe.
    """

    def __init__(
        self,
        *,
        deliveries: DeliveryStore,
        links: Links,
        secret: bytes,
        schedule: Sequence[float] = DEFAULT_SCHEDULE,
        timeout: float = TIMEOUT,
        poll_interval: float = 1.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.deliveries = deliveries
        self._links = links
        self._secret = secret
        self._schedule = tuple(schedule)
        self._timeout = timeout
        self._poll_interval = poll_interval
        self._transport = transport
        self._clock = clock
        self._views: Callable[[int], BuildView | None] | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._enqueue_lock = threading.Lock()

    # ------------------------------------------------------------ the service's side

    def enqueue(self, build: Build, urls: list[tuple[str, str]]) -> list[Delivery]:
        """Record a pending delivery per (url, source) and wake the sender; returns at once.

        The first source given for a URL wins (the service lists the config's URLs first); a URL
        this build already has a delivery for is skipped, so calling it twice sends nothing twice.
        Blocking: one insert per new URL, no network.
        """
        if build.id is None or not urls:
            return []
        added: list[Delivery] = []
        now = self._clock()
        with self._enqueue_lock:
            seen = {d.url for d in self.deliveries.list_deliveries(build_id=build.id, limit=10_000)}
            for url, source in urls:
                if url in seen:
                    continue
                seen.add(url)
                delivery = self.deliveries.add_delivery(
                    Delivery(build_id=build.id, url=url, source=source, next_attempt_at=now, created_at=now)
                )
                added.append(delivery)
                log.info(
                    "event=webhook_queued delivery_id=%s build_id=%s source=%s url=%s",
                    delivery.id,
                    build.id,
                    source,
                    _shown(url),
                )
        if added:
            self._wake.set()
        return added

    def list_deliveries(
        self, *, build_id: int | None = None, project_id: int | None = None, limit: int = 100
    ) -> list[Delivery]:
        return self.deliveries.list_deliveries(build_id=build_id, project_id=project_id, limit=limit)

    # ------------------------------------------------------------ the sending thread

    def start(self, views: Callable[[int], BuildView | None]) -> None:
        """Start the sending thread (no-op if it runs). `views` reads a build by id as the API
        shows it; deliveries left pending by a previous process are sent as they come due."""
        self._views = views
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._wake.set()
        self._thread = threading.Thread(target=self._run, name="circlet-notifier", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, waiting up to `timeout` for a request in flight. Idempotent.

        Pending deliveries stay pending in the store for the next start.
        """
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        with httpx.Client(timeout=self._timeout, transport=self._transport, follow_redirects=False) as client:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    self.send_due(client)
                except Exception:  # the store is unreachable, say: try again later
                    log.exception("event=notifier_error")
                self._wake.wait(self._poll_interval)

    def send_due(self, client: httpx.Client) -> int:
        """Make one attempt at every delivery due now; returns how many were attempted."""
        views = self._views
        if views is None:
            raise RuntimeError("the notifier was not started")
        sent = 0
        while not self._stopping.is_set():
            due = self.deliveries.due_deliveries(self._clock(), limit=100)
            for delivery in due:
                if self._stopping.is_set():
                    break
                self.deliveries.save_delivery(self._attempt(client, delivery, views))
                sent += 1
            if len(due) < 100:
                break
        return sent

    def _attempt(
        self, client: httpx.Client, delivery: Delivery, views: Callable[[int], BuildView | None]
    ) -> Delivery:
        """Send one delivery once; the delivery as it is afterwards (to be saved)."""
        attempt = delivery.attempts + 1
        status: int | None = None
        error: str | None = None
        try:
            view = views(delivery.build_id)
            body = encode_payload(build_details(view, self._links)) if view is not None else None
        except Exception as exc:
            log.exception("event=webhook_render_error delivery_id=%s", delivery.id)
            view, body, error = None, None, f"could not render the build: {exc}"
        if view is None and error is None:
            return self._finish(delivery, attempt, DeliveryState.FAILED, None, "the build no longer exists")
        if body is not None:
            status, error = self._post(client, delivery, body)
        if error is None:
            return self._finish(delivery, attempt, DeliveryState.DELIVERED, status, None)
        if attempt > len(self._schedule):
            return self._finish(delivery, attempt, DeliveryState.FAILED, status, error)
        delay = self._schedule[attempt - 1]
        log.info(
            "event=webhook_retry delivery_id=%s attempt=%s status=%s error=%r retry_in=%s url=%s",
            delivery.id,
            attempt,
            status,
            error,
            delay,
            _shown(delivery.url),
        )
        return replace(
            delivery,
            attempts=attempt,
            last_status=status,
            last_error=error,
            next_attempt_at=self._clock() + timedelta(seconds=delay),
        )

    def _post(self, client: httpx.Client, delivery: Delivery, body: bytes) -> tuple[int | None, str | None]:
        """POST the body; (status, None) for a 2xx answer, else (status or None, what went wrong).
        The answer's body is never read."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"circlet/{__version__}",
            SIGNATURE_HEADER: signature(self._secret, body),
            DELIVERY_HEADER: str(delivery.id),
            EVENT_HEADER: EVENT,
        }
        try:
            with client.stream("POST", delivery.url, content=body, headers=headers) as response:
                status = response.status_code
        except httpx.TimeoutException:
            return None, f"no answer within {self._timeout:g} s"
        except Exception as exc:  # refused, DNS, TLS, an invalid URL...
            return None, (f"{type(exc).__name__}: {exc}")[:MAX_ERROR]
        if 200 <= status < 300:
            return status, None
        return status, f"HTTP {status}"

    def _finish(
        self, delivery: Delivery, attempt: int, state: DeliveryState, status: int | None, error: str | None
    ) -> Delivery:
        event = "webhook_delivered" if state is DeliveryState.DELIVERED else "webhook_failed"
        log_at = logging.INFO if state is DeliveryState.DELIVERED else logging.WARNING
        log.log(
            log_at,
            "event=%s delivery_id=%s build_id=%s attempts=%s status=%s error=%r url=%s",
            event,
            delivery.id,
            delivery.build_id,
            attempt,
            status,
            error,
            _shown(delivery.url),
        )
        return replace(
            delivery,
            state=state,
            attempts=attempt,
            last_status=status,
            last_error=error,
            next_attempt_at=None,
            finished_at=self._clock(),
        )
