"""InMemorySessionStore: the fake of core/sessions.py SessionStore (contract:
tests/contract/test_session_store.py runs against it and against store/sessions_sql.py)."""

from __future__ import annotations

from circlet.core.sessions import MemorySessionStore


class InMemorySessionStore(MemorySessionStore):
    """The in-memory SessionStore (also Circlet's default); `sessions` (by id) is there for
    tests to read."""
