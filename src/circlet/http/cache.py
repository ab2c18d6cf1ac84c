"""Rendered JSON of builds and build lists, kept while nothing they show can have changed.

An entry is valid for the service generation it was rendered at (`Circlet.generation`, bumped
by every write that can change what a project's builds look like) and for at most MAX_AGE
seconds (signed output URLs are renewed at least that often). Reading a finished build again,
the common case by far, then costs no query and no serialization.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable

MAX_AGE = 600.0  # seconds
MAX_ENTRIES = 4096


class RenderCache:
    """A bounded LRU of rendered bodies; thread-safe."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_age: float = MAX_AGE) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self._entries: OrderedDict[Hashable, tuple[int, float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, generation: int) -> bytes | None:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == generation and entry[1] > now:
                self._entries.move_to_end(key)
                return entry[2]
        return None

    def put(self, key: Hashable, generation: int, body: bytes) -> None:
        with self._lock:
            self._entries[key] = (generation, time.monotonic() + self.max_age, body)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
