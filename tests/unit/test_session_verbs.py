"""The session verbs of Circlet (accounts.py) on the in-memory fakes, with a clock we move."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from circlet.core.errors import InvalidRequest
from circlet.core.sessions import SESSION_LIFETIME
from circlet.service import Circlet, hash_token
from circlet.testing import (
    FakeSourceHost,
    InMemoryBuildStore,
    InMemoryLogStore,
    InMemoryProjectSettingsStore,
    InMemorySessionStore,
    RecordingDispatcher,
)

T0 = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _service(clock: Clock, sessions: InMemorySessionStore) -> Circlet:
    return Circlet(
        store=InMemoryBuildStore(),
        logs=InMemoryLogStore(),
        source=FakeSourceHost(),
        dispatcher=RecordingDispatcher(),
        settings=InMemoryProjectSettingsStore(),
        base_url="https://ci.example.com/",
        clock=clock,
        sessions=sessions,
    )


def test_a_session_stands_for_its_token_until_ended() -> None:
    clock, sessions = Clock(), InMemorySessionStore()
    svc = _service(clock, sessions)
    token, secret = svc.create_token(user=svc.ensure_user("ada"))
    cookie = svc.start_session(token)

    assert cookie != secret and len(cookie) >= 43
    assert list(sessions.sessions) == [hash_token(cookie)]  # the secret itself is not kept
    found = svc.session_token(cookie)
    assert found is not None and found.id == token.id
    assert svc.session_token(secret) is None  # the API token is not a session
    assert svc.session_token("") is None
    svc.end_session(cookie)
    assert svc.session_token(cookie) is None
    svc.end_session(cookie)  # twice is fine
    svc.end_session("never-made")


def test_sessions_expire_and_die_with_their_token() -> None:
    clock, sessions = Clock(), InMemorySessionStore()
    svc = _service(clock, sessions)
    token, _ = svc.create_token(user=svc.ensure_user("ada"))
    first, second = svc.start_session(token), svc.start_session(token)
    clock.now = T0 + SESSION_LIFETIME - timedelta(seconds=1)
    assert svc.session_token(first) is not None
    clock.now = T0 + SESSION_LIFETIME
    assert svc.session_token(first) is None

    clock.now = T0
    assert token.id is not None and svc.revoke_token(token.id)
    assert svc.session_token(second) is None


def test_old_sessions_are_forgotten_at_the_next_sign_in() -> None:
    clock, sessions = Clock(), InMemorySessionStore()
    svc = _service(clock, sessions)
    token, _ = svc.create_token(user=svc.ensure_user("ada"))
    ended = svc.start_session(token)
    svc.end_session(ended)
    kept = svc.start_session(token)
    clock.now = T0 + timedelta(days=2)
    latest = svc.start_session(token)
    assert set(sessions.sessions) == {hash_token(kept), hash_token(latest)}


def test_only_live_personal_tokens_start_sessions() -> None:
    svc = _service(Clock(), InMemorySessionStore())
    source = svc.source
    assert isinstance(source, FakeSourceHost)
    source.add_commit("/r/w", files={"README.md": "hi\n"}, message="First")
    project = svc.add_project(vcs_type="gh", username="acme", reponame="widget", repo_url="/r/w")
    project_token, _ = svc.create_token(project=project)
    with pytest.raises(InvalidRequest):
        svc.start_session(project_token)
    token, _ = svc.create_token(user=svc.ensure_user("ada"))
    assert token.id is not None and svc.revoke_token(token.id)
    assert svc.store.get_token(token.id) is None  # revoked: the store no longer gives it out
    with pytest.raises(InvalidRequest):
        svc.start_session(replace(token, revoked=True))
