"""Write-behind for action records, so a quick step costs one database write, not two.

Runners report an action when it starts and when it ends. For a step that lasts a few
milliseconds, writing both rows synchronously costs more than the step. The journal keeps the
latest record of each action in memory and writes them in batches from one thread; a started
record that is superseded before the batch is written is never written at all.

Readers in this process see pending records through `pending()` (the service overlays them),
so nothing looks stale here; other processes see a record at most `delay` seconds late.
`flush(build_id)` writes a build's records at once; the service calls it before it changes a
build's lifecycle, so a finished build never has unwritten actions.
"""

from __future__ import annotations

import logging
import threading

from circlet.core.model import Action
from circlet.core.ports import BuildStore

log = logging.getLogger("circlet.journal")

Key = tuple[int, int]  # (step, index)


class ActionJournal:
    def __init__(self, store: BuildStore, *, delay: float = 0.1) -> None:
        self.store = store
        self.delay = delay
        self._pending: dict[int, dict[Key, Action]] = {}
        self._cond = threading.Condition()
        # Held while a batch is taken and written, so batches reach the store in the order
        # their records arrived (a flush can never be overtaken by an older batch).
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def put(self, build_id: int, action: Action) -> None:
        if self._closed:  # nothing runs in the background any more: write it now
            with self._write_lock:
                self._write({build_id: {(action.step, action.index): action}})
            return
        with self._cond:
            self._pending.setdefault(build_id, {})[(action.step, action.index)] = action
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._loop, name="circlet-journal", daemon=True)
                self._thread.start()
            self._cond.notify()

    def pending(self, build_id: int) -> list[Action]:
        with self._cond:
            return list(self._pending.get(build_id, {}).values())

    def flush(self, build_id: int | None = None) -> None:
        """Write now: one build's records, or all of them."""
        with self._write_lock:
            with self._cond:
                if build_id is None:
                    batch, self._pending = self._pending, {}
                else:
                    one = self._pending.pop(build_id, None)
                    batch = {build_id: one} if one else {}
            self._write(batch)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.flush()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
            # Let a quick step's start and end meet in memory before writing.
            threading.Event().wait(self.delay)
            self.flush()

    def _write(self, batch: dict[int, dict[Key, Action]]) -> None:
        for build_id, actions in batch.items():
            try:
                self.store.save_actions(build_id, list(actions.values()))
            except Exception:
                log.exception("event=journal_write_failed build_id=%s (kept for the next batch)", build_id)
                with self._cond:
                    mine = self._pending.setdefault(build_id, {})
                    for key, action in actions.items():
                        mine.setdefault(key, action)  # a newer record that arrived meanwhile wins
