"""Web sessions kept by the server (issue #7): the port and the in-memory store.

A signed-in browser holds a random secret in its `circlet_session` cookie; the server keeps
only the secret's sha256 (the session id) with the API token it stands for, when it expires and
when it was ended. Signing out ends the row, so a copied cookie stops working everywhere; revoking
the token ends its sessions too (the token is looked up on every check, and deleting it deletes
its sessions). `Circlet.start_session` / `session_token` / `end_session` (accounts.py) are the verbs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

SESSION_LIFETIME = timedelta(days=14)  # a session lasts two weeks, then sign in again
FORGET_AFTER = timedelta(days=1)  # ended or expired sessions are deleted this long after


@dataclass(frozen=True, kw_only=True)
class WebSession:
    """One sign-in: `id` is the sha256 hex of the cookie's secret (the secret is never stored)."""

    id: str
    token_id: int
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None = None

    def live(self, now: datetime) -> bool:
        """Not ended and not expired at `now`."""
        return self.ended_at is None and now < self.expires_at


class SessionStore(Protocol):
    """Where web sessions live. Every method is one transaction; thread-safe."""

    def create(self, *, token_id: int, secret_hash: str, created_at: datetime, expires_at: datetime) -> None:
        """Record a new session of the token (the token must exist)."""
        ...

    def find(self, secret_hash: str, now: datetime) -> int | None:
        """The token id of the session with this id if it is live at `now`; None otherwise."""
        ...

    def end(self, secret_hash: str, now: datetime) -> bool:
        """End the session at `now`; True when it was live (ending it twice, or ending an
        expired or unknown one, is fine and answers False)."""
        ...

    def forget(self, before: datetime) -> int:
        """Delete the sessions that ended or expired before `before`; how many were deleted."""
        ...


class MemorySessionStore:
    """SessionStore in a dict behind a lock: sessions end when the process does. The default of
    a Circlet made without a store (tests); bootstrap gives the server the SQL store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sessions: dict[str, WebSession] = {}

    def create(self, *, token_id: int, secret_hash: str, created_at: datetime, expires_at: datetime) -> None:
        with self._lock:
            self.sessions[secret_hash] = WebSession(
                id=secret_hash, token_id=token_id, created_at=created_at, expires_at=expires_at
            )

    def find(self, secret_hash: str, now: datetime) -> int | None:
        with self._lock:
            found = self.sessions.get(secret_hash)
        return found.token_id if found is not None and found.live(now) else None

    def end(self, secret_hash: str, now: datetime) -> bool:
        with self._lock:
            found = self.sessions.get(secret_hash)
            if found is None or not found.live(now):
                return False
            self.sessions[secret_hash] = replace(found, ended_at=now)
            return True

    def forget(self, before: datetime) -> int:
        with self._lock:
            gone = [
                key
                for key, s in self.sessions.items()
                if s.expires_at < before or (s.ended_at is not None and s.ended_at < before)
            ]
            for key in gone:
                del self.sessions[key]
            return len(gone)
