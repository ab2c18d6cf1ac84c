"""End to end: push webhooks and the branch poller on a real server with real git repositories."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from circlet.core.push import sign
from circlet.harness import ServerProcess, commit_files, config_yaml, git, make_repo

pytestmark = pytest.mark.timeout(180)

SLUG = "gh/acme/widget"
P = f"/api/v1.1/project/{SLUG}"
HOOK = "/api/v1.1/hooks/push"
ZERO = "0" * 40
CONFIG = config_yaml(
    ["checkout", {"run": {"name": "show", "command": "echo secret=${CIRCLET_PUSH_SECRET:-absent}"}}]
)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "widget"
    make_repo(path, {".circleci/config.yml": CONFIG, "README.md": "hello\n"})
    return path


def start(tmp_path: Path, repo: Path, **env: str) -> ServerProcess:
    srv = ServerProcess(tmp_path / "data", slots=2, env=env).start()
    srv.cli("project", "add", SLUG, "--repo", str(repo))
    srv.make_token()
    return srv


@pytest.fixture
def server(tmp_path: Path, repo: Path) -> Iterator[ServerProcess]:
    srv = start(tmp_path, repo)
    try:
        yield srv
    finally:
        srv.stop()


def payload(repo: Path, ref: str, after: str, *, full_name: str = "acme/widget") -> dict[str, Any]:
    """A GitHub push payload (the fields circlet reads, and a few it does not)."""
    return {
        "ref": ref,
        "before": ZERO,
        "after": after,
        "created": False,
        "deleted": after == ZERO,
        "repository": {"full_name": full_name, "clone_url": str(repo), "name": "widget"},
        "head_commit": {
            "id": after,
            "message": git(repo, "log", "-1", "--format=%B") if after != ZERO else "",
        },
        "pusher": {"name": "ada"},
    }


def deliver(
    server: ServerProcess,
    body: Any,
    *,
    event: str = "push",
    secret: str | None = None,
    path: str = HOOK,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(server.base + path, data=data, method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("X-GitHub-Event", event)
    if secret is not None:
        req.add_header("X-Hub-Signature-256", sign(secret, data))
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def too_large(server: ServerProcess) -> bytes:
    """The answer to a delivery declaring a body over 25 MB, of which nothing is sent: the server
    refuses it from the header, without waiting for (or buffering) the body."""
    host, port = urllib.parse.urlsplit(server.base).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        head = f"POST {HOOK} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        conn.sendall((head + f"Content-Length: {25 * 1024 * 1024 + 1}\r\n\r\n").encode())
        answer = b""
        while b"}" not in answer and (chunk := conn.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer
    return answer


def builds(server: ServerProcess) -> list[dict[str, Any]]:
    status, found = server.request("GET", P + "?limit=100")
    assert status == 200
    return list(found)


def test_a_push_webhook_builds_the_pushed_commit(server: ServerProcess, repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "feature/x")
    sha = commit_files(repo, {"f.txt": "f\n"}, message="Feature work")
    status, answer = deliver(server, payload(repo, "refs/heads/feature/x", sha))
    assert status == 201, answer
    (result,) = answer["builds"]
    assert result["project"] == SLUG and result["build_num"] == 1
    build = server.wait_finished(SLUG, 1)
    assert (build["branch"], build["vcs_revision"], build["why"]) == ("feature/x", sha, "github")
    assert build["outcome"] == "success"


def test_ci_skip_records_a_build_that_did_not_run(server: ServerProcess, repo: Path) -> None:
    sha = commit_files(repo, {"docs.md": "d\n"}, message="Fix the docs [skip ci]")
    status, answer = deliver(server, payload(repo, "refs/heads/main", sha))
    assert status in (200, 201), answer
    (build,) = builds(server)
    assert (build["lifecycle"], build["status"], build["outcome"]) == ("not_run", "not_run", None)
    assert build["dont_build"] == "ci-skip"
    assert build["vcs_revision"] == sha


TAGGED = "deployment:\n  release:\n    tag: /v.*/\n    commands: [echo release]\n"  # tags build (12.1)


def test_tags_deletions_pings_and_bad_deliveries(server: ServerProcess, repo: Path) -> None:
    sha = commit_files(repo, {"circle.yml": TAGGED}, message="Build v* tags")
    git(repo, "tag", "v1.0")
    status, answer = deliver(server, payload(repo, "refs/tags/v1.0", sha))
    assert status == 201, answer
    tagged = server.wait_finished(SLUG, answer["builds"][0]["build_num"])
    assert (tagged["vcs_tag"], tagged["vcs_revision"]) == ("v1.0", sha)
    assert deliver(server, payload(repo, "refs/heads/gone", ZERO)) == (
        200,
        {"message": "refs/heads/gone was deleted: nothing to build", "builds": []},
    )
    assert deliver(server, {"zen": "Keep it simple."}, event="ping") == (200, {"message": "pong"})
    status, answer = deliver(server, {}, event="issues")
    assert status == 202 and "ignored" in answer["message"]
    status, answer = deliver(
        server,
        payload(repo, "refs/heads/main", sha, full_name="acme/other")
        | {"repository": {"full_name": "acme/other"}},
    )
    assert (status, answer) == (404, {"message": "No circlet project builds acme/other"})
    status, answer = deliver(server, None, raw=b"{not json")
    assert (status, answer) == (400, {"message": "The push payload is not valid JSON"})
    status, answer = deliver(
        server, {"ref": "main", "after": sha, "repository": {"full_name": "acme/widget"}}
    )
    assert status == 400 and "refs/heads/<branch>" in answer["message"]
    assert b"The push payload is larger than 25 MB" in too_large(server)
    assert len(builds(server)) == 1  # only the tag built


def test_a_push_secret_is_required_once_set_and_never_reaches_builds(
    server: ServerProcess, repo: Path
) -> None:
    server.cli("project", "env", "set", SLUG, "CIRCLET_PUSH_SECRET", "s3cret")
    sha = git(repo, "rev-parse", "HEAD")
    body = payload(repo, "refs/heads/main", sha)
    status, answer = deliver(server, body)
    assert status == 403 and "must be signed" in answer["message"]
    status, answer = deliver(server, body, secret="wrong")
    assert status == 403 and "does not match" in answer["message"]
    assert builds(server) == []
    status, answer = deliver(server, body, secret="s3cret")
    assert status == 201, answer
    build = server.wait_finished(SLUG, 1)
    show = next(s for s in build["steps"] if s["name"] == "show")["actions"][0]
    with urllib.request.urlopen(show["output_url"] + "&file=true") as resp:
        assert resp.read().decode().strip() == "secret=absent"


def test_the_poller_builds_moved_branches_and_new_tags_once(tmp_path: Path, repo: Path) -> None:
    server = start(tmp_path, repo, CIRCLET_POLL_INTERVAL="0.3")
    try:
        time.sleep(1.0)  # the first round only learns the refs: nothing was built before
        assert builds(server) == []
        pushed = commit_files(repo, {"a.txt": "a\n", "circle.yml": TAGGED}, message="Pushed to main")
        found = _wait_builds(server, 1)
        assert (found[0]["branch"], found[0]["vcs_revision"], found[0]["why"]) == ("main", pushed, "github")
        git(repo, "tag", "v2")
        git(repo, "branch", "topic")
        found = _wait_builds(server, 3)
        assert {(b["branch"], b["vcs_tag"]) for b in found[:2]} == {("topic", None), (None, "v2")}
        # A webhook for a commit the poller then also sees: one build, not two.
        hooked = commit_files(repo, {"b.txt": "b\n"}, message="Pushed and hooked")
        status, _ = deliver(server, payload(repo, "refs/heads/main", hooked))
        assert status == 201
        time.sleep(1.5)
        assert [b["vcs_revision"] for b in builds(server)].count(hooked) == 1
        skipped = commit_files(repo, {"c.txt": "c\n"}, message="Polled [ci skip]")
        found = _wait_builds(server, 5)
        assert (found[0]["vcs_revision"], found[0]["dont_build"]) == (skipped, "ci-skip")
    finally:
        server.stop()


def _wait_builds(server: ServerProcess, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = builds(server)
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{len(found)} builds, expected {count}"
        time.sleep(0.1)
