"""GET /api/v1.1/admin/webhook-deliveries in-process (httpx's ASGI transport), on the fakes.

The notifier is not started: deliveries stay as the service recorded them (or as a test put
them in the fake store).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from circlet.core.model import Build, Outcome, Project, Scope
from circlet.core.projects import DeliveryState
from circlet.http.app import create_app
from circlet.http.deps import Services
from circlet.notify import Notifier
from circlet.service import Circlet
from circlet.testing import (
    FakeSourceHost,
    InMemoryBuildStore,
    InMemoryDeliveryStore,
    InMemoryLogStore,
    InMemoryProjectSettingsStore,
    RecordingDispatcher,
)
from circlet.wire import Links

BASE_URL = "https://ci.example.com"
SECRET = b"k" * 32
CONFIG = """\
version: 2
jobs:
  build:
    docker:
      - image: cimg/base:2024.01
    steps:
      - run: make test
notify:
  webhooks:
    - url: https://hooks.example/a
    - url: https://hooks.example/b?token=s3cret
"""
PATH = "/api/v1.1/admin/webhook-deliveries"


@dataclass
class Env:
    app: FastAPI
    svc: Circlet
    deliveries: InMemoryDeliveryStore
    widget: Project
    gadget: Project
    admin: str
    user: str
    project_token: str

    def get(self, token: str | None, **params: str) -> tuple[int, object]:
        headers = {"Circle-Token": token, "Accept": "application/json"} if token else {}

        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
                return await client.get(PATH, params=params, headers=headers)

        response = asyncio.run(call())
        return response.status_code, response.json()


def finish(svc: Circlet, project: Project) -> Build:
    build = svc.trigger(project)
    now = datetime.now(UTC)
    svc.build_queued(build.id or 0, now)
    svc.build_started(build.id or 0, now, "w1")
    svc.build_finished(build.id or 0, Outcome.SUCCESS, now)
    return build


@pytest.fixture
def env() -> Iterator[Env]:
    source = FakeSourceHost()
    store = InMemoryBuildStore()
    deliveries = InMemoryDeliveryStore(store)
    links = Links(BASE_URL, SECRET)
    svc = Circlet(
        store=store,
        logs=InMemoryLogStore(),
        source=source,
        dispatcher=RecordingDispatcher(),
        settings=InMemoryProjectSettingsStore(),
        base_url=BASE_URL,
        notifier=Notifier(deliveries=deliveries, links=links, secret=SECRET),
    )
    projects = []
    for name in ("widget", "gadget"):
        url = f"https://git.example/acme/{name}.git"
        source.add_commit(url, files={".circleci/config.yml": CONFIG}, message="First")
        projects.append(svc.add_project(vcs_type="gh", username="acme", reponame=name, repo_url=url))
    _, admin = svc.create_token(user=svc.ensure_user("root", admin=True))
    _, user = svc.create_token(user=svc.ensure_user("ada"))
    _, project_token = svc.create_token(project=projects[0], scope=Scope.ALL)
    app = create_app(Services(circlet=svc, links=links))
    yield Env(app, svc, deliveries, projects[0], projects[1], admin, user, project_token)
    svc.stop()


def test_only_an_administrator_gets_in(env: Env) -> None:
    assert env.get(None) == (401, {"message": "You must log in first."})
    assert env.get("ccl_unknown") == (401, {"message": "You must log in first."})
    assert env.get(env.user) == (403, {"message": "Permission denied"})
    assert env.get(env.project_token) == (403, {"message": "Permission denied"})
    assert env.get(env.admin) == (200, [])


def test_lists_deliveries_newest_first_with_their_build_and_project(env: Env) -> None:
    one = finish(env.svc, env.widget)
    (newest, older) = env.deliveries.list_deliveries(limit=2)
    env.deliveries.save_delivery(
        replace(newest, state=DeliveryState.FAILED, attempts=6, last_status=500, last_error="HTTP 500")
    )
    status, body = env.get(env.admin)
    assert status == 200
    assert isinstance(body, list) and len(body) == 2
    assert body[0] == {
        "id": newest.id,
        "project": "gh/acme/widget",
        "build_num": one.build_num,
        "url": "https://hooks.example/b?token=s3cret",
        "source": "config",
        "state": "failed",
        "attempts": 6,
        "last_status": 500,
        "last_error": "HTTP 500",
        "next_attempt_at": body[0]["next_attempt_at"],
        "created_at": body[0]["created_at"],
        "finished_at": None,
    }
    assert body[1]["url"] == "https://hooks.example/a" and body[1]["state"] == "pending"
    assert body[1]["created_at"].endswith("Z") and older.id == body[1]["id"]


def test_filters_by_project_build_and_limit(env: Env) -> None:
    w1, w2, g1 = finish(env.svc, env.widget), finish(env.svc, env.widget), finish(env.svc, env.gadget)
    assert (w1.build_num, w2.build_num, g1.build_num) == (1, 2, 1)

    def keys(**params: str) -> list[tuple[str, int]]:
        status, body = env.get(env.admin, **params)
        assert status == 200, body
        assert isinstance(body, list)
        return [(d["project"], d["build_num"]) for d in body]

    assert keys() == [("gh/acme/gadget", 1)] * 2 + [("gh/acme/widget", 2)] * 2 + [("gh/acme/widget", 1)] * 2
    assert keys(limit="3") == [("gh/acme/gadget", 1)] * 2 + [("gh/acme/widget", 2)]
    assert keys(project="gh/acme/widget") == [("gh/acme/widget", 2)] * 2 + [("gh/acme/widget", 1)] * 2
    assert keys(project="github/ACME/widget", build_num="1") == [("gh/acme/widget", 1)] * 2
    assert keys(project="gh/acme/gadget", build_num="1") == [("gh/acme/gadget", 1)] * 2


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        pytest.param({"project": "gh/acme/nothing"}, 404, "Project not found", id="unknown-project"),
        pytest.param({"project": "acme"}, 400, None, id="malformed-project"),
        pytest.param({"project": "gh/acme/widget", "build_num": "9"}, 404, "Build not found", id="no-build"),
        pytest.param({"build_num": "1"}, 400, None, id="build-num-needs-project"),
        pytest.param({"limit": "many"}, 400, None, id="limit-not-a-number"),
        pytest.param({"limit": "-1"}, 400, None, id="limit-negative"),
    ],
)
def test_bad_queries(env: Env, params: dict[str, str], status: int, message: str | None) -> None:
    got, body = env.get(env.admin, **params)
    assert got == status
    assert isinstance(body, dict) and isinstance(body["message"], str)
    if message is not None:
        assert body["message"] == message
