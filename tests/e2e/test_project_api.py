"""End to end: the user and project-settings endpoints (api-v1.1.md 9.1, 9.2, 9.6-9.8) on a real
`circlet serve`, driven with plain HTTP and with the published client pycircleci, including the
permission rows of 2.3/2.4 for members, strangers and project tokens.

One server for the module (users, members and tokens are made once with the CLI); each test
uses names of its own so that the order of the tests does not matter.
"""

from __future__ import annotations

import json
import pathlib
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncssh
import pytest
import requests
from pycircleci.api import Api

from circlet.harness import ServerProcess, config_yaml, git, make_repo

pytestmark = pytest.mark.timeout(180)

SLUG = "gh/acme/widget"
P = "/api/v1.1/project/gh/acme/widget"
LONG_P = "/api/v1.1/project/github/acme/widget"  # how Location headers spell it
ME_KEYS = {
    "login",
    "name",
    "selected_email",
    "all_emails",
    "avatar_url",
    "admin",
    "basic_email_prefs",
    "created_at",
    "github_id",
    "bitbucket",
    "identities",
    "projects",
    "containers",
    "parallelism",
    "plan",
    "enrolled_betas",
    "in_beta_program",
    "num_projects_followed",
}
PROJECT_KEYS = {
    "vcs_url",
    "username",
    "reponame",
    "vcs_type",
    "default_branch",
    "oss",
    "parallel",
    "followed",
    "following",
    "has_usable_key",
    "scopes",
    "feature_flags",
    "ssh_keys",
    "aws",
    "branches",
}
MINI_KEYS = {
    "build_num",
    "status",
    "outcome",
    "vcs_revision",
    "pushed_at",
    "added_at",
    "is_workflow_job",
    "is_2_0_job",
}
NOT_FOUND = {"message": "Project not found"}
DENIED = {"message": "Permission denied"}
LOGIN_FIRST = {"message": "You must log in first."}
INVALID_KEY = {"message": "it looks like private key is invalid key.  Double check"}


@dataclass
class World:
    srv: ServerProcess
    admin: str  # administrator (the CLI's default user)
    reader: str  # member with role read
    writer: str  # member with role write
    owner: str  # member with role admin
    stranger: str  # a user who is no member
    view_token: str  # project token, view-builds
    all_token: str  # project token, all

    @property
    def base(self) -> str:
        return self.srv.base

    def api(self, token: str | None = None) -> Api:
        return Api(token=token or self.admin, url=self.base + "/api")


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]  # names in lower case


def call(
    world: World,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = "admin",
    form: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> Answer:
    """One request with the token in Circle-Token ("admin" = the administrator's, None = none).
    Every answer must be JSON."""
    data = raw
    req = urllib.request.Request(world.base + path, method=method)
    req.add_header("Accept", "application/json")
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    elif form is not None:
        data = urllib.parse.urlencode(form).encode()
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    secret = world.admin if token == "admin" else token
    if secret:
        req.add_header("Circle-Token", secret)
    try:
        with urllib.request.urlopen(req, data=data, timeout=30) as resp:
            status, payload, headers = (
                resp.status,
                resp.read(),
                {k.lower(): v for k, v in resp.headers.items()},
            )
    except urllib.error.HTTPError as err:
        status, payload, headers = err.code, err.read(), {k.lower(): v for k, v in err.headers.items()}
    assert headers["content-type"].startswith("application/json"), (path, headers)
    return Answer(status, json.loads(payload), headers)


def cli_token(srv: ServerProcess, *args: str) -> str:
    return srv.cli("token", "create", *args).stdout.strip()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("projects")
    repo = root / "widget"
    make_repo(
        repo,
        {
            ".circleci/config.yml": config_yaml(
                ["checkout", {"run": {"name": "Show target", "command": "echo target=$DEPLOY_TARGET"}}]
            )
        },
    )
    git(repo, "branch", "release/v1.2")
    srv = ServerProcess(root / "data", slots=2)
    with srv:
        srv.cli("project", "add", SLUG, "--repo", str(repo))
        admin = srv.make_token()
        tokens = {}
        for login, role in (("reader", "read"), ("writer", "write"), ("owner", "admin"), ("stranger", None)):
            srv.cli("user", "add", login, "--name", login.title(), "--email", f"{login}@example.com")
            if role:
                srv.cli("project", "grant", SLUG, login, "--role", role)
            tokens[login] = cli_token(srv, "--user", login)
        yield World(
            srv=srv,
            admin=admin,
            reader=tokens["reader"],
            writer=tokens["writer"],
            owner=tokens["owner"],
            stranger=tokens["stranger"],
            view_token=cli_token(srv, "--project", SLUG, "--scope", "view-builds"),
            all_token=cli_token(srv, "--project", SLUG, "--scope", "all"),
        )


def _http_error(call_it: Any) -> int:
    with pytest.raises(requests.HTTPError) as caught:
        call_it()
    return int(caught.value.response.status_code)


# ------------------------------------------------------------------ /me


def test_me_for_users_and_401_for_everything_else(world: World) -> None:
    me = call(world, "GET", "/api/v1.1/me")
    assert me.status == 200 and set(me.body) == ME_KEYS
    assert me.body["login"] == "admin" and me.body["admin"] is True
    assert me.body["identities"]["github"]["login"] == "admin"
    assert me.body["basic_email_prefs"] == "smart" and me.body["enrolled_betas"] == []
    reader = call(world, "GET", "/api/v1.1/me", token=world.reader).body
    assert (reader["login"], reader["name"], reader["admin"]) == ("reader", "Reader", False)
    assert reader["selected_email"] == "reader@example.com" and reader["all_emails"] == ["reader@example.com"]
    assert reader["created_at"].endswith("Z")
    for token in (None, "ccl_unknown", world.view_token, world.all_token):
        answer = call(world, "GET", "/api/v1.1/me", token=token)
        assert (answer.status, answer.body) == (401, LOGIN_FIRST), token
    assert world.api().get_user_info()["login"] == "admin"
    assert world.api(world.writer).get_user_info()["login"] == "writer"
    assert _http_error(lambda: world.api(world.all_token).get_user_info()) == 401


# ------------------------------------------------------------------ follow, /projects, settings


def test_follow_then_projects_lists_branches_and_unfollow(world: World) -> None:
    for branch in ("main", "release/v1.2"):
        created = call(world, "POST", P + "/tree/" + branch, {})
        assert created.status == 201
        world.srv.wait_finished(SLUG, created.body["build_num"])
    followed = call(world, "POST", P + "/follow")
    assert (followed.status, followed.body) == (
        200,
        {"followed": True, "following": True, "first_build": None},
    )
    listed = call(world, "GET", "/api/v1.1/projects")
    (entry,) = listed.body
    assert set(entry) == PROJECT_KEYS
    assert (entry["username"], entry["reponame"], entry["vcs_type"]) == ("acme", "widget", "github")
    assert entry["followed"] is True and entry["following"] is True
    assert entry["scopes"] == [
        "status",
        "view-builds",
        "read-settings",
        "trigger-builds",
        "write-settings",
        "all",
    ]
    assert set(entry["branches"]) >= {"main", "release%2Fv1%2E2"}
    release = entry["branches"]["release%2Fv1%2E2"]
    assert release["pusher_logins"] == ["admin"]
    assert release["is_using_workflows"] is False and release["latest_workflows"] == {}
    assert [set(b) for b in release["recent_builds"]] == [MINI_KEYS]
    assert release["recent_builds"][0]["status"] == "success" and release["recent_builds"][0]["is_2_0_job"]
    assert release["last_success"]["build_num"] == release["recent_builds"][0]["build_num"]
    assert "last_non_success" not in release and release["running_builds"] == []
    assert call(world, "GET", "/api/v1.1/me").body["num_projects_followed"] == 1
    # pycircleci: same answers
    assert world.api().follow_project("acme", "widget")["following"] is True
    assert [p["reponame"] for p in world.api().get_projects()] == ["widget"]
    unfollowed = call(world, "POST", P + "/unfollow")
    assert (unfollowed.status, unfollowed.body) == (200, {"followed": False, "following": False})
    assert call(world, "GET", "/api/v1.1/projects").body == []  # administrators see what they follow
    # members see the projects they belong to, with their role's scopes, followed or not
    (mine,) = call(world, "GET", "/api/v1.1/projects", token=world.reader).body
    assert mine["followed"] is False and mine["scopes"] == ["status", "view-builds"]
    assert call(world, "GET", "/api/v1.1/projects", token=world.stranger).body == []
    assert call(world, "GET", "/api/v1.1/projects", token=world.view_token).body == LOGIN_FIRST
    # follow needs write-settings and a user
    assert call(world, "POST", P + "/follow", token=world.reader).body == DENIED
    assert call(world, "POST", P + "/follow", token=world.stranger).body == NOT_FOUND
    assert call(world, "POST", P + "/follow", token=world.all_token).status == 403
    assert call(world, "POST", P + "/follow", token=world.owner).status == 200
    assert call(world, "POST", P + "/unfollow", token=world.owner).status == 200


def test_settings_get_and_put(world: World) -> None:
    got = call(world, "GET", P + "/settings")
    assert got.status == 200 and set(got.body) == PROJECT_KEYS and got.body["oss"] is False
    assert world.api().get_project_settings("acme", "widget")["reponame"] == "widget"
    # a private project is hidden without a token
    assert call(world, "GET", P, token=None).body == NOT_FOUND
    opened = world.api().update_project_settings("acme", "widget", {"oss": True})
    assert opened["oss"] is True and opened["feature_flags"]["oss"] is True
    assert call(world, "GET", P, token=None).status == 200  # open source: builds readable by anyone
    assert call(world, "GET", P + "/settings", token=None).body == NOT_FOUND  # settings are not
    moved = call(
        world, "PUT", P + "/settings", {"feature_flags": {"oss": False}, "default_branch": "release/v1.2"}
    )
    assert (
        moved.status == 200 and moved.body["oss"] is False and moved.body["default_branch"] == "release/v1.2"
    )
    back = call(
        world, "PUT", P + "/settings", {**moved.body, "default_branch": "main"}
    )  # send back what was read
    assert back.body["default_branch"] == "main"
    assert call(world, "PUT", P + "/settings", {"oss": "yes"}).status == 400
    assert call(world, "PUT", P + "/settings", {"default_branch": ""}).status == 400
    # permissions: writers read settings but do not change them; project tokens by scope
    assert call(world, "GET", P + "/settings", token=world.writer).status == 200
    assert call(world, "GET", P + "/settings", token=world.reader).body == DENIED
    assert call(world, "PUT", P + "/settings", {"oss": True}, token=world.writer).body == DENIED
    assert call(world, "PUT", P + "/settings", {"oss": True}, token=world.stranger).body == NOT_FOUND
    assert call(world, "GET", P + "/settings", token=world.view_token).body == DENIED
    assert call(world, "GET", P + "/settings", token=world.all_token).body["scopes"][-1] == "all"
    assert call(world, "PUT", P + "/settings", {"oss": False}, token=world.owner).status == 200


# ------------------------------------------------------------------ environment variables


def test_env_vars_over_http(world: World) -> None:
    created = call(world, "POST", P + "/envvar", {"name": "HTTP_SECRET", "value": "testvalue"})
    assert created.status == 201 and created.body == {"name": "HTTP_SECRET", "value": "xxxxalue"}
    assert created.headers["location"] == f"{world.base}{LONG_P}/envvar/HTTP_SECRET"
    again = call(world, "POST", P + "/envvar", {"name": "HTTP_SECRET", "value": "abc"})
    assert again.body == {"name": "HTTP_SECRET", "value": "xxxxc"}  # overwritten, short mask
    listed = call(world, "GET", P + "/envvar").body
    assert {"name": "HTTP_SECRET", "value": "xxxxc"} in listed and "abc" not in json.dumps(listed)
    assert call(world, "GET", P + "/envvar/HTTP_SECRET").body == {"name": "HTTP_SECRET", "value": "xxxxc"}
    missing = call(world, "GET", P + "/envvar/NOPE")
    assert (missing.status, missing.body) == (404, {"message": "env var not found"})
    for bad in ({"name": "1BAD", "value": "x"}, {"name": "A-B", "value": "x"}, {"value": "x"}, {"name": "A"}):
        assert call(world, "POST", P + "/envvar", bad).status == 400, bad
    assert call(world, "POST", P + "/envvar", raw=b"{not json", token="admin").status == 400
    deleted = call(world, "DELETE", P + "/envvar/HTTP_SECRET")
    assert (deleted.status, deleted.body) == (200, {"message": "ok"})
    gone = call(world, "DELETE", P + "/envvar/HTTP_SECRET")
    assert (gone.status, gone.body) == (404, {"message": "env var not found"})


def test_env_vars_with_pycircleci(world: World) -> None:
    api = world.api()
    assert api.add_envvar("acme", "widget", "PY_TOKEN", "supersecret") == {
        "name": "PY_TOKEN",
        "value": "xxxxcret",
    }
    assert {"name": "PY_TOKEN", "value": "xxxxcret"} in api.list_envvars("acme", "widget")
    assert api.get_envvar("acme", "widget", "PY_TOKEN")["value"] == "xxxxcret"
    assert api.delete_envvar("acme", "widget", "PY_TOKEN") == {"message": "ok"}
    assert _http_error(lambda: api.get_envvar("acme", "widget", "PY_TOKEN")) == 404


@pytest.mark.parametrize(
    ("who", "read", "write"),
    [
        pytest.param("reader", 403, 403, id="read-member"),
        pytest.param("writer", 200, 403, id="write-member"),
        pytest.param("owner", 200, 201, id="admin-member"),
        pytest.param("stranger", 404, 404, id="non-member"),
        pytest.param("view_token", 403, 403, id="project-token-view-builds"),
        pytest.param("all_token", 200, 201, id="project-token-all"),
        pytest.param(None, 404, 404, id="no-token"),
    ],
)
def test_env_var_permissions(world: World, who: str | None, read: int, write: int) -> None:
    token = getattr(world, who) if who else None
    name = f"PERM_{who or 'anon'}".upper()
    listed = call(world, "GET", P + "/envvar", token=token)
    assert listed.status == read
    added = call(world, "POST", P + "/envvar", {"name": name, "value": "v"}, token=token)
    assert added.status == write
    if write == 404:
        assert added.body == NOT_FOUND
    if write == 403:
        assert added.body == DENIED
    call(world, "POST", P + "/envvar", {"name": name, "value": "v"})  # make sure it exists
    deleted = call(world, "DELETE", P + "/envvar/" + name, token=token)
    assert deleted.status == (200 if write == 201 else write)


# ------------------------------------------------------------------ checkout keys


def test_checkout_keys_with_pycircleci_and_http(world: World) -> None:
    api = world.api()
    key = api.create_checkout_key("acme", "widget", "deploy-key")
    assert set(key) == {"public_key", "type", "fingerprint", "login", "preferred", "time"}
    assert key["type"] == "deploy-key" and key["public_key"].startswith("ssh-ed25519 ")
    md5 = key["fingerprint"]
    assert len(md5.split(":")) == 16
    public = asyncssh.import_public_key(key["public_key"])
    assert public.get_fingerprint("md5") == "MD5:" + md5
    sha = public.get_fingerprint("sha256")[len("SHA256:") :]
    assert md5 in [k["fingerprint"] for k in api.list_checkout_keys("acme", "widget")]
    assert api.get_checkout_key("acme", "widget", md5) == key
    assert api.get_checkout_key("acme", "widget", sha)["fingerprint"] == sha  # sent unencoded
    by_sha = call(world, "GET", P + "/checkout-key/" + urllib.parse.quote(sha, safe=""))
    assert by_sha.status == 200 and by_sha.body["fingerprint"] == sha
    shown = call(world, "GET", P + "/checkout-key/" + urllib.parse.quote(sha, safe="") + "?digest=md5")
    assert shown.body["fingerprint"] == md5
    sha_list = call(world, "GET", P + "/checkout-key?digest=sha256").body
    assert sha in [k["fingerprint"] for k in sha_list]
    assert call(world, "GET", P + "/checkout-key?digest=sha1").status == 400
    user_key = call(world, "POST", P + "/checkout-key", {"type": "github-user-key"}, token=world.owner)
    assert user_key.status == 201 and user_key.body["login"] == "owner"
    assert user_key.headers["location"] == f"{world.base}{LONG_P}/checkout-key/{user_key.body['fingerprint']}"
    assert call(world, "POST", P + "/checkout-key", {"type": "other"}).status == 400
    # user tokens with write-settings only
    assert (
        call(world, "POST", P + "/checkout-key", {"type": "deploy-key"}, token=world.all_token).body == DENIED
    )
    assert call(world, "POST", P + "/checkout-key", {"type": "deploy-key"}, token=world.writer).body == DENIED
    assert (
        call(world, "POST", P + "/checkout-key", {"type": "deploy-key"}, token=world.stranger).body
        == NOT_FOUND
    )
    assert call(world, "GET", P + "/checkout-key", token=world.view_token).body == DENIED
    assert call(world, "GET", P + "/checkout-key/" + md5, token=world.all_token).status == 200
    assert api.delete_checkout_key("acme", "widget", md5) == {"message": "ok"}
    gone = call(world, "GET", P + "/checkout-key/" + md5)
    assert (gone.status, gone.body) == (404, {"message": "checkout key not found"})
    deleted = call(world, "DELETE", P + "/checkout-key/" + urllib.parse.quote(user_key.body["fingerprint"]))
    assert deleted.body == {"message": "ok"}
    assert call(world, "DELETE", P + "/checkout-key/" + md5).status == 404


# ------------------------------------------------------------------ SSH keys, build cache, heroku, repos


def test_ssh_keys(world: World) -> None:
    pem = asyncssh.generate_private_key("ssh-rsa", key_size=2048).export_private_key("pkcs1-pem").decode()
    fingerprint = asyncssh.import_private_key(pem).get_fingerprint("md5")[len("MD5:") :]
    assert world.api().add_ssh_key("acme", "widget", pem, hostname="git.example.com") == ""
    added = call(world, "POST", P + "/ssh-key", {"hostname": None, "private_key": pem})
    assert (added.status, added.body) == (200, "")
    keys = call(world, "GET", P + "/settings").body["ssh_keys"]
    assert {(k["hostname"], k["fingerprint"]) for k in keys} >= {
        ("git.example.com", fingerprint),
        ("", fingerprint),
    }
    assert all(k["public_key"].startswith("ssh-rsa ") for k in keys)
    public = asyncssh.import_private_key(pem).export_public_key("openssh").decode()
    for bad in ({"hostname": None, "private_key": "nope"}, {"private_key": public}, {"hostname": "x"}):
        refused = call(world, "POST", P + "/ssh-key", bad)
        assert (refused.status, refused.body) == (400, INVALID_KEY), bad
    assert call(world, "POST", P + "/ssh-key", {"private_key": pem}, token=world.reader).body == DENIED
    assert call(world, "POST", P + "/ssh-key", {"private_key": pem}, token=world.view_token).body == DENIED
    removed = call(
        world, "DELETE", P + "/ssh-key", {"fingerprint": fingerprint, "hostname": "git.example.com"}
    )
    assert (removed.status, removed.body) == (200, "")
    assert (
        call(
            world, "DELETE", P + "/ssh-key", {"fingerprint": fingerprint, "hostname": "git.example.com"}
        ).status
        == 404
    )
    assert call(world, "DELETE", P + "/ssh-key", {"fingerprint": fingerprint, "hostname": None}).body == ""
    assert call(world, "GET", P + "/settings").body["ssh_keys"] == []


def test_build_cache_and_heroku_key(world: World) -> None:
    cleared = call(world, "DELETE", P + "/build-cache")
    assert (cleared.status, cleared.body) == (200, {"status": "build dependency caches deleted"})
    assert call(world, "DELETE", P + "/build-cache", token=world.all_token).status == 200
    assert call(world, "DELETE", P + "/build-cache", token=world.writer).body == DENIED
    assert call(world, "DELETE", P + "/build-cache", token=None).body == NOT_FOUND
    as_json = call(world, "POST", "/api/v1.1/user/heroku-key", {"apikey": "h-1"}, token=world.reader)
    assert (as_json.status, as_json.body) == (200, "")
    as_form = call(world, "POST", "/api/v1.1/user/heroku-key", form={"apikey": "h-2"}, token=world.reader)
    assert (as_form.status, as_form.body) == (200, "")
    assert call(world, "POST", "/api/v1.1/user/heroku-key", {}, token=world.reader).status == 400
    assert call(world, "POST", "/api/v1.1/user/heroku-key", {"apikey": "x"}, token=None).body == LOGIN_FIRST
    assert (
        call(world, "POST", "/api/v1.1/user/heroku-key", {"apikey": "x"}, token=world.all_token).status == 401
    )


def test_user_repos(world: World) -> None:
    page = call(world, "GET", "//api/v1.1//user/repos/github?per-page=1&page=1")
    (repo,) = page.body
    assert repo["name"] == "widget" and repo["username"] == "acme" and repo["vcs_type"] == "github"
    assert repo["vcs_url"] == "https://github.com/acme/widget" and repo["owner"]["login"] == "acme"
    assert repo["admin"] is True and repo["fork"] is False and "following" in repo and "has_followers" in repo
    assert call(world, "GET", "/api/v1.1/user/repos/gh?per-page=1&page=2").body == []
    assert call(world, "GET", "/api/v1.1/user/repos/bitbucket").body == []
    assert call(world, "GET", "/api/v1.1/user/repos/github?page=0").status == 400
    assert call(world, "GET", "/api/v1.1/user/repos/svn").status == 404
    assert call(world, "GET", "/api/v1.1/user/repos/github", token=world.stranger).body == []
    (mine,) = call(world, "GET", "/api/v1.1/user/repos/github", token=world.reader).body
    assert mine["admin"] is False
    assert call(world, "GET", "/api/v1.1/user/repos/github", token=world.owner).body[0]["admin"] is True
    assert call(world, "GET", "/api/v1.1/user/repos/github", token=None).body == LOGIN_FIRST
    assert [r["name"] for r in world.api().get_user_repos()] == ["widget"]


# ------------------------------------------------------------------ variables reach builds


def test_project_env_var_reaches_the_build_and_beats_a_parameter(world: World) -> None:
    assert (
        call(world, "POST", P + "/envvar", {"name": "DEPLOY_TARGET", "value": "from-project"}).status == 201
    )
    try:
        created = call(
            world, "POST", P + "/tree/main", {"build_parameters": {"DEPLOY_TARGET": "from-param"}}
        ).body
        build = world.srv.wait_finished(SLUG, created["build_num"])
        assert build["outcome"] == "success" and build["build_parameters"] == {"DEPLOY_TARGET": "from-param"}
        (step,) = [s for s in build["steps"] if s["name"] == "Show target"]
        with urllib.request.urlopen(step["actions"][0]["output_url"], timeout=30) as resp:
            chunks = json.loads(resp.read())
        text = "".join(chunk["message"] for chunk in chunks)
        assert "target=from-project" in text and "from-param" not in text
    finally:
        call(world, "DELETE", P + "/envvar/DEPLOY_TARGET")


def test_cli_env_list_shows_masked_values(world: World) -> None:
    world.srv.cli("project", "env", "set", SLUG, "CLI_VAR", "cli-secret-value")
    try:
        listed = world.srv.cli("project", "env", "list", SLUG).stdout
        assert "CLI_VAR\txxxxalue" in listed and "cli-secret-value" not in listed
        assert call(world, "GET", P + "/envvar/CLI_VAR").body == {"name": "CLI_VAR", "value": "xxxxalue"}
    finally:
        world.srv.cli("project", "env", "unset", SLUG, "CLI_VAR")
    refused = world.srv.cli("token", "create", "--user", "ghost", check=False)
    assert refused.returncode != 0 and "circlet user add ghost" in refused.stderr


def test_recent_builds_shows_only_projects_the_user_may_see(tmp_path: pathlib.Path) -> None:
    from circlet.harness import ServerProcess, config_yaml, make_repo

    repos = {name: tmp_path / name for name in ("mine", "theirs")}
    for repo in repos.values():
        make_repo(repo, {".circleci/config.yml": config_yaml([{"run": "true"}])})
    with ServerProcess(tmp_path / "data") as srv:
        for name, repo in repos.items():
            srv.cli("project", "add", f"gh/acme/{name}", "--repo", str(repo))
        srv.make_token()
        srv.cli("user", "add", "ann")
        srv.cli("project", "grant", "gh/acme/mine", "ann", "--role", "read")
        ann = srv.cli("token", "create", "--user", "ann").stdout.strip()
        for name in repos:
            srv.request("POST", f"/api/v1.1/project/gh/acme/{name}/tree/main")
            srv.wait_finished(f"gh/acme/{name}", 1)
        everything = srv.request("GET", "/api/v1.1/recent-builds")[1]
        assert sorted(b["reponame"] for b in everything) == ["mine", "theirs"]
        assert [b["reponame"] for b in srv.request("GET", "/api/v1.1/recent-builds", token=ann)[1]] == [
            "mine"
        ]
        srv.cli("project", "revoke", "gh/acme/mine", "ann")  # from another process: the server's
        time.sleep(5.5)  # caches of who sees what last at most 5 s
        assert srv.request("GET", "/api/v1.1/recent-builds", token=ann)[1] == []
