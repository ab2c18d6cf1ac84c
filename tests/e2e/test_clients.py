"""The four clients of api-v1.1.md section 11 against a real `circlet serve`.

pycircleci 0.7.0 is installed and driven through its own API. The other three are replayed
with httpx request by request, as section 11 records their traffic: the same paths (branch
names not encoded, the legacy `/api/v1` for circleclient), the same query strings
(`filter=None`, `limit=1&offset=0&filter=`, the token appended raw), the same headers and
auth (Basic only for circleci 1.2.2, the query only for circleclient and circleci-api) and the
same success check each client makes before reading the body.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from circlet.harness import ServerProcess, config_yaml, git, make_repo

pytestmark = pytest.mark.timeout(180)

SLUG = "gh/acme/widget"
P = "/api/v1.1/project/gh/acme/widget"
STEP = "echo url=$CIRCLE_BUILD_URL; echo job=$CIRCLE_JOB; echo num=$NUM; sleep ${PAUSE:-0}"
BUILD_CREATED = {"status": 200, "body": "Build created"}


@dataclass
class World:
    srv: ServerProcess
    repo: Path
    token: str
    sha: str

    @property
    def base(self) -> str:
        return self.srv.base

    def finished(self, build_num: int) -> dict[str, Any]:
        build: dict[str, Any] = self.srv.wait_finished(SLUG, build_num)
        return build

    def log(self, build: dict[str, Any]) -> str:
        action = build["steps"][-1]["actions"][0]
        return httpx.get(action["output_url"] + "&file=true").text


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("clients")
    repo = root / "widget"
    sha = make_repo(repo, {".circleci/config.yml": config_yaml([{"run": {"name": "env", "command": STEP}}])})
    git(repo, "branch", "feature/x")
    git(repo, "tag", "v1")
    srv = ServerProcess(root / "data", slots=2)
    with srv:
        srv.cli("project", "add", SLUG, "--repo", str(repo))
        yield World(srv=srv, repo=repo, token=srv.make_token(), sha=sha)


def _private_key() -> tuple[str, str]:
    """An unencrypted RSA key as clients upload it (PEM), and its md5 fingerprint."""
    import asyncssh

    pem = asyncssh.generate_private_key("ssh-rsa", key_size=2048).export_private_key("pkcs1-pem").decode()
    return pem, asyncssh.import_private_key(pem).get_fingerprint("md5")[len("MD5:") :]


# ---------------------------------------------------------------- circleci 1.2.2


class Circleci122:
    """circleci 1.2.2: requests with HTTPBasicAuth(token, "") and `Accept: application/json`,
    nothing else; hand-built query strings; raise_for_status() then .json()."""

    def __init__(self, world: World) -> None:
        self.url = world.base + "/api/v1.1"
        self.http = httpx.Client(
            auth=(world.token, ""), headers={"Accept": "application/json", "User-Agent": "python-requests"}
        )

    def __enter__(self) -> Circleci122:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def request(self, verb: str, endpoint: str, data: Any = None) -> Any:
        url = f"{self.url}/{endpoint}"
        resp = self.http.request(verb, url) if data is None else self.http.request(verb, url, json=data)
        resp.raise_for_status()
        return resp.json()


def test_circleci_1_2_2(world: World) -> None:
    with Circleci122(world) as api:
        _circleci_1_2_2(world, api)


def _circleci_1_2_2(world: World, api: Circleci122) -> None:
    p = "project/github/acme/widget"
    assert api.request("GET", "me")["login"] == "admin"
    assert isinstance(api.request("GET", "projects"), list)
    assert api.request("POST", f"{p}/follow")["following"] is True

    params = {"build_parameters": {"CIRCLE_JOB": "build", "NUM": "4"}}
    created = api.request(
        "POST", f"{p}/tree/feature/x", {"revision": None, "tag": None, "parallel": None, **params}
    )
    assert created["build_parameters"]["CIRCLE_JOB"] == "build"  # what its integration tests read
    assert created["branch"] == "feature/x"
    num = created["build_num"]
    build = world.finished(num)
    assert "num=4\n" in world.log(build)

    summary = api.request("GET", f"{p}?limit=30&offset=0&filter=None")
    assert summary[0]["build_num"] == num
    on_branch = api.request("GET", f"{p}/tree/feature/x?limit=30&offset=0&filter=None")
    assert [b["build_num"] for b in on_branch] == [num]
    assert (
        api.request("GET", f"{p}/tree/feature/x?limit=30&offset=0&filter=successful")[0]["build_num"] == num
    )
    assert num in [b["build_num"] for b in api.request("GET", "recent-builds?limit=30&offset=0")]
    assert api.request("GET", f"{p}/{num}")["steps"]
    assert api.request("GET", f"{p}/{num}/artifacts") == []
    assert api.request("GET", f"{p}/latest/artifacts?branch=feature/x&filter=completed") == []
    assert api.request("GET", f"{p}/{num}/tests") == {"tests": [], "exceptions": []}

    retried = api.request("POST", f"{p}/{num}/retry")
    assert retried["retry_of"] == num and retried["no_dependency_cache"] is False
    no_cache = api.request("POST", f"{p}/{num}/retry", {"no-cache": "true"})  # Experimental.retry_no_cache
    assert no_cache["retry_of"] == num and no_cache["no_dependency_cache"] is True
    assert api.request("POST", f"{p}/{no_cache['build_num']}/cancel")["build_num"] == no_cache["build_num"]
    assert [u["login"] for u in api.request("POST", f"{p}/{num}/ssh-users")["ssh_users"]] == ["admin"]

    pem, _ = _private_key()
    assert api.request("POST", f"{p}/ssh-key", {"hostname": None, "private_key": pem}) == ""
    assert api.request("POST", f"{p}/envvar", {"name": "FOO", "value": "bar-value"}) == {
        "name": "FOO",
        "value": "xxxxalue",
    }
    assert {"name": "FOO", "value": "xxxxalue"} in api.request("GET", f"{p}/envvar")
    assert api.request("GET", f"{p}/envvar/FOO")["name"] == "FOO"
    assert api.request("DELETE", f"{p}/envvar/FOO") == {"message": "ok"}
    key = api.request("POST", f"{p}/checkout-key", {"type": "deploy-key"})
    assert key in api.request("GET", f"{p}/checkout-key")
    assert api.request("GET", f"{p}/checkout-key/{key['fingerprint']}")["fingerprint"] == key["fingerprint"]
    assert api.request("DELETE", f"{p}/checkout-key/{key['fingerprint']}") == {"message": "ok"}
    assert isinstance(api.request("DELETE", f"{p}/build-cache"), dict)
    assert api.request("POST", "user/heroku-key", {"apikey": "heroku-secret"}) == ""


def test_circleci_1_2_2_sdk_finds_its_own_running_build_by_build_url(world: World) -> None:
    """The SDK's build_singleton, run inside a job, polls running builds and compares each
    build_url with the job's CIRCLE_BUILD_URL."""
    with Circleci122(world) as api:
        _sdk_singleton(world, api)


def _sdk_singleton(world: World, api: Circleci122) -> None:
    p = "project/github/acme/widget"
    created = api.request(
        "POST",
        f"{p}/tree/main",
        {"revision": None, "tag": None, "parallel": None, "build_parameters": {"PAUSE": "30"}},
    )
    num = created["build_num"]
    try:
        deadline = time.monotonic() + 20
        while True:
            running = api.request("GET", f"{p}?limit=100&offset=0&filter=running")
            mine = [b for b in running if b["build_num"] == num]
            build = api.request("GET", f"{p}/{num}")
            actions = [a for s in build["steps"] for a in s["actions"] if a["name"] == "env"]
            log = world.log(build) if mine and actions else ""
            if "url=" in log:
                break
            assert time.monotonic() < deadline, running
            time.sleep(0.05)
        own_url = re.search(r"url=(\S+)", log)
        assert own_url is not None
        assert [b for b in running if b["build_url"] == own_url.group(1)] == mine
        assert all(b["lifecycle"] == "running" for b in running)
    finally:
        assert api.request("POST", f"{p}/{num}/cancel")["status"] == "canceled"


# ---------------------------------------------------------------- circleclient 0.1.6


class CircleClient016:
    """circleclient 0.1.6: https://circleci.com/api/v1 (no vcs-type in paths), the token only
    as the first query parameter, `Content-Type` and `Accept: application/json` on every
    request, POST bodies `json.dumps(kwargs)`; `response.ok` then .json()."""

    def __init__(self, world: World) -> None:
        self.url = world.base + "/api/v1"
        self.token = world.token
        self.http = httpx.Client(
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": "python-requests",
            }
        )

    def __enter__(self) -> CircleClient016:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def request(self, verb: str, path: str, **kwargs: Any) -> Any:
        body = json.dumps(kwargs).encode() if verb == "POST" else None
        resp = self.http.request(verb, self.url + path, content=body)
        assert resp.is_success, (verb, path, resp.status_code, resp.text)
        return resp.json()


def test_circleclient_0_1_6(world: World) -> None:
    with CircleClient016(world) as c:
        _circleclient(world, c)


def _circleclient(world: World, c: CircleClient016) -> None:
    t = world.token
    assert c.request("GET", f"/me?circle-token={t}")["login"] == "admin"
    assert isinstance(c.request("GET", f"/projects?circle-token={t}"), list)

    created = c.request(
        "POST", f"/project/acme/widget/tree/feature/x?circle-token={t}", build_parameters={"NUM": "6"}
    )
    num = created["build_num"]
    assert (created["branch"], created["build_parameters"]) == ("feature/x", {"NUM": "6"})
    bare = c.request("POST", f"/project/acme/widget/tree/main?circle-token={t}", build_parameters={})
    assert bare["build_parameters"] == {} and bare["vcs_url"] == "https://github.com/acme/widget"
    assert "num=6\n" in world.log(world.finished(num))
    world.finished(bare["build_num"])

    latest = c.request("GET", f"/project/acme/widget?circle-token={t}&limit=1&offset=0&filter=")
    assert [b["build_num"] for b in latest] == [bare["build_num"]]
    on_branch = c.request(
        "GET", f"/project/acme/widget/tree/feature/x?circle-token={t}&limit=1&offset=0&filter="
    )
    assert [b["build_num"] for b in on_branch] == [num]
    recent = c.request("GET", f"/recent-builds?circle-token={t}&limit=30&offset=0")
    assert recent[0]["build_num"] >= bare["build_num"]
    status = c.request("GET", f"/project/acme/widget/{num}?circle-token={t}")
    assert (status["build_num"], status["outcome"]) == (num, "success")
    assert c.request("GET", f"/project/acme/widget/{num}/artifacts?circle-token={t}") == []
    retried = c.request("POST", f"/project/acme/widget/{num}/retry?circle-token={t}")
    assert retried["retry_of"] == num
    canceled = c.request("POST", f"/project/acme/widget/{retried['build_num']}/cancel?circle-token={t}")
    assert canceled["build_num"] == retried["build_num"] and canceled["outcome"] in ("canceled", "success")
    assert isinstance(c.request("DELETE", f"/project/acme/widget/build-cache?circle-token={t}"), dict)


# ---------------------------------------------------------------- circleci-api (npm) 4.1.4


class CircleciApiNpm:
    """circleci-api 4.1.4: axios. `Accept: application/json, text/plain, */*`, its user agent,
    `Content-Type: application/json;charset=utf-8` on JSON bodies and none without one; the
    token appended raw as the last query parameter; absent query parameters left out; branch
    names not encoded in paths. Success = 2xx, then `.data`."""

    HEADERS = {
        "Accept": "application/json, text/plain, */*",
        "User-Agent": "worldturtlemedia/circleci-api 4.1.4",
    }

    def __init__(self, world: World) -> None:
        self.url = world.base + "/api/v1.1"
        self.token = world.token
        self.http = httpx.Client(headers=self.HEADERS)

    def __enter__(self) -> CircleciApiNpm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def request(self, verb: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        url = f"{self.url}{path}{'&' if '?' in path else '?'}circle-token={self.token}"
        sent = dict(headers or {})
        content = None
        if body is not None:
            content = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json;charset=utf-8")
        resp = self.http.request(verb, url, content=content, headers=sent)
        assert 200 <= resp.status_code < 300, (verb, path, resp.status_code, resp.text)
        return resp.json()


def test_circleci_api_npm(world: World) -> None:
    with CircleciApiNpm(world) as api:
        _circleci_api_npm(world, api)


def _circleci_api_npm(world: World, api: CircleciApiNpm) -> None:
    p = "/project/github/acme/widget"
    json_header = {"Content-Type": "application/json", "Accepts": "application/json"}  # sic: `Accepts`
    assert api.request("GET", "/me")["login"] == "admin"
    assert isinstance(api.request("GET", "/projects"), list)
    assert api.request("POST", f"{p}/follow")["followed"] is True

    default = api.request("POST", p, {})
    assert default["branch"] == "main" and default["why"] == "api"
    on_branch = api.request(
        "POST", f"{p}/tree/feature/x", {"revision": world.sha, "build_parameters": {"NUM": "8"}}
    )
    assert (on_branch["branch"], on_branch["vcs_revision"]) == ("feature/x", world.sha)
    tagged = api.request("POST", f"{p}/tree/main", {"tag": "v1"})
    assert (tagged["vcs_tag"], tagged["branch"]) == ("v1", "main")
    num = on_branch["build_num"]
    for n in (default["build_num"], num, tagged["build_num"]):
        world.finished(n)

    assert api.request("GET", f"{p}/tree/feature/x")[0]["build_num"] == num
    assert [b["build_num"] for b in api.request("GET", f"{p}/tree/feature/x?limit=1&filter=successful")] == [
        num
    ]
    assert len(api.request("GET", f"{p}?limit=2&offset=0")) == 2
    assert api.request("GET", "/recent-builds?limit=1&offset=0")[0]["build_num"] >= num
    assert api.request("GET", "/recent-builds")
    assert api.request("GET", f"{p}/{num}")["build_parameters"] == {"NUM": "8"}
    assert api.request("GET", f"{p}/{num}/artifacts") == []
    assert api.request("GET", f"{p}/latest/artifacts?branch=feature%2Fx&filter=successful") == []
    assert api.request("GET", f"{p}/{num}/tests") == {"tests": [], "exceptions": []}
    retried = api.request("POST", f"{p}/{num}/retry")  # no body, no Content-Type
    assert retried["retry_of"] == num
    assert api.request("POST", f"{p}/{retried['build_num']}/cancel")["build_num"] == retried["build_num"]
    assert isinstance(api.request("DELETE", f"{p}/build-cache"), dict)

    assert api.request("POST", f"{p}/envvar", {"name": "NPM_VAR", "value": "npm-value"}, json_header) == {
        "name": "NPM_VAR",
        "value": "xxxxalue",
    }
    assert api.request("GET", f"{p}/envvar/NPM_VAR", headers=json_header)["value"] == "xxxxalue"
    assert any(v["name"] == "NPM_VAR" for v in api.request("GET", f"{p}/envvar", headers=json_header))
    assert api.request("DELETE", f"{p}/envvar/NPM_VAR", headers=json_header) == {"message": "ok"}
    key = api.request("POST", f"{p}/checkout-key", {"type": "deploy-key"}, json_header)
    assert api.request("GET", f"{p}/checkout-key/{key['fingerprint']}", headers=json_header) == key
    assert key in api.request("GET", f"{p}/checkout-key", headers=json_header)
    assert api.request("DELETE", f"{p}/checkout-key/{key['fingerprint']}", headers=json_header) == {
        "message": "ok"
    }
    pem, _ = _private_key()
    assert api.request("POST", f"{p}/ssh-key", {"hostname": "git.example.com", "private_key": pem}) == ""
    assert api.request("POST", "/user/heroku-key", {"apikey": "k"}) == ""


# ---------------------------------------------------------------- pycircleci 0.7.0 (the real library)


def test_pycircleci(world: World) -> None:
    from pycircleci.api import Api

    api = Api(token=world.token, url=world.base + "/api")
    try:
        _pycircleci(world, api)
    finally:
        api._session.close()


def _pycircleci(world: World, api: Any) -> None:
    assert api.get_user_info()["login"] == "admin"
    created = api.trigger_build(
        "acme", "widget", branch="feature/x", params={"build_parameters": {"NUM": "9"}}
    )
    num = created["build_num"]
    assert (created["branch"], created["build_parameters"]) == ("feature/x", {"NUM": "9"})
    tagged = api.trigger_build("acme", "widget", branch="main", tag="v1")
    assert tagged["vcs_tag"] == "v1"
    pinned = api.trigger_build("acme", "widget", branch="main", revision=world.sha, parallel=1)
    assert pinned["vcs_revision"] == world.sha
    for n in (num, tagged["build_num"], pinned["build_num"]):
        world.finished(n)

    info = api.get_build_info("acme", "widget", num)
    assert info["outcome"] == "success" and info["steps"]
    assert "num=9\n" in world.log(info)
    summary = api.get_project_build_summary("acme", "widget", limit=10, branch="feature/x")
    assert summary[0]["build_num"] == num
    ok = api.get_project_build_summary("acme", "widget", status_filter="successful", shallow=True)
    assert num in [b["build_num"] for b in ok] and all("fleet" in b for b in ok)
    recent = api.get_recent_builds(limit=5, shallow=True)
    assert len(recent) == 5 and recent[0]["build_num"] >= pinned["build_num"]
    assert api.get_test_metadata("acme", "widget", num) == {"tests": [], "exceptions": []}
    assert api.get_artifacts("acme", "widget", num) == []
    assert api.get_latest_artifact("acme", "widget", branch="feature/x") == []
    assert api.get_latest_artifact("acme", "widget", status_filter="successful") == []

    retried = api.retry_build("acme", "widget", num)
    assert retried["retry_of"] == num and retried["why"] == "retry"
    with_ssh = api.retry_build("acme", "widget", num, ssh=True)
    assert with_ssh["why"] == "ssh" and with_ssh["ssh_disabled"] is False
    canceled = api.cancel_build("acme", "widget", with_ssh["build_num"])
    assert canceled["build_num"] == with_ssh["build_num"]
    assert canceled["status"] in ("canceled", "success")
    done = world.finished(retried["build_num"])
    assert api.cancel_build("acme", "widget", done["build_num"])["status"] == done["status"]  # unchanged
    assert [u["login"] for u in api.add_ssh_user("acme", "widget", num)["ssh_users"]] == ["admin"]
    output_url = urlsplit(info["steps"][-1]["actions"][0]["output_url"])
    assert output_url.netloc == urlsplit(world.base).netloc
