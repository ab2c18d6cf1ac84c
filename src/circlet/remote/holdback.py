"""Starts of actions held back a moment, as the local runner processes do (executors/child.py).

Most steps of a build take a millisecond or two; reporting each one started and then finished
costs two calls to the server where one says it all. So `action_started` is held START_DELAY
seconds: a step that ends sooner is reported once, finished; a step still running then is
reported started by a thread, so a watcher sees it at most about START_DELAY late.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from circlet.core.model import Action

log = logging.getLogger("circlet.remote.holdback")

START_DELAY = 0.02  # seconds an action's start waits for its end before it is sent

_Key = tuple[int, int, int]  # build id, step, container index


class HeldStarts:
    """Starts waiting to be sent. `hold` and `release` from the runner's threads; one thread of
    its own sends the starts that came due."""

    def __init__(self, send: Callable[[int, Action], None], delay: float = START_DELAY) -> None:
        self._send = send
        self.delay = delay
        self._held: dict[_Key, tuple[float, Action]] = {}
        self._sending: set[_Key] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def hold(self, build_id: int, action: Action) -> None:
        key = (build_id, action.step, action.index)
        with self._cond:
            self._held[key] = (time.monotonic() + self.delay, action)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="circlet-held-starts", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def release(self, build_id: int, action: Action) -> bool:
        """Before the action's end is sent: True when its start was never sent (it never will
        be); False once it was, after waiting for a send in progress, so the end comes last."""
        key = (build_id, action.step, action.index)
        with self._cond:
            if self._held.pop(key, None) is not None:
                return True
            while key in self._sending:
                self._cond.wait()
            return False

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._held:
                    self._cond.wait()
                key, (due, action) = min(self._held.items(), key=lambda item: item[1][0])
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                del self._held[key]
                self._sending.add(key)
            try:
                self._send(key[0], action)
            except Exception:  # the end of the action, sent later, says everything anyway
                log.exception("event=action_start_not_sent build_id=%s step=%s", key[0], key[1])
            finally:
                with self._cond:
                    self._sending.discard(key)
                    self._cond.notify_all()
