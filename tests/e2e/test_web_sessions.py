"""Server-side web sessions on a real `circlet serve` (issue #7): signing out ends the session
for every copy of its cookie, an expired session is refused, revoking the token ends its
sessions, and the database keeps only the sha256 of the cookie's secret.

Sessions made by hand (expired, or ended from another process) are written into the server's
own database by a second set of services on the same data folder.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from circlet.bootstrap import App, build_services
from circlet.core.model import Token
from circlet.harness import ServerProcess, config_yaml, make_repo
from circlet.service import hash_token
from circlet.settings import load_settings
from circlet.store.sql import make_engine

pytestmark = pytest.mark.timeout(120)


@dataclass
class Env:
    server: ServerProcess
    seed: App  # services on the server's data folder, for writing sessions by hand


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("web-sessions")
    make_repo(root / "repo", {".circleci/config.yml": config_yaml([{"run": "true"}])})
    server = ServerProcess(root / "data", slots=1)
    server.data_dir.mkdir(parents=True)
    server.cli("migrate")
    server.cli("project", "add", "gh/acme/widget", "--repo", str(root / "repo"))
    server.cli("user", "add", "ada", "--admin")
    server.token = server.cli("token", "create", "--user", "ada").stdout.strip()
    seed = build_services(load_settings({"CIRCLET_DATA_DIR": str(server.data_dir)}), migrate_db=False)
    with server:
        yield Env(server=server, seed=seed)


def _new_token(env: Env) -> tuple[str, Token]:
    secret = env.server.cli("token", "create", "--user", "ada").stdout.strip()
    token = env.seed.circlet.store.find_token(hash_token(secret))
    assert token is not None and token.id is not None
    return secret, token


def _csrf(client: httpx.Client, path: str = "/login") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert found is not None
    return found.group(1)


def _sign_in(client: httpx.Client, token: str) -> str:
    signed_in = "circlet_session" in client.cookies  # then /login redirects: take the form's field from /
    csrf = _csrf(client, "/" if signed_in else "/login")
    answer = client.post("/login", data={"token": token, "csrf": csrf, "next": "/"})
    assert answer.status_code == 303, answer.text
    return client.cookies["circlet_session"]


def _with_cookie(env: Env, value: str) -> httpx.Client:
    return httpx.Client(base_url=env.server.base, timeout=30, cookies={"circlet_session": value})


def _refused(answer: httpx.Response) -> bool:
    return answer.status_code == 303 and answer.headers["location"].startswith("/login")


def _session_rows(env: Env) -> list[tuple[str, int, object]]:
    engine = make_engine(env.seed.settings.effective_database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT id, token_id, ended_at FROM web_sessions"))
            return [tuple(row) for row in rows]
    finally:
        engine.dispose()


def test_signing_out_ends_the_session_for_a_copied_cookie(env: Env) -> None:
    secret, token = _new_token(env)
    with httpx.Client(base_url=env.server.base, timeout=30) as browser:
        cookie = _sign_in(browser, secret)
        assert secret not in cookie and token.token_hash not in cookie
        with _with_cookie(env, cookie) as thief:
            assert thief.get("/").status_code == 200  # the copy works while the session lives
            out = browser.post("/logout", data={"csrf": _csrf(browser, "/")})
            assert out.status_code == 303 and out.headers["location"] == "/login"
            assert _refused(browser.get("/"))
            assert _refused(thief.get("/"))  # same server: no cache delay
            assert _refused(thief.get("/gh/acme/widget"))
    # only the secret's sha256 is stored, and the row says it ended
    row = next(r for r in _session_rows(env) if r[0] == hash_token(cookie))
    assert row[1] == token.id and row[2] is not None
    assert all(cookie not in r for r in _session_rows(env))


def test_signing_in_again_ends_the_browsers_previous_session(env: Env) -> None:
    secret, _ = _new_token(env)
    with httpx.Client(base_url=env.server.base, timeout=30) as browser:
        first = _sign_in(browser, secret)
        second = _sign_in(browser, secret)
        assert first != second
        with _with_cookie(env, first) as old, _with_cookie(env, second) as new:
            assert _refused(old.get("/")) and new.get("/").status_code == 200


def test_an_expired_session_is_refused(env: Env) -> None:
    _, token = _new_token(env)
    now = env.seed.circlet.clock()
    sessions = env.seed.circlet.sessions
    assert token.id is not None
    sessions.create(
        token_id=token.id,
        secret_hash=hash_token("expired-1"),
        created_at=now - timedelta(days=15),
        expires_at=now - timedelta(seconds=1),
    )
    sessions.create(  # the same, still live: proves the hand-made rows are the ones checked
        token_id=token.id,
        secret_hash=hash_token("live-1"),
        created_at=now,
        expires_at=now + timedelta(hours=1),
    )
    with _with_cookie(env, "expired-1") as expired, _with_cookie(env, "live-1") as live:
        assert _refused(expired.get("/"))
        assert live.get("/").status_code == 200


def test_a_session_ended_by_another_process_stops_within_seconds(env: Env) -> None:
    secret, _ = _new_token(env)
    with httpx.Client(base_url=env.server.base, timeout=30) as browser:
        cookie = _sign_in(browser, secret)
        assert browser.get("/").status_code == 200
        env.seed.circlet.end_session(cookie)  # another server on the same database
        deadline = time.monotonic() + 15  # the server trusts a checked session for 5 s
        while browser.get("/").status_code == 200:
            assert time.monotonic() < deadline, "the ended session still works"
            time.sleep(0.5)
        assert _refused(browser.get("/"))


def test_revoking_the_token_ends_all_its_sessions(env: Env) -> None:
    secret, token = _new_token(env)
    with (
        httpx.Client(base_url=env.server.base, timeout=30) as one,
        httpx.Client(base_url=env.server.base, timeout=30) as two,
    ):
        cookies = [_sign_in(one, secret), _sign_in(two, secret)]
        assert one.get("/").status_code == 200 and two.get("/").status_code == 200
        env.server.cli("token", "revoke", str(token.id))
        deadline = time.monotonic() + 15
        while one.get("/").status_code == 200 or two.get("/").status_code == 200:
            assert time.monotonic() < deadline, "a session outlived its token"
            time.sleep(0.5)
        for cookie in cookies:
            with _with_cookie(env, cookie) as copy:
                assert _refused(copy.get("/"))
        # signing in with the revoked token is refused too
        answer = one.post("/login", data={"token": secret, "csrf": _csrf(one)})
        assert answer.status_code == 401
