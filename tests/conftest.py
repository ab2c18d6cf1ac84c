"""Fixtures shared by every test folder. Keep each one small; say what it needs from the machine."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa

POSTGRES_URL_ENV = "CIRCLET_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _libpq_url(url: str) -> sa.URL:
    """The URL with a plain `postgresql` scheme, which both libpq and make_engine accept."""
    return sa.make_url(url).set(drivername="postgresql")


@pytest.fixture(scope="session")
def _postgres_server() -> sa.URL:
    """The test server's URL, once it answers; skips (fails when CI=true) if it does not."""
    url = _libpq_url(os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL))
    try:
        with psycopg.connect(url.render_as_string(hide_password=False), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = (
            f"PostgreSQL is unreachable at {url.render_as_string(hide_password=True)} ({exc}); "
            f"start it or set {POSTGRES_URL_ENV}"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return url


@pytest.fixture
def postgres_url(_postgres_server: sa.URL) -> Iterator[str]:
    """A PostgreSQL URL whose connections work in a fresh, empty schema, dropped afterwards.

    Dispose engines made from it before the test ends (a connection left in a transaction would
    keep the schema from being dropped).
    """
    schema = f"circlet_test_{uuid.uuid4().hex[:12]}"
    server = _postgres_server.render_as_string(hide_password=False)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield _postgres_server.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False
        )
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
