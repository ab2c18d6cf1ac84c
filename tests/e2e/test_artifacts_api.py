"""Artifacts and caches end to end: a real `circlet serve` (runner processes, the filesystem blob
store), real git repositories; the v1.1 artifact list, downloads with every auth form, a path
escape refused, and a cache carried from one build to the next by prefix."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from pycircleci.api import Api

from circlet.harness import ServerProcess, commit_files, config_yaml, make_repo

pytestmark = pytest.mark.timeout(180)

P = "/api/v1.1/project/gh/acme/widget"
BINARY = bytes(range(256)) * 4096  # 1 MiB of every byte value

STEPS: list[str | dict[str, Any]] = [
    "checkout",
    {
        "run": "mkdir -p out/deep && cp blob.bin out/deep/"
        " && echo '<script>alert(1)</script>' > out/page.html"
        " && echo '{\"a\": 1}' > 'out/with space.json' && echo $CIRCLE_BUILD_NUM > number.txt"
    },
    {"store_artifacts": {"path": "out"}},
    {"store_artifacts": {"path": "number.txt", "destination": "meta"}},
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    repo = tmp_path / "widget"
    make_repo(repo, {".circleci/config.yml": config_yaml(STEPS)})
    (repo / "blob.bin").write_bytes(BINARY)
    commit_files(repo, {}, message="a binary file")  # commits everything in the tree
    srv = ServerProcess(tmp_path / "data", slots=2)
    with srv:
        srv.cli("project", "add", "gh/acme/widget", "--repo", str(repo))
        srv.make_token()
        yield srv, repo


def client(srv: ServerProcess, token: bool = True) -> httpx.Client:
    headers = {"Circle-Token": srv.token} if token else {}
    return httpx.Client(base_url=srv.base, headers=headers, timeout=30)


def trigger_and_wait(srv: ServerProcess) -> dict[str, Any]:
    with client(srv) as http:
        number = http.post(P + "/tree/main").json()["build_num"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            build = http.get(f"{P}/{number}").json()
            if build["lifecycle"] == "finished":
                return dict(build)
            time.sleep(0.1)
    raise AssertionError("the build did not finish")


def test_artifacts_are_listed_and_download_with_every_auth_form(
    server: tuple[ServerProcess, Path], tmp_path: Path
) -> None:
    srv, _ = server
    build = trigger_and_wait(srv)
    assert build["outcome"] == "success", build
    n = build["build_num"]
    with client(srv) as http:
        listed = http.get(f"{P}/{n}/artifacts").json()
        assert [(a["path"], a["pretty_path"], a["node_index"]) for a in listed] == [
            ("meta/number.txt", "meta/number.txt", 0),
            ("project/out/deep/blob.bin", "project/out/deep/blob.bin", 0),
            ("project/out/page.html", "project/out/page.html", 0),
            ("project/out/with space.json", "project/out/with space.json", 0),
        ]
        latest = http.get(f"{P}/latest/artifacts", params={"branch": "main"}).json()
        assert latest == listed
        assert http.get(f"{P}/latest/artifacts", params={"branch": "nope"}).status_code == 404
    expected = {
        "meta/number.txt": (f"{n}\n".encode(), "text/plain"),
        "project/out/deep/blob.bin": (BINARY, "application/octet-stream"),
        "project/out/page.html": (b"<script>alert(1)</script>\n", "text/html"),
        "project/out/with space.json": (b'{"a": 1}\n', "application/json"),
    }
    basic = "Basic " + base64.b64encode(f"{srv.token}:".encode()).decode()
    with httpx.Client(timeout=30) as anonymous:
        for artifact in listed:
            body, media = expected[artifact["path"]]
            url = artifact["url"]
            assert url.startswith(f"{srv.base}/api/v1.1/project/github/acme/widget/{n}/artifacts/0/")
            signed = anonymous.get(url)  # a browser link: the signature is the credential
            assert signed.status_code == 200 and signed.content == body
            assert signed.headers["content-type"].startswith(media)
            assert signed.headers["content-length"] == str(len(body))
            assert signed.headers["content-security-policy"] == "sandbox"
            bare = srv.base + urlsplit(url).path
            assert anonymous.get(bare).status_code == 404  # private project, no token
            assert anonymous.get(bare, headers={"Circle-Token": srv.token}).content == body
            assert anonymous.get(bare, headers={"Authorization": basic}).content == body
            assert anonymous.get(bare, params={"circle-token": srv.token}).content == body
            # circleci 1.2.2 appends `?circle-token=` raw, even to a URL with a query
            assert (
                anonymous.get(url.replace("&sig=", "&sig=A") + f"?circle-token={srv.token}").content == body
            )
        forged = anonymous.get(listed[0]["url"].replace("&sig=", "&sig=A"))
        assert forged.status_code == 404 and forged.json() == {"message": "Project not found"}
        other = anonymous.get(
            f"{srv.base}{P}/{n}/artifacts/0/nothing/here", params={"circle-token": srv.token}
        )
        assert other.status_code == 404 and other.json() == {"message": "Artifact not found"}
        escape = anonymous.get(
            f"{srv.base}{P}/{n}/artifacts/0/../../../etc/passwd", params={"circle-token": srv.token}
        )
        assert escape.status_code == 404
    # the published pycircleci client lists and downloads them as it does from CircleCI
    api = Api(token=srv.token, url=srv.base + "/api")
    for artifact in api.get_artifacts("acme", "widget", n):
        saved = api.download_artifact(artifact["url"], destdir=str(tmp_path))
        assert Path(saved).read_bytes() == expected[artifact["path"]][0]


def test_a_path_escape_fails_the_step_and_stores_nothing(server: tuple[ServerProcess, Path]) -> None:
    srv, repo = server
    commit_files(
        repo,
        {
            ".circleci/config.yml": config_yaml(
                [{"run": "ln -s /etc etc-link"}, {"store_artifacts": {"path": "etc-link"}}]
            )
        },
        message="escape",
    )
    build = trigger_and_wait(srv)
    assert build["outcome"] == "failed"
    action = build["steps"][2]["actions"][0]
    assert action["status"] == "failed"
    with httpx.Client(timeout=30) as anonymous:
        log = anonymous.get(action["output_url"]).json()
    assert "outside this build's directories" in "".join(c["message"] for c in log)
    with client(srv) as http:
        assert http.get(f"{P}/{build['build_num']}/artifacts").json() == []


def test_a_cache_is_restored_in_the_next_build_by_prefix_until_cleared(
    server: tuple[ServerProcess, Path],
) -> None:
    srv, repo = server
    steps: list[str | dict[str, Any]] = [
        "checkout",
        {"restore_cache": {"keys": ["v1-deps-{{ .Branch }}-", "v1-deps-"]}},
        {"run": "test -f deps/made-by && cat deps/made-by > restored.txt || echo none > restored.txt"},
        {"run": "mkdir -p deps && echo $CIRCLE_BUILD_NUM > deps/made-by"},
        {"save_cache": {"key": "v1-deps-{{ .Branch }}-{{ .BuildNum }}", "paths": ["deps"]}},
        {"store_artifacts": {"path": "restored.txt"}},
    ]
    commit_files(repo, {".circleci/config.yml": config_yaml(steps)}, message="cache")

    def restored(build: dict[str, Any]) -> bytes:
        assert build["outcome"] == "success", build
        with client(srv) as http:
            (artifact,) = http.get(f"{P}/{build['build_num']}/artifacts").json()
            return http.get(artifact["url"]).content

    first = trigger_and_wait(srv)
    assert restored(first) == b"none\n"
    second = trigger_and_wait(srv)
    assert restored(second) == f"{first['build_num']}\n".encode()
    third = trigger_and_wait(srv)
    assert restored(third) == f"{second['build_num']}\n".encode()  # the newest of the prefix
    with client(srv) as http:
        assert http.delete(P + "/build-cache").status_code == 200
    fourth = trigger_and_wait(srv)
    assert restored(fourth) == b"none\n"


def test_a_workflow_job_attaches_what_the_job_it_requires_persisted(
    server: tuple[ServerProcess, Path],
) -> None:
    srv, repo = server
    config = """
version: 2
jobs:
  build:
    docker: [{image: cimg/base:stable}]
    steps:
      - run: mkdir -p dist && echo "built by $CIRCLE_BUILD_NUM" > dist/app.txt
      - persist_to_workspace: {root: ., paths: [dist]}
  deploy:
    docker: [{image: cimg/base:stable}]
    steps:
      - attach_workspace: {at: ~/ws}
      - run: cat ~/ws/dist/app.txt && test -f ~/ws/dist/app.txt
workflows:
  ship:
    jobs:
      - build
      - deploy: {requires: [build]}
"""
    commit_files(repo, {".circleci/config.yml": config}, message="workflow")
    with client(srv) as http:
        assert http.post(P + "/build", json={"branch": "main"}).status_code == 200
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            builds = {
                b["workflows"]["job_name"]: b
                for b in http.get(P, params={"limit": 5}).json()
                if b.get("workflows")
            }
            if "deploy" in builds and builds["deploy"]["lifecycle"] == "finished":
                break
            time.sleep(0.2)
        deploy = builds["deploy"]
        assert deploy["outcome"] == "success", deploy
        full = http.get(f"{P}/{deploy['build_num']}").json()
        action = full["steps"][-1]["actions"][0]
        log = "".join(c["message"] for c in httpx.get(action["output_url"]).json())
        assert log.strip() == f"built by {builds['build']['build_num']}"
