"""The compatibility traps of api-v1.1.md section 12, one test per item, and the conventions of
sections 1, 3 and 4, on a real `circlet serve` with real git repositories.

Requests go out through http.client so that paths, headers and bodies are exactly what a
client sends (raw slashes, `//`, no Content-Type, Basic headers). One server for the module;
each test uses builds and names of its own, so the order of the tests does not matter.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from circlet.harness import ServerProcess, commit_files, config_yaml, git, make_repo

pytestmark = pytest.mark.timeout(180)

SLUG = "gh/acme/widget"
P = "/api/v1.1/project/gh/acme/widget"
V1 = "/api/v1/project/acme/widget"
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
NOT_FOUND = {"message": "Project not found"}
LOGIN_FIRST = {"message": "You must log in first."}
JSON_TYPE = "application/json;charset=utf-8"
SHALLOW_KEYS = {
    "build_num",
    "build_url",
    "branch",
    "vcs_revision",
    "vcs_tag",
    "vcs_url",
    "username",
    "reponame",
    "committer_name",
    "committer_email",
    "committer_date",
    "author_name",
    "author_email",
    "author_date",
    "subject",
    "body",
    "why",
    "user",
    "workflows",
    "pull_requests",
    "status",
    "lifecycle",
    "outcome",
    "dont_build",
    "usage_queued_at",
    "queued_at",
    "start_time",
    "stop_time",
    "build_time_millis",
    "parallel",
    "platform",
    "fleet",
}
ENV_STEP = (
    "echo url=$CIRCLE_BUILD_URL; echo branch=$CIRCLE_BRANCH; echo num=$NUM; echo obj=$OBJ; "
    "echo some=$SOME_VAR"
)


# ---------------------------------------------------------------- plumbing


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-cased names
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class World:
    srv: ServerProcess
    repo: Path
    token: str
    bob: str  # a user who is no member of any project
    status_token: str  # a project token with the `status` scope
    sha: str

    @property
    def base(self) -> str:
        return self.srv.base

    def send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: str | None = "header",
        token: str | None = None,
    ) -> Answer:
        """One request, sent as given: the path is not normalized or encoded."""
        secret = token if token is not None else self.token
        sent = {"Accept": "application/json", **(headers or {})}
        if auth == "header":
            sent["Circle-Token"] = secret
        elif auth == "basic":
            sent["Authorization"] = "Basic " + base64.b64encode(f"{secret}:".encode()).decode()
        elif auth == "basic-password":
            sent["Authorization"] = "Basic " + base64.b64encode(f":{secret}".encode()).decode()
        elif auth == "query":
            path += ("&" if "?" in path else "?") + "circle-token=" + secret
        conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in sent.items():
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            elif method in ("POST", "PUT", "DELETE"):
                conn.putheader("Content-Length", "0")
            conn.endheaders(body)
            resp = conn.getresponse()
            text = resp.read().decode()
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, text)
        finally:
            conn.close()

    def post_json(self, path: str, data: Any, **kw: Any) -> Answer:
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        return self.send("POST", path, body=json.dumps(data).encode(), headers=headers, **kw)

    def get(self, path: str, **kw: Any) -> Answer:
        return self.send("GET", path, **kw)

    def trigger(self, path: str = P + "/tree/main", data: Any = None) -> dict[str, Any]:
        answer = self.send("POST", path) if data is None else self.post_json(path, data)
        assert answer.status == 201, answer
        created: dict[str, Any] = answer.json()
        return created

    def finished(self, build_num: int, slug: str = SLUG) -> dict[str, Any]:
        build: dict[str, Any] = self.srv.wait_finished(slug, build_num)
        return build

    def log(self, build: dict[str, Any], step_name: str) -> str:
        [action] = next(s for s in build["steps"] if s["name"] == step_name)["actions"]
        url = urlsplit(action["output_url"])
        return self.get(f"{url.path}?{url.query}&file=true", auth=None).text

    def build_nums(self, path: str, **kw: Any) -> list[int]:
        answer = self.get(path, **kw)
        assert answer.status == 200, answer
        return [b["build_num"] for b in answer.json()]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("traps")
    repo = root / "widget"
    sha = make_repo(
        repo, {".circleci/config.yml": config_yaml([{"run": {"name": "env", "command": ENV_STEP}}])}
    )
    for branch in ("feature/x", "release/v1.2", "flaky", "broken"):
        git(repo, "branch", branch)
    git(repo, "tag", "v1")
    empty = root / "empty"
    make_repo(empty, {"README": "no config here\n"})
    srv = ServerProcess(root / "data", slots=2)
    with srv:
        for slug, path in (
            (SLUG, repo),
            ("bb/acme/gadget", repo),
            ("gh/Octo-Org/Hello.World", repo),
            ("gh/acme/empty", empty),
        ):
            srv.cli("project", "add", slug, "--repo", str(path))
        token = srv.make_token()
        srv.cli("user", "add", "bob")
        bob = srv.cli("token", "create", "--user", "bob").stdout.strip()
        status_token = srv.cli("token", "create", "--project", SLUG, "--scope", "status").stdout.strip()
        yield World(srv=srv, repo=repo, token=token, bob=bob, status_token=status_token, sha=sha)


# ---------------------------------------------------------------- section 12, item by item


def test_01_triggers_answer_201_with_an_absolute_location_and_build_actions_200(world: World) -> None:
    for path in (P, P + "/tree/main"):
        answer = world.send("POST", path)
        assert answer.status == 201, answer
        num = answer.json()["build_num"]
        assert answer.headers["location"] == f"{world.base}/api/v1.1/project/github/acme/widget/{num}"
    world.finished(num)
    for action in ("retry", "ssh", "ssh-users", "cancel"):
        answer = world.send("POST", f"{P}/{num}/{action}")
        assert answer.status == 200, (action, answer)
        assert "location" not in answer.headers
        assert answer.json()["build_num"] >= num


def test_02_both_vcs_spellings_and_the_legacy_v1_family(world: World) -> None:
    num = world.trigger()["build_num"]
    build = world.finished(num)
    for vcs in ("gh", "github", "GitHub"):
        answer = world.get(f"/api/v1.1/project/{vcs}/acme/widget/{num}")
        assert answer.status == 200 and answer.json()["build_num"] == num, vcs
    gadget = world.trigger("/api/v1.1/project/bb/acme/gadget/tree/main")
    assert gadget["vcs_type"] == "bitbucket" and "/bb/acme/gadget/" in gadget["build_url"]
    assert gadget["vcs_url"] == "https://bitbucket.org/acme/gadget"
    for vcs in ("bb", "bitbucket"):
        nums = world.build_nums(f"/api/v1.1/project/{vcs}/acme/gadget")
        assert gadget["build_num"] in nums, vcs

    # /api/v1: the same endpoints with vcs-type github (circleclient speaks only this)
    assert world.get("/api/v1/me").json()["login"] == "admin"
    assert world.get("/api/v1/projects").status == 200
    assert num in world.build_nums("/api/v1/recent-builds?limit=100")
    assert num in world.build_nums(V1 + "?limit=100")
    assert num in world.build_nums(V1 + "/tree/main?limit=100")
    assert world.get(f"{V1}/{num}").json()["vcs_revision"] == build["vcs_revision"]
    assert world.get(f"{V1}/{num}/artifacts").json() == []
    assert world.get(f"{V1}/{num}/tests").json() == {"tests": [], "exceptions": []}
    created = world.send("POST", V1 + "/tree/main")
    assert created.status == 201
    new = created.json()["build_num"]
    assert created.headers["location"] == f"{world.base}/api/v1.1/project/github/acme/widget/{new}"
    assert world.send("POST", f"{V1}/{new}/cancel").status == 200
    assert world.send("POST", f"{V1}/{num}/retry").json()["retry_of"] == num
    assert world.send("DELETE", V1 + "/build-cache").status == 200
    assert world.get("/api/v1/project/acme/gadget").json() == NOT_FOUND  # v1 is GitHub only
    # a signed output_url verifies whatever spelling of its path fetches it
    url = urlsplit(build["steps"][-1]["actions"][0]["output_url"])
    assert url.path.startswith("/api/v1.1/project/github/acme/widget/")
    for path in (
        url.path,
        url.path.replace("/api/v1.1/project/github/", "/api/v1/project/"),
        url.path.replace("/github/acme/", "/gh/ACME/"),
    ):
        answer = world.get(f"{path}?{url.query}", auth=None)
        assert answer.status == 200 and isinstance(answer.json(), list), path


@pytest.mark.parametrize("auth", ["header", "basic", "basic-password", "query"])
def test_03_a_token_in_the_header_basic_or_query_on_every_method(world: World, auth: str) -> None:
    assert world.get("/api/v1.1/me", auth=auth).json()["login"] == "admin"
    assert world.get(P + "?limit=1", auth=auth).status == 200
    created = world.send("POST", P + "/tree/main", auth=auth)
    assert created.status == 201, created
    name = "VAR_" + auth.replace("-", "_").upper()
    added = world.post_json(P + "/envvar", {"name": name, "value": "secret-value"}, auth=auth)
    assert added.status == 201, added
    deleted = world.send("DELETE", f"{P}/envvar/{name}", auth=auth)
    assert (deleted.status, deleted.json()) == (200, {"message": "ok"})
    assert world.send("DELETE", P + "/build-cache", auth=auth).status == 200
    # and without the token, each of those is refused
    assert world.get("/api/v1.1/me", auth=None).json() == LOGIN_FIRST
    assert world.send("POST", P + "/tree/main", auth=None).json() == NOT_FOUND
    assert world.send("DELETE", P + "/build-cache", auth=None).json() == NOT_FOUND


def test_03_an_unknown_token_is_no_token(world: World) -> None:
    num = world.trigger()["build_num"]
    for method, path in (
        ("GET", "/api/v1.1/me"),
        ("GET", "/api/v1.1/recent-builds"),
        ("GET", P),
        ("GET", f"{P}/{num}"),
        ("POST", P + "/tree/main"),
        ("POST", f"{P}/{num}/cancel"),
        ("DELETE", P + "/build-cache"),
    ):
        for auth in ("header", "basic", "query"):
            unknown = world.send(method, path, auth=auth, token="ccl_no-such-token")
            none = world.send(method, path, auth=None)
            assert (unknown.status, unknown.json()) == (none.status, none.json()), (method, path, auth)
            assert unknown.status in (401, 404)


def test_04_filter_none_empty_or_unknown_is_no_filter_and_shallow_true_is_true(world: World) -> None:
    ok = world.finished(world.trigger(P + "/tree/flaky")["build_num"])
    everything = world.build_nums(P + "?limit=100")
    assert ok["build_num"] in everything
    for query in ("filter=None", "filter=", "filter=bogus", "filter=NONE", "filter=null"):
        assert world.build_nums(f"{P}?limit=100&{query}") == everything, query
    for name, rule in (
        ("completed", lambda b: b["lifecycle"] == "finished"),
        ("successful", lambda b: b["outcome"] == "success"),
        ("failed", lambda b: b["outcome"] in ("failed", "timedout", "no_tests", "infrastructure_fail")),
        ("running", lambda b: b["lifecycle"] == "running"),
    ):
        for b in world.get(f"{P}?limit=100&filter={name}").json():
            assert rule(b), (name, b["build_num"], b["lifecycle"], b["outcome"])
    assert ok["build_num"] in world.build_nums(P + "?limit=100&filter=successful")
    for word in ("True", "true", "TRUE", "1", "yes"):
        for path in (P, P + "/tree/flaky", "/api/v1.1/recent-builds"):
            builds = world.get(f"{path}?limit=3&shallow={word}").json()
            assert builds and all(set(b) == SHALLOW_KEYS for b in builds), (word, path)
            assert all(b["fleet"] == "picard" for b in builds)
    for word in ("False", "0", "no", ""):
        builds = world.get(f"{P}?limit=3&shallow={word}").json()
        assert all("all_commit_details" in b and "fleet" not in b for b in builds), word


def test_05_null_revision_tag_and_parallel_mean_absent(world: World) -> None:
    nulls = {"revision": None, "tag": None, "parallel": None}
    on_branch = world.trigger(P + "/tree/main", nulls)
    assert (on_branch["branch"], on_branch["vcs_tag"]) == ("main", None)
    tagged = world.trigger(P, {**nulls, "tag": "v1"})
    assert tagged["vcs_tag"] == "v1" and tagged["vcs_revision"] == world.sha
    pinned = world.trigger(P + "/tree/main", {**nulls, "revision": world.sha, "build_parameters": None})
    assert pinned["vcs_revision"] == world.sha and pinned["branch"] == "main"
    assert world.post_json(P + "/tree/main", {"revision": world.sha, "tag": "v1"}).status == 400


def test_06_build_parameters_as_json_form_or_ignored_top_level_keys(world: World) -> None:
    as_json = world.trigger(P + "/tree/main", {"build_parameters": {"NUM": "7"}})
    assert as_json["build_parameters"] == {"NUM": "7"}
    form = world.send(
        "POST",
        P + "/tree/main",
        body=b"build_parameters[NUM]=5&build_parameters[CIRCLE_JOB]=build",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status == 201 and form.json()["build_parameters"] == {"NUM": "5", "CIRCLE_JOB": "build"}
    top = world.trigger(P + "/tree/main", {"revision": None, "SOME_VAR": "top", "NUM": "9"})
    assert top["build_parameters"] == {}
    typed = world.trigger(P + "/tree/main", {"build_parameters": {"NUM": 500, "OBJ": {"a": [1, None]}}})
    assert typed["build_parameters"] == {"NUM": 500, "OBJ": {"a": [1, None]}}  # echoed as received
    assert world.get(f"{P}/{typed['build_num']}").json()["build_parameters"]["NUM"] == 500
    log = world.log(world.finished(typed["build_num"]), "env")
    assert "num=500\n" in log and 'obj={"a": [1, null]}\n' in log
    assert "some=\n" in world.log(world.finished(top["build_num"]), "env")
    assert "num=5\n" in world.log(world.finished(form.json()["build_num"]), "env")


def test_07_branch_names_with_raw_or_encoded_slashes(world: World) -> None:
    raw = world.trigger(P + "/tree/feature/x")
    encoded = world.trigger(P + "/tree/feature%2Fx")
    assert raw["branch"] == encoded["branch"] == "feature/x"
    assert "branch=feature/x\n" in world.log(world.finished(raw["build_num"]), "env")
    for path in (P + "/tree/feature/x", P + "/tree/feature%2Fx", P + "/tree/feature%2fx"):
        nums = world.build_nums(path + "?limit=100")
        assert {raw["build_num"], encoded["build_num"]} <= set(nums), path
        assert all(b["branch"] == "feature/x" for b in world.get(path + "?limit=100").json())
    assert world.build_nums(P + "/tree/feature?limit=100") == []


def test_08_posts_without_body_or_content_type_and_with_bodies_they_ignore(world: World) -> None:
    num = world.finished(world.trigger()["build_num"])["build_num"]
    for action in ("retry", "cancel", "ssh-users"):
        bare = world.send("POST", f"{P}/{num}/{action}")  # Content-Length: 0, no Content-Type
        assert bare.status == 200, (action, bare)
        typed_empty = world.send("POST", f"{P}/{num}/{action}", headers={"Content-Type": "application/json"})
        assert typed_empty.status == 200, (action, typed_empty)
        for body in ({}, {"hostname": None, "private_key": "x"}, {"unrelated": [1, 2]}):
            assert world.post_json(f"{P}/{num}/{action}", body).status == 200, (action, body)
    assert world.send("POST", P + "/follow").status == 200
    assert world.send("POST", P + "/tree/main").status == 201
    assert world.send("POST", P, headers={"Content-Type": "application/json"}).status == 201
    assert world.send("POST", P + "/build").status == 200


def test_09_every_success_is_json_and_empty_successes_are_the_string(world: World) -> None:
    import asyncssh

    pem = asyncssh.generate_private_key("ssh-rsa", key_size=2048).export_private_key("pkcs1-pem").decode()
    fingerprint = asyncssh.import_private_key(pem).get_fingerprint("md5")[len("MD5:") :]
    num = world.trigger()["build_num"]
    answers = {
        "heroku-key": world.post_json("/api/v1.1/user/heroku-key", {"apikey": "k"}),
        "ssh-key add": world.post_json(P + "/ssh-key", {"hostname": None, "private_key": pem}),
        "ssh-key delete": world.send(
            "DELETE",
            P + "/ssh-key",
            body=json.dumps({"fingerprint": fingerprint, "hostname": None}).encode(),
            headers={"Content-Type": "application/json"},
        ),
        "envvar delete": (
            world.post_json(P + "/envvar", {"name": "GONE", "value": "v"}),
            world.send("DELETE", P + "/envvar/GONE"),
        )[1],
        "build-cache delete": world.send("DELETE", P + "/build-cache"),
        "cancel": world.send("POST", f"{P}/{num}/cancel"),
        "unfollow": world.send("POST", P + "/unfollow"),
        "follow": world.send("POST", P + "/follow"),
    }
    for name, answer in answers.items():
        assert 200 <= answer.status < 300, (name, answer)
        assert answer.headers["content-type"] == JSON_TYPE, name
        answer.json()  # parses
    assert answers["heroku-key"].text == '""'
    assert answers["ssh-key add"].text == answers["ssh-key delete"].text == '""'
    assert answers["envvar delete"].json() == {"message": "ok"}
    assert isinstance(answers["build-cache delete"].json(), dict)


def test_10_output_url_is_absolute_and_needs_no_credentials(world: World) -> None:
    build = world.finished(world.trigger()["build_num"])
    actions = [a for s in build["steps"] for a in s["actions"]]
    assert actions and all(a["has_output"] == ("output_url" in a) for a in actions)
    for action in actions:
        if not action["has_output"]:
            continue
        assert action["output_url"].startswith(world.base + "/api/v1.1/project/github/acme/widget/")
        url = urlsplit(action["output_url"])
        chunks = world.get(f"{url.path}?{url.query}", auth=None, headers={"Accept": ""})
        assert chunks.status == 200 and chunks.headers["content-type"].startswith("application/json")
        assert all(set(c) >= {"type", "time", "message"} for c in chunks.json())
        text = world.get(f"{url.path}?{url.query}&file=true", auth=None)
        assert text.headers["content-type"].startswith("text/plain")
    forged = world.get(f"{url.path}?{url.query.replace('sig=', 'sig=A')}", auth=None)
    assert (forged.status, forged.json()) == (404, NOT_FOUND)


def test_10_artifact_urls_are_absolute_and_take_any_of_the_three_auth_forms(world: World) -> None:
    commit_files(
        world.repo,
        {
            ".circleci/config.yml": config_yaml(
                [
                    "checkout",
                    {"run": "mkdir -p out && echo hi > out/a.txt"},
                    {"store_artifacts": {"path": "out"}},
                ]
            )
        },
        message="artifacts",
    )
    try:
        build = world.finished(world.trigger(P + "/tree/main")["build_num"])
    finally:
        git(world.repo, "reset", "-q", "--hard", "HEAD~1")
    artifacts = world.get(f"{P}/{build['build_num']}/artifacts").json()
    assert artifacts, "no artifact listed"
    url = urlsplit(artifacts[0]["url"])
    assert artifacts[0]["url"].startswith(world.base)
    for auth in ("header", "basic", "query"):
        assert world.get(url.path, auth=auth).text == "hi\n", auth


def test_11_status_fixed_after_a_failure_and_the_statuses_clients_must_know(world: World) -> None:
    failing = config_yaml([{"run": {"name": "env", "command": "exit 1"}}])
    git(world.repo, "checkout", "-q", "flaky")
    try:
        commit_files(world.repo, {".circleci/config.yml": failing}, message="break flaky")
        broken = world.finished(world.trigger(P + "/tree/flaky")["build_num"])
        git(world.repo, "revert", "--no-edit", "HEAD")
        fixed = world.finished(world.trigger(P + "/tree/flaky")["build_num"])
    finally:
        git(world.repo, "checkout", "-q", "main")
    assert (broken["status"], broken["failed"]) == ("failed", True)
    assert (fixed["outcome"], fixed["status"]) == ("success", "fixed")
    assert fixed["previous"]["build_num"] == broken["build_num"]
    assert fixed["build_num"] in world.build_nums(P + "/tree/flaky?filter=successful")
    doc = world.get("/api/openapi.json").json()
    statuses = doc["components"]["schemas"]["BuildSummary"]["properties"]["status"]["enum"]
    assert {"fixed", "retried", "no_tests", "success"} <= set(statuses)


def test_12_private_projects_hide_behind_404_and_user_endpoints_say_401(world: World) -> None:
    num = world.trigger()["build_num"]
    build = world.finished(num)
    output = urlsplit(build["steps"][-1]["actions"][0]["output_url"]).path
    for method, path in (
        ("GET", P),
        ("GET", P + "/tree/main"),
        ("GET", f"{P}/{num}"),
        ("GET", f"{P}/{num}/tests"),
        ("GET", f"{P}/{num}/artifacts"),
        ("GET", output),
        ("POST", P + "/tree/main"),
        ("POST", f"{P}/{num}/retry"),
        ("POST", P + "/build"),
        ("GET", "/api/v1.1/project/gh/acme/no-such-repo"),
    ):
        for auth, token in ((None, None), ("header", "ccl_wrong"), ("header", world.bob)):
            answer = world.send(method, path, auth=auth, token=token)
            assert (answer.status, answer.json()) == (404, NOT_FOUND), (method, path, auth, token)
    for path in ("/api/v1.1/me", "/api/v1.1/projects", "/api/v1.1/recent-builds"):
        for auth, token in ((None, None), ("header", "ccl_wrong"), ("header", world.status_token)):
            answer = world.get(path, auth=auth, token=token)
            assert (answer.status, answer.json()) == (401, LOGIN_FIRST), (path, token)
    denied = world.get(P, token=world.status_token)
    assert (denied.status, denied.json()) == (403, {"message": "Permission denied"})


def test_13_build_answers_exactly_status_200_body_build_created(world: World) -> None:
    for body in (None, {"branch": "feature/x"}, {"tag": "v1"}, {"branch": "main", "revision": world.sha}):
        answer = world.send("POST", P + "/build") if body is None else world.post_json(P + "/build", body)
        assert answer.status == 200, (body, answer)
        assert answer.text == '{"status":200,"body":"Build created"}', body
    assert world.post_json(P + "/build", {"tag": "v1", "branch": "main"}).status == 400


def test_13_build_runs_every_job_of_the_workflows_as_a_push_would(world: World, tmp_path: Path) -> None:
    repo = tmp_path / "flow"
    make_repo(
        repo,
        {
            ".circleci/config.yml": "version: 2\njobs:\n"
            "  build: {docker: [{image: x}], steps: [{run: 'true'}]}\n"
            "  test: {docker: [{image: x}], steps: [{run: 'true'}]}\n"
            "workflows:\n  version: 2\n  main:\n    jobs: [build, test]\n"
        },
    )
    world.srv.cli("project", "add", "gh/acme/flow", "--repo", str(repo))
    answer = world.send("POST", "/api/v1.1/project/gh/acme/flow/build")
    assert answer.json() == {"status": 200, "body": "Build created"}
    world.finished(1, "gh/acme/flow")
    deadline = time.monotonic() + 2  # the second job is created with the first, not after it
    while len(builds := world.get("/api/v1.1/project/gh/acme/flow").json()) < 2:
        assert time.monotonic() < deadline, builds
        time.sleep(0.05)
    assert sorted(b["workflows"]["job_name"] for b in builds) == ["build", "test"]
    assert {b["workflows"]["workflow_name"] for b in builds} == {"main"}


def test_14_build_url_is_the_circle_build_url_the_job_sees(world: World) -> None:
    for path in (P + "/tree/main", "/api/v1.1/project/bb/acme/gadget/tree/main"):
        created = world.trigger(path)
        slug = "bb/acme/gadget" if "gadget" in path else SLUG
        build = world.finished(created["build_num"], slug)
        assert f"url={build['build_url']}\n" in world.log(build, "env")
        assert created["build_url"] == build["build_url"]
        assert world.get(f"{path.split('/tree/')[0]}?limit=100").json()[0]["build_url"].startswith(world.base)


def test_15_projects_say_followed_and_following_and_encode_branch_keys(world: World) -> None:
    world.finished(world.trigger(P + "/tree/release/v1.2")["build_num"])
    assert world.send("POST", P + "/follow").status == 200
    [entry] = [p for p in world.get("/api/v1.1/projects").json() if p["reponame"] == "widget"]
    assert entry["followed"] is True and entry["following"] is True
    assert "release%2Fv1%2E2" in entry["branches"]
    assert "release/v1.2" not in entry["branches"]


def test_16_a_trigger_either_creates_one_build_and_answers_201_or_creates_nothing(world: World) -> None:
    before = world.build_nums(P + "?limit=1")[0]
    refused = [
        world.post_json(P + "/tree/no-such-branch", {}),
        world.post_json(P + "/tree/main", {"job": "nope"}),
        world.post_json(P + "/tree/main", {"revision": "abc", "tag": "v1"}),
        world.post_json(P, {"tag": "no-such-tag"}),
        world.send("POST", P + "/tree/main", body=b"{not json", headers={"Content-Type": "application/json"}),
    ]
    assert all(400 <= a.status < 500 for a in refused), refused
    assert world.build_nums(P + "?limit=1")[0] == before  # nothing was created

    results: list[Answer] = []

    def trigger() -> None:
        results.append(world.send("POST", P + "/tree/main"))

    threads = [threading.Thread(target=trigger) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status for a in results] == [201] * 6
    nums = sorted(a.json()["build_num"] for a in results)
    assert nums == list(range(before + 1, before + 7))
    assert world.build_nums(P + "?limit=1")[0] == before + 6

    # a config that cannot run still makes a build (201) that says why, never a 5xx
    git(world.repo, "checkout", "-q", "broken")
    try:
        commit_files(world.repo, {".circleci/config.yml": "version: 2\njobs: [\n"}, message="broken yaml")
        broken = world.send("POST", P + "/tree/broken")
    finally:
        git(world.repo, "checkout", "-q", "main")
    assert broken.status == 201, broken
    done = world.finished(broken.json()["build_num"])
    assert done["outcome"] == "failed" and done["messages"]
    retried = world.send("POST", f"{P}/{done['build_num']}/retry")
    assert retried.status == 200 and retried.json()["retry_of"] == done["build_num"]


def test_17_lists_are_newest_first_30_by_default_and_at_most_100(world: World) -> None:
    empty = "/api/v1.1/project/gh/acme/empty"
    for _ in range(101):  # no config: each build is created finished at once, nothing runs
        assert world.send("POST", empty).status == 201
    assert world.build_nums(empty) == list(range(101, 71, -1))
    assert world.build_nums(empty + "?limit=100") == list(range(101, 1, -1))
    assert world.build_nums(empty + "?limit=1000") == list(range(101, 1, -1))
    assert world.build_nums(empty + "?limit=1&offset=0&filter=") == [101]
    assert world.build_nums(empty + "?limit=5&offset=99") == [2, 1]
    assert world.build_nums(empty + "?offset=101") == []
    assert world.build_nums(empty + "?limit=0") == []
    assert len(world.build_nums("/api/v1.1/recent-builds?limit=1000")) == 100
    recent = world.build_nums("/api/v1.1/recent-builds?limit=100&shallow=true")
    assert len(recent) == 100
    for query in ("limit=abc", "offset=-1", "limit=-5", "offset=1.5", "limit=%C2%B2"):
        for path in (empty, "/api/v1.1/recent-builds", empty + "/tree/main"):
            answer = world.get(f"{path}?{query}")
            assert answer.status == 400 and "message" in answer.json(), (path, query)


def test_18_timestamps_have_milliseconds_and_z_and_commit_dates_keep_offsets(world: World) -> None:
    build = world.finished(world.trigger()["build_num"])
    for key in ("usage_queued_at", "queued_at", "start_time", "stop_time"):
        assert ISO_MS.match(build[key]), (key, build[key])
    for action in (a for s in build["steps"] for a in s["actions"]):
        assert ISO_MS.match(action["start_time"]) and ISO_MS.match(action["end_time"])
    assert build["committer_date"] == "2024-05-01T10:04:50-07:00"
    assert build["author_date"] == "2024-05-01T10:03:49-07:00"
    assert build["all_commit_details"][0]["committer_date"] == "2024-05-01T10:04:50-07:00"
    url = urlsplit(build["steps"][-1]["actions"][0]["output_url"])
    assert all(ISO_MS.match(c["time"]) for c in world.get(f"{url.path}?{url.query}", auth=None).json())


# ---------------------------------------------------------------- sections 1, 3 and 4


def test_compact_json_for_json_clients_pretty_otherwise_same_content(world: World) -> None:
    num = world.finished(world.trigger()["build_num"])["build_num"]
    for path in (f"{P}/{num}", P + "?limit=2", "/api/v1.1/me", f"{P}/999999"):
        compact = world.get(path)
        assert compact.text == json.dumps(compact.json(), separators=(",", ":"), ensure_ascii=False), path
        for accept in ("", "text/html", "*/*"):
            pretty = world.get(path, headers={"Accept": accept})
            assert pretty.text.startswith(("{\n  ", "[\n  ")), (path, accept)
            assert pretty.json() == compact.json()
    axios = world.get(f"{P}/{num}", headers={"Accept": "application/json, text/plain, */*"})
    assert "\n" not in axios.text


def test_content_type_and_cors_on_answers_and_errors(world: World) -> None:
    for path in (P, "/api/v1.1/me", f"{P}/999999", "/api/v1.1/no/such/thing"):
        for auth in ("header", None):
            answer = world.get(path, auth=auth)
            assert answer.headers["content-type"] == JSON_TYPE, (path, auth)
            assert answer.headers["access-control-allow-origin"] == "*", (path, auth)


def test_trailing_and_repeated_slashes_are_tolerated(world: World) -> None:
    num = world.trigger()["build_num"]
    for path in (
        "/api/v1.1/me/",
        "/api/v1.1//me",
        "//api/v1.1/me",
        P + "/",
        P.replace("/project/", "//project//") + f"//{num}/",
        f"{P}/{num}/tests/",
    ):
        answer = world.get(path)
        assert answer.status == 200, (path, answer)
    assert world.send("POST", P + "/tree/main/").json()["branch"] == "main"
    assert world.send("POST", f"{P}//{num}//cancel/").status == 200


def test_unknown_routes_under_api_are_404_json(world: World) -> None:
    for method, path in (
        ("GET", "/api/v1.1/nothing/here"),
        ("GET", "/api/nothing"),
        ("GET", "/api/v2/me"),
        ("POST", "/api/v1.1/project/gh/acme/widget/1/nothing"),
        ("GET", "/api/v1/nothing"),
    ):
        answer = world.send(method, path)
        assert answer.status == 404, (method, path, answer)
        assert set(answer.json()) == {"message"} and answer.headers["content-type"] == JSON_TYPE


def test_trigger_bodies_json_form_empty_and_null(world: World) -> None:
    for body, headers in (
        (b'{"build_parameters": {"NUM": "1"}}', {"Content-Type": "application/json"}),
        (b'{"build_parameters": {"NUM": "1"}}', {}),  # JSON without a Content-Type
        (b'{"build_parameters": {"NUM": "1"}}', {"Content-Type": "text/plain"}),
        (b"build_parameters[NUM]=1", {"Content-Type": "application/x-www-form-urlencoded"}),
        (b"build_parameters%5BNUM%5D=1", {"Content-Type": "application/x-www-form-urlencoded"}),
        (b"", {"Content-Type": "application/json"}),
        (b"", {}),
        (b"null", {"Content-Type": "application/json"}),
        (b"{}", {"Content-Type": "application/json;charset=utf-8"}),
    ):
        answer = world.send("POST", P + "/tree/main", body=body, headers=headers)
        assert answer.status == 201, (body, headers, answer)
        expected = {"NUM": "1"} if b"NUM" in body else {}
        assert answer.json()["build_parameters"] == expected, (body, headers)
    for body in (b"[1]", b'"text"', b"{not json"):
        answer = world.send("POST", P + "/tree/main", body=body, headers={"Content-Type": "application/json"})
        assert answer.status == 400 and "message" in answer.json(), body


def test_parallel_as_a_numeric_string_and_revision_with_tag_refused(world: World) -> None:
    for value in ("2", 2, " 3 "):
        assert world.post_json(P + "/tree/main", {"parallel": value}).status == 201, value
    for value in ("x", 0, -1, "1.5", True, "²", 10**40):
        answer = world.post_json(P + "/tree/main", {"parallel": value})
        assert answer.status == 400, value
        assert answer.json() == {"message": "parallel must be a positive integer"}, value
    for path in (P, P + "/tree/main"):
        answer = world.post_json(path, {"revision": world.sha, "tag": "v1"})
        assert (answer.status, answer.json()) == (400, {"message": "Cannot specify both revision and tag"})


def test_unknown_vcs_type_is_project_not_found(world: World) -> None:
    for method, path in (
        ("GET", "/api/v1.1/project/svn/acme/widget"),
        ("GET", "/api/v1.1/project/gitlab/acme/widget/1"),
        ("POST", "/api/v1.1/project/hg/acme/widget/tree/main"),
        ("POST", "/api/v1.1/project/git/acme/widget/1/retry"),
    ):
        answer = world.send(method, path)
        assert (answer.status, answer.json()) == (404, NOT_FOUND), (method, path)


def test_usernames_and_projects_match_any_case_and_answer_the_stored_spelling(world: World) -> None:
    created = world.send("POST", "/api/v1.1/project/github/octo-org/hello.world/tree/main")
    assert created.status == 201, created
    num = created.json()["build_num"]
    assert created.headers["location"] == f"{world.base}/api/v1.1/project/github/Octo-Org/Hello.World/{num}"
    for owner, repo in (
        ("octo-org", "hello.world"),
        ("OCTO-ORG", "HELLO.WORLD"),
        ("Octo-Org", "Hello.World"),
    ):
        answer = world.get(f"/api/v1.1/project/gh/{owner}/{repo}/{num}")
        build = answer.json()
        assert (build["username"], build["reponame"]) == ("Octo-Org", "Hello.World"), (owner, repo)
        assert build["vcs_url"] == "https://github.com/Octo-Org/Hello.World"
        assert build["build_url"] == f"{world.base}/gh/Octo-Org/Hello.World/{num}"
    listed = world.get("/api/v1/project/OCTO-org/hello.WORLD?limit=1").json()
    assert listed[0]["username"] == "Octo-Org"


def test_build_parameters_values_that_no_environment_can_hold_are_refused(world: World) -> None:
    before = world.build_nums(P + "?limit=1")[0]
    for body in (
        b'{"build_parameters": {"X": "a\\u0000b"}}',
        b'{"build_parameters": {"X": "\\udc80"}}',
        b'{"tag": "\\ud800"}',
    ):
        answer = world.send("POST", P + "/tree/main", body=body, headers={"Content-Type": "application/json"})
        assert answer.status == 400 and "message" in answer.json(), body
    assert world.build_nums(P + "?limit=1")[0] == before


def test_odd_numbers_in_paths_and_queries_are_4xx_never_5xx(world: World) -> None:
    num = world.finished(world.trigger()["build_num"])["build_num"]
    huge = "9" * 40
    for path in (
        f"{P}/{huge}",
        f"{P}/%C2%B2",
        f"{P}/0",
        f"{P}/{huge}/tests",
        f"{P}/{huge}/retry",
        f"{P}/{num}/output/{huge}/0",
        f"{P}/{num}/output/0/{huge}",
        f"{P}/{num}/output/-1/0",
    ):
        method = "POST" if path.endswith("retry") else "GET"
        answer = world.send(method, path)
        assert answer.status == 404 and "message" in answer.json(), (path, answer)
    for query in (  # broken signatures: no token, so the answer is the private project's 404
        "expires=%C2%B2&sig=x",
        f"expires={huge}&sig=%C3%A9",
        f"expires={'9' * 5000}&sig=x",
        "expires=&sig=",
    ):
        answer = world.get(f"{P}/{num}/output/101/0?{query}", auth=None)
        assert (answer.status, answer.json()) == (404, NOT_FOUND), query
    assert world.build_nums(f"{P}?offset={huge}") == []
    assert len(world.build_nums(f"{P}?limit={huge}")) <= 100
    deep = b'{"a": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    answer = world.send("POST", P + "/tree/main", body=deep, headers={"Content-Type": "application/json"})
    assert answer.status == 400, answer
    log = (world.srv.data_dir / "server.log").read_text()
    assert "event=unhandled_error" not in log, log[-4000:]


def test_a_retry_body_asking_for_no_cache_is_honoured(world: World) -> None:
    num = world.finished(world.trigger()["build_num"])["build_num"]
    plain = world.send("POST", f"{P}/{num}/retry").json()
    assert plain["no_dependency_cache"] is False
    for answer in (
        world.post_json(f"{P}/{num}/retry", {"no-cache": "true"}),
        world.send("POST", f"{P}/{num}/retry?no-cache=true"),
    ):
        assert answer.status == 200 and answer.json()["no_dependency_cache"] is True
