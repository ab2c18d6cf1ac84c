"""Deletes expired artifacts, caches and workspace layers (core/retention.py says which).

`circlet serve` runs a BlobJanitor thread that prunes once shortly after the start and then
every `every` seconds (an hour); `circlet blobs prune [--dry-run]` does one pass by hand.
Several servers sharing one blob folder may all prune: deletes are idempotent. A pass lists the
whole store once (one directory walk for the filesystem store).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from circlet.core.blobs import BlobStore
from circlet.core.retention import Expired, RetentionPolicy, expired

log = logging.getLogger("circlet.janitor")

FIRST_PASS_AFTER = 60.0  # seconds after the start: not while the server is busiest starting up


class BlobJanitor:
    """Prunes a blob store by a retention policy. Thread-safe; `prune` may be called directly."""

    def __init__(
        self,
        blobs: BlobStore,
        policy: RetentionPolicy,
        *,
        every: float = 3600.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.blobs = blobs
        self.policy = policy
        self.every = every
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one pass at a time

    def prune(self, *, dry_run: bool = False) -> Expired:
        """One pass: what expired (deleted unless `dry_run`)."""
        with self._lock:
            found = expired(self.blobs.list(""), self.clock(), self.policy)
            if dry_run:
                return found
            for prefix in found.prefixes:
                self.blobs.delete_prefix(prefix)
            sweep = getattr(self.blobs, "sweep", None)  # the filesystem store's leftovers of dead writers
            if callable(sweep):
                sweep()
        if found.prefixes:
            log.info(
                "event=blobs_pruned units=%s blobs=%s bytes=%s", len(found.prefixes), found.blobs, found.bytes
            )
        return found

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            wait = min(FIRST_PASS_AFTER, self.every)
            while not self._stop.wait(wait):
                try:
                    self.prune()
                except Exception:  # a full disk, a vanished folder: try again next time
                    log.exception("event=blob_prune_failed")
                wait = self.every

        self._thread = threading.Thread(target=loop, name="circlet-blob-janitor", daemon=True)
        self._thread.start()
        log.info(
            "event=janitor_started artifact_days=%s cache_days=%s workspace_days=%s",
            self.policy.artifact_days,
            self.policy.cache_days,
            self.policy.workspace_days,
        )

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
