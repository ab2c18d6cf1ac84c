"""Artifact list and download (http/artifacts.py) and build-cache clearing, in-process on the fakes
(httpx's ASGI transport, InMemoryBlobStore)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI

from circlet.core import signing
from circlet.core.blobkeys import artifact_key, cache_meta_key
from circlet.core.model import Build, Outcome, Project
from circlet.http.app import create_app
from circlet.http.artifacts import artifact_path
from circlet.http.deps import Services
from circlet.service import Circlet
from circlet.testing import (
    FakeSourceHost,
    InMemoryBuildStore,
    InMemoryLogStore,
    InMemoryProjectSettingsStore,
    RecordingDispatcher,
)
from circlet.testing.blobs import InMemoryBlobStore
from circlet.wire import Links

BASE_URL = "https://ci.example.com"
SECRET = b"s" * 32
CONFIG = "version: 2\njobs:\n  build:\n    docker: [{image: x}]\n    steps: [{run: make}]\n"
P = "/api/v1.1/project/gh/acme/widget"


@dataclass
class Env:
    app: FastAPI
    svc: Circlet
    blobs: InMemoryBlobStore
    project: Project
    build: Build
    token: str

    def get(self, url: str, token: str | None = None) -> httpx.Response:
        headers = {"Circle-Token": token} if token else {}

        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
                return await client.get(url, headers=headers)

        return asyncio.run(call())


@pytest.fixture
def env() -> Iterator[Env]:
    source = FakeSourceHost()
    blobs = InMemoryBlobStore()
    links = Links(BASE_URL, SECRET)
    svc = Circlet(
        store=InMemoryBuildStore(),
        logs=InMemoryLogStore(),
        source=source,
        dispatcher=RecordingDispatcher(),
        settings=InMemoryProjectSettingsStore(),
        base_url=BASE_URL,
        blobs=blobs,
    )
    url = "https://git.example/acme/widget.git"
    source.add_commit(url, files={".circleci/config.yml": CONFIG}, message="First")
    project = svc.add_project(vcs_type="gh", username="acme", reponame="widget", repo_url=url)
    build = svc.trigger(project)
    now = datetime.now(UTC)
    svc.build_queued(build.id or 0, now)
    svc.build_started(build.id or 0, now, "w1")
    svc.build_finished(build.id or 0, Outcome.SUCCESS, now)
    _, token = svc.create_token(user=svc.ensure_user("root", admin=True))
    for node, path, data in ((1, "b.txt", b"one"), (0, "z/y x.html", b"<p>"), (0, "a.bin", b"\x00\xff")):
        blobs.put(artifact_key(build.id or 0, node, path), io.BytesIO(data))
    yield Env(create_app(Services(circlet=svc, links=links)), svc, blobs, project, build, token)
    svc.stop()


def test_the_list_is_by_node_then_path_with_signed_absolute_urls(env: Env) -> None:
    listed = env.get(f"{P}/{env.build.build_num}/artifacts", env.token).json()
    assert [(a["node_index"], a["path"], a["pretty_path"]) for a in listed] == [
        (0, "a.bin", "a.bin"),
        (0, "z/y x.html", "z/y x.html"),
        (1, "b.txt", "b.txt"),
    ]
    url = urlsplit(listed[1]["url"])
    assert f"{url.scheme}://{url.netloc}" == BASE_URL
    assert url.path == f"/api/v1.1/project/github/acme/widget/{env.build.build_num}/artifacts/0/z/y%20x.html"
    answer = env.get(f"{url.path}?{url.query}")  # no token: the signature is enough
    assert answer.status_code == 200 and answer.content == b"<p>"
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["content-security-policy"] == "sandbox"
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_downloads_without_a_valid_signature_need_a_token(env: Env) -> None:
    n = env.build.build_num
    canonical = artifact_path(env.project, n, 1, "b.txt")
    expired = signing.sign(SECRET, canonical, 1000)
    assert env.get(f"{canonical}?expires=1000&sig={expired}").status_code == 404
    other_file = signing.sign(SECRET, artifact_path(env.project, n, 1, "c.txt"), 2**40)
    assert env.get(f"{canonical}?expires={2**40}&sig={other_file}").status_code == 404
    assert env.get(f"{P}/{n}/artifacts/1/b.txt").json() == {"message": "Project not found"}
    assert env.get(f"{P}/{n}/artifacts/1/b.txt", env.token).content == b"one"
    missing = env.get(f"{P}/{n}/artifacts/1/nope.txt", env.token)
    assert (missing.status_code, missing.json()) == (404, {"message": "Artifact not found"})
    assert env.get(f"{P}/{n}/artifacts/x/b.txt", env.token).status_code == 404
    assert env.get(f"{P}/{n + 5}/artifacts/1/b.txt", env.token).status_code == 404


def test_latest_artifacts_are_those_of_the_newest_matching_build(env: Env) -> None:
    assert env.get(f"{P}/latest/artifacts?branch=main", env.token).json()[0]["path"] == "a.bin"
    assert env.get(f"{P}/latest/artifacts?branch=other", env.token).status_code == 404


def test_clearing_the_build_cache_deletes_this_projects_caches_only(env: Env) -> None:
    mine, theirs = cache_meta_key(env.project.id or 0, "v1-a"), cache_meta_key(99, "v1-a")
    env.blobs.put(mine, io.BytesIO(b"{}"))
    env.blobs.put(theirs, io.BytesIO(b"{}"))
    env.svc.clear_build_cache(env.project)
    assert env.blobs.stat(mine) is None and env.blobs.stat(theirs) is not None
    assert env.blobs.stat(artifact_key(env.build.id or 0, 1, "b.txt")) is not None  # artifacts stay
