"""Action reports of a worker's runner process, sent to the server in batches.

A build of three short steps reported one call per event costs the server (and the runner) ten
HTTP requests; most of them are a step's end followed at once by the next step's start. Here
`action_started` / `action_finished` wait up to GATHER seconds and go together in one call to
the gateway's `POST /builds/{id}/reports` (remote/gateway.py); a start whose action ends within
that time is not sent at all (its end says it all), and a build's end carries what is still
waiting. A watcher sees an event at most about GATHER late (the holdback of remote/holdback.py,
which this replaces for workers, waited as long).

Calls for one build are sent in order, one batch at a time, by one thread; a call that fails on
the way is resent by the client (remote/client.py), through a server restart.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from circlet.core.model import Action
from circlet.executors import protocol

log = logging.getLogger("circlet.executors.report_batch")

GATHER = 0.02  # seconds an action report waits for others before it is sent

_Report = tuple[str, Action]  # ("started" | "finished", the action)


class ReportBatcher:
    """Batches the action reports of the builds of one runner process. `client` is a
    remote.client.RunnerClient whose build token for the build is set (build_started)."""

    def __init__(self, client: Any, gather: float = GATHER) -> None:
        self._client = client
        self.gather = gather
        self._cond = threading.Condition()
        self._pending: dict[int, list[_Report]] = {}
        self._due: dict[int, float] = {}  # build -> monotonic time its batch goes
        self._sending: set[int] = set()
        self._thread: threading.Thread | None = None

    def action_started(self, build_id: int, action: Action) -> None:
        self._add(build_id, "started", action)

    def action_finished(self, build_id: int, action: Action) -> None:
        self._add(build_id, "finished", action)

    def build_finished(self, build_id: int, end: dict[str, Any]) -> None:
        """Send what waits for the build together with its end (`end`: the body of the
        gateway's /finished). Blocking: returns once the server has it."""
        items = self._take(build_id)
        self._send(build_id, items, end)

    def drop(self, build_id: int) -> None:
        """Forget the build's waiting reports (it was fenced: report nothing more)."""
        with self._cond:
            self._pending.pop(build_id, None)
            self._due.pop(build_id, None)

    # ------------------------------------------------------------ internals

    def _add(self, build_id: int, op: str, action: Action) -> None:
        with self._cond:
            items = self._pending.setdefault(build_id, [])
            if op == "finished":  # a start not sent yet: the end says it all
                key = (action.step, action.index)
                items[:] = [(o, a) for o, a in items if not (o == "started" and (a.step, a.index) == key)]
            items.append((op, action))
            self._due.setdefault(build_id, time.monotonic() + self.gather)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="circlet-reports", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _take(self, build_id: int) -> list[_Report]:
        """The build's waiting reports, once no batch of it is on the way (order)."""
        with self._cond:
            while build_id in self._sending:
                self._cond.wait()
            self._due.pop(build_id, None)
            return self._pending.pop(build_id, [])

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    due = [b for b, at in self._due.items() if at <= now and b not in self._sending]
                    if due:
                        break
                    waits = [at - now for b, at in self._due.items() if b not in self._sending]
                    self._cond.wait(max(0.001, min(waits)) if waits else None)
                batches = [(b, self._pending.pop(b, [])) for b in due]
                for b in due:
                    self._due.pop(b, None)
                    self._sending.add(b)
            for build_id, items in batches:
                try:
                    self._send(build_id, items, None)
                except Exception as exc:  # the server refused (4xx) or stayed away too long
                    log.warning(
                        "event=reports_not_sent build_id=%s count=%s error=%r", build_id, len(items), exc
                    )
                finally:
                    with self._cond:
                        self._sending.discard(build_id)
                        self._cond.notify_all()

    def _send(self, build_id: int, items: list[_Report], end: dict[str, Any] | None) -> None:
        if not items and end is None:
            return
        body: dict[str, Any] = {
            "actions": [{"op": op, "action": protocol.encode_action(action)} for op, action in items]
        }
        if end is not None:
            body["finished"] = end
        headers = self._client.build_headers(build_id)
        self._client.call("POST", f"/builds/{build_id}/reports", json=body, headers=headers)
