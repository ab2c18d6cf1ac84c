"""The service's project settings on fakes: users and members, follows, environment variables
(and how they reach builds), checkout and SSH keys, webhooks, the /projects overview, settings.

Assertions are on what the service leaves in the fakes and on what it answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from textwrap import dedent
from urllib.parse import quote

import asyncssh
import pytest

from circlet.core.errors import Conflict, InvalidRequest, NotFound
from circlet.core.model import Lifecycle, Outcome, Project, Scope, Token, User
from circlet.core.permissions import Decision, allowed_scopes, decide
from circlet.core.projects import EnvVar, Role
from circlet.service import INVALID_SSH_KEY, Circlet
from circlet.sshkeys import md5_fingerprint, read_private_key
from circlet.testing import (
    FakeSourceHost,
    InMemoryBuildStore,
    InMemoryLogStore,
    InMemoryProjectSettingsStore,
    RecordingDispatcher,
)
from circlet.testing.clock import FakeClock

T0 = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
URL = "https://git.example/acme/widget.git"
CONFIG = dedent(
    """\
    version: 2
    jobs:
      build:
        docker:
          - image: cimg/base:2024.01
        steps:
          - run: echo $DEPLOY_TARGET
    """
)


@dataclass
class Env:
    svc: Circlet
    store: InMemoryBuildStore
    settings: InMemoryProjectSettingsStore
    dispatcher: RecordingDispatcher
    source: FakeSourceHost
    project: Project
    other: Project
    admin: User
    ada: User


@pytest.fixture
def env() -> Iterator[Env]:
    source = FakeSourceHost()
    source.add_commit(URL, files={".circleci/config.yml": CONFIG}, message="First")
    source.add_commit(URL, branch="release/v1.2", files={"x": "1"}, message="Release")
    store, settings, dispatcher = InMemoryBuildStore(), InMemoryProjectSettingsStore(), RecordingDispatcher()
    svc = Circlet(
        store=store,
        logs=InMemoryLogStore(),
        source=source,
        dispatcher=dispatcher,
        settings=settings,
        base_url="https://ci.example.com",
        clock=FakeClock(T0, step=timedelta(seconds=1)),
    )
    project = svc.add_project(vcs_type="gh", username="acme", reponame="widget", repo_url=URL)
    other = svc.add_project(vcs_type="bb", username="acme", reponame="gadget", repo_url=URL)
    admin = svc.add_user("root", admin=True)
    ada = svc.add_user("ada", name="Ada Lovelace", email="ada@example.com")
    yield Env(
        svc=svc,
        store=store,
        settings=settings,
        dispatcher=dispatcher,
        source=source,
        project=project,
        other=other,
        admin=admin,
        ada=ada,
    )


def _token(user: User) -> Token:
    return Token(id=1, token_hash="x", user_id=user.id)


# ------------------------------------------------------------------ users and members


def test_users_are_added_once_with_valid_logins(env: Env) -> None:
    assert [u.login for u in env.svc.list_users()] == ["root", "ada"]
    assert env.svc.user_by_login("ada") == env.ada
    assert env.ada.name == "Ada Lovelace" and env.ada.email == "ada@example.com" and not env.ada.admin
    with pytest.raises(Conflict):
        env.svc.add_user("ada")
    for bad in ("", "has space", "a/b", "-dash-first", "x" * 300):
        with pytest.raises(InvalidRequest):
            env.svc.add_user(bad)
    with pytest.raises(NotFound):
        env.svc.user_by_login("nobody")


@pytest.mark.parametrize(
    ("role", "need", "decision"),
    [
        pytest.param(None, Scope.VIEW_BUILDS, Decision.HIDE, id="stranger-hidden"),
        pytest.param(Role.READ, Scope.VIEW_BUILDS, Decision.ALLOW, id="read-views"),
        pytest.param(Role.READ, Scope.READ_SETTINGS, Decision.DENY, id="read-no-settings"),
        pytest.param(Role.READ, Scope.TRIGGER_BUILDS, Decision.DENY, id="read-no-trigger"),
        pytest.param(Role.WRITE, Scope.TRIGGER_BUILDS, Decision.ALLOW, id="write-triggers"),
        pytest.param(Role.WRITE, Scope.READ_SETTINGS, Decision.ALLOW, id="write-reads-settings"),
        pytest.param(Role.WRITE, Scope.WRITE_SETTINGS, Decision.DENY, id="write-no-settings-writes"),
        pytest.param(Role.ADMIN, Scope.WRITE_SETTINGS, Decision.ALLOW, id="admin-writes-settings"),
    ],
)
def test_standing_gives_the_members_role(
    env: Env, role: Role | None, need: Scope, decision: Decision
) -> None:
    if role is not None:
        env.svc.grant(env.project, "ada", role)
    user_admin, found = env.svc.standing(_token(env.ada), env.project)
    assert (user_admin, found) == (False, role)
    assert decide(_token(env.ada), env.project, need, user_admin=user_admin, role=found) is decision
    assert env.svc.standing(_token(env.ada), env.other) == (False, None)


def test_administrators_see_everything_without_membership(env: Env) -> None:
    assert env.svc.standing(_token(env.admin), env.project) == (True, None)
    assert env.svc.standing(None, env.project) == (False, None)
    assert env.svc.standing(Token(token_hash="p", project_id=env.project.id), env.project) == (False, None)


def test_grant_changes_and_revoke_ends_membership(env: Env) -> None:
    env.svc.grant(env.project, "ada", Role.READ)
    env.svc.grant(env.project, "ada", Role.ADMIN)
    assert env.settings.member_role(env.project.id or 0, env.ada.id or 0) is Role.ADMIN
    env.svc.revoke(env.project, "ada")
    assert env.settings.member_role(env.project.id or 0, env.ada.id or 0) is None
    with pytest.raises(NotFound, match="not a member"):
        env.svc.revoke(env.project, "ada")
    with pytest.raises(NotFound):
        env.svc.grant(env.project, "nobody", Role.READ)


# ------------------------------------------------------------------ follows and the dashboard


def test_follow_and_what_projects_lists(env: Env) -> None:
    assert env.svc.follow(env.project, env.admin) is True
    assert env.svc.follow(env.project, env.admin) is False
    # administrators: only what they follow
    assert [p.reponame for p in env.svc.dashboard_projects(env.admin)] == ["widget"]
    # others: what they follow or belong to, and only what they may see
    assert env.svc.dashboard_projects(env.ada) == []
    env.svc.grant(env.other, "ada", Role.READ)
    assert [p.reponame for p in env.svc.dashboard_projects(env.ada)] == ["gadget"]
    env.svc.follow(env.project, env.ada)  # followed, then hidden: not a member, not open source
    assert [p.reponame for p in env.svc.dashboard_projects(env.ada)] == ["gadget"]
    assert env.svc.followed_projects(env.ada) == []
    env.svc.update_project_settings(env.project, oss=True)
    assert [p.reponame for p in env.svc.dashboard_projects(env.ada)] == ["widget", "gadget"]
    assert env.svc.projects_with_followers() == {env.project.id}
    assert env.svc.unfollow(env.project, env.admin) is True
    assert env.svc.unfollow(env.project, env.admin) is False
    assert env.svc.dashboard_projects(env.admin) == []


def test_visible_projects(env: Env) -> None:
    assert [p.reponame for p in env.svc.visible_projects(env.admin)] == ["widget", "gadget"]
    assert env.svc.visible_projects(env.ada) == []
    env.svc.grant(env.other, "ada", Role.WRITE)
    assert [p.reponame for p in env.svc.visible_projects(env.ada)] == ["gadget"]


def test_overview_lists_branches_scopes_and_keys(env: Env) -> None:
    svc = env.svc
    svc.grant(env.project, "ada", Role.WRITE)
    svc.follow(env.project, env.ada)
    builds = [svc.trigger(env.project, user_id=env.ada.id) for _ in range(7)]
    env.dispatcher.run_next(svc, outcome=Outcome.FAILED)
    env.dispatcher.run_next(svc, outcome=Outcome.SUCCESS)
    release = svc.trigger(env.project, branch="release/v1.2", build_parameters={"CIRCLE_JOB": "build"})
    view = svc.overview(env.project, env.ada)
    assert view.following is True
    assert view.scopes == (Scope.STATUS, Scope.VIEW_BUILDS, Scope.READ_SETTINGS, Scope.TRIGGER_BUILDS)
    assert view.has_usable_key is False and view.ssh_keys == ()
    branches = {b.name: b for b in view.branches}
    assert set(branches) == {"main", "release/v1.2"}
    main = branches["main"]
    assert [b.build.build_num for b in main.recent] == [7, 6, 5, 4, 3]
    assert main.last_success is not None and main.last_success.build.build_num == builds[1].build_num
    assert main.last_success.status == "fixed"
    assert main.last_non_success is not None and main.last_non_success.build.build_num == 1
    assert main.running == () and main.pusher_logins == ("ada",)
    rel = branches["release/v1.2"]
    assert [b.build.build_num for b in rel.recent] == [release.build_num]
    assert rel.last_success is None and rel.last_non_success is None and rel.pusher_logins == ()
    admin_view = svc.overview(env.project, env.admin)
    assert admin_view.following is False and admin_view.scopes == tuple(Scope)
    token_view = svc.overview(env.project, None, token_scope=Scope.VIEW_BUILDS, branches=False)
    assert token_view.scopes == (Scope.STATUS, Scope.VIEW_BUILDS) and token_view.branches == ()


def test_running_builds_are_listed(env: Env) -> None:
    build = env.svc.trigger(env.project)
    env.svc.build_started(build.id or 0, T0, "w")
    main = env.svc.overview(env.project, env.admin).branches[0]
    assert [b.build.build_num for b in main.running] == [build.build_num]
    assert main.running[0].build.lifecycle is Lifecycle.RUNNING


@pytest.mark.parametrize(
    ("role", "admin", "oss", "expected"),
    [
        pytest.param(None, False, False, [], id="stranger"),
        pytest.param(None, False, True, ["status", "view-builds"], id="stranger-oss"),
        pytest.param(Role.READ, False, False, ["status", "view-builds"], id="read"),
        pytest.param(
            Role.WRITE, False, False, ["status", "view-builds", "read-settings", "trigger-builds"], id="write"
        ),
        pytest.param(Role.ADMIN, False, False, [s.value for s in Scope], id="admin-role"),
        pytest.param(None, True, False, [s.value for s in Scope], id="administrator"),
    ],
)
def test_allowed_scopes(role: Role | None, admin: bool, oss: bool, expected: list[str]) -> None:
    assert [s.value for s in allowed_scopes(role, user_admin=admin, oss=oss)] == expected


# ------------------------------------------------------------------ settings


def test_settings_change_oss_and_default_branch(env: Env) -> None:
    changed = env.svc.update_project_settings(env.project, oss=True, default_branch="release/v1.2")
    assert changed.oss is True and changed.default_branch == "release/v1.2"
    assert env.svc.get_project("gh", "acme", "widget") == changed  # no stale cached project
    build = env.svc.trigger(changed)
    assert build.branch == "release/v1.2"
    same = env.svc.update_project_settings(changed)
    assert same == changed
    for bad in ("", "  ", " main"):
        with pytest.raises(InvalidRequest):
            env.svc.update_project_settings(changed, default_branch=bad)


def test_heroku_key_needs_a_value(env: Env) -> None:
    env.svc.set_heroku_key(env.ada, "abc")
    with pytest.raises(InvalidRequest):
        env.svc.set_heroku_key(env.ada, "")


# ------------------------------------------------------------------ environment variables


def test_env_vars_are_validated_overwritten_and_deleted(env: Env) -> None:
    svc = env.svc
    var = svc.set_env_var(env.project, "DEPLOY_TARGET", "staging-server")
    assert var.name == "DEPLOY_TARGET" and var.created_at is not None
    svc.set_env_var(env.project, "DEPLOY_TARGET", "production")
    svc.set_env_var(env.project, "_X1", "")
    assert [(v.name, v.value) for v in svc.list_env_vars(env.project)] == [
        ("DEPLOY_TARGET", "production"),
        ("_X1", ""),
    ]
    assert svc.get_env_var(env.project, "DEPLOY_TARGET").value == "production"
    for bad in ("", "1ABC", "A-B", "A B", "É", "X\n"):
        with pytest.raises(InvalidRequest, match="Invalid environment variable name"):
            svc.set_env_var(env.project, bad, "v")
    with pytest.raises(NotFound, match="env var not found"):
        svc.get_env_var(env.other, "DEPLOY_TARGET")
    svc.delete_env_var(env.project, "DEPLOY_TARGET")
    with pytest.raises(NotFound, match="env var not found"):
        svc.delete_env_var(env.project, "DEPLOY_TARGET")
    assert env.settings.list_env_vars(env.project.id or 0) == [
        EnvVar(name="_X1", value="", created_at=env.settings.list_env_vars(env.project.id or 0)[0].created_at)
    ]


def test_project_variables_reach_builds_and_beat_parameters(env: Env) -> None:
    env.svc.set_env_var(env.project, "DEPLOY_TARGET", "from-project")
    env.svc.set_env_var(env.project, "CIRCLE_JOB", "cannot-override-builtins")
    env.svc.set_env_var(env.other, "OTHER_ONLY", "x")
    build = env.svc.trigger(env.project, build_parameters={"DEPLOY_TARGET": "from-param", "EXTRA": "p"})
    (request,) = [r for r in env.dispatcher.submitted if r.build_id == build.id]
    assert request.environment["DEPLOY_TARGET"] == "from-project"
    assert request.environment["EXTRA"] == "p"
    assert request.environment["CIRCLE_JOB"] == "build"
    assert "OTHER_ONLY" not in request.environment
    # a requeued build (restart) gets the variables as they are then
    env.svc.set_env_var(env.project, "DEPLOY_TARGET", "changed")
    env.dispatcher.submitted.clear()
    env.svc.recover()
    assert [r.environment["DEPLOY_TARGET"] for r in env.dispatcher.submitted] == ["changed"]


# ------------------------------------------------------------------ checkout keys


def test_checkout_keys_are_real_ed25519_pairs(env: Env) -> None:
    svc = env.svc
    deploy = svc.create_checkout_key(env.project, "deploy-key", env.ada)
    user_key = svc.create_checkout_key(env.project, "github-user-key", env.ada)
    assert deploy.preferred is True and user_key.preferred is False
    assert deploy.login is None and user_key.login == "ada"
    private = asyncssh.import_private_key(deploy.private_key)
    assert private.export_public_key("openssh").decode().strip() == deploy.public_key
    assert deploy.public_key.startswith("ssh-ed25519 ")
    assert deploy.fingerprint_md5 == md5_fingerprint(private.public_data)
    assert private.get_fingerprint("md5") == "MD5:" + deploy.fingerprint_md5
    assert private.get_fingerprint("sha256") == "SHA256:" + deploy.fingerprint_sha256
    assert len(deploy.fingerprint_md5.split(":")) == 16
    with pytest.raises(InvalidRequest, match="deploy-key, github-user-key"):
        svc.create_checkout_key(env.project, "user-key", env.ada)
    assert [k.id for k in svc.list_checkout_keys(env.project)] == [deploy.id, user_key.id]


def test_checkout_keys_are_found_by_either_fingerprint_in_any_spelling(env: Env) -> None:
    svc = env.svc
    key = svc.create_checkout_key(env.project, "deploy-key", env.ada)
    sha = key.fingerprint_sha256
    spellings = {
        key.fingerprint_md5: "md5",
        key.fingerprint_md5.upper(): "md5",
        "MD5:" + key.fingerprint_md5: "md5",
        sha: "sha256",
        sha + "=": "sha256",
        "SHA256:" + sha: "sha256",
        quote(sha, safe=""): "sha256",
        quote("SHA256:" + sha, safe=""): "sha256",
        sha.replace("+", " "): "sha256",
    }
    for spelling, digest in spellings.items():
        assert svc.find_checkout_key(env.project, spelling) == (key, digest), spelling
    with pytest.raises(NotFound, match="checkout key not found"):
        svc.find_checkout_key(env.other, key.fingerprint_md5)
    with pytest.raises(NotFound, match="checkout key not found"):
        svc.find_checkout_key(env.project, "00:11")
    svc.delete_checkout_key(env.project, quote(sha, safe=""))
    assert svc.list_checkout_keys(env.project) == []
    with pytest.raises(NotFound, match="checkout key not found"):
        svc.delete_checkout_key(env.project, key.fingerprint_md5)


def test_a_sha256_fingerprint_with_folded_slashes_still_matches(env: Env) -> None:
    key = env.svc.create_checkout_key(env.project, "deploy-key", env.ada)
    doubled = replace(key, id=None, fingerprint_sha256="ab//cd+ef", fingerprint_md5="00:00")
    stored = env.settings.add_checkout_key(doubled)
    assert env.svc.find_checkout_key(env.project, "ab/cd+ef") == (stored, "sha256")


# ------------------------------------------------------------------ SSH keys


def _rsa_pem() -> str:
    return asyncssh.generate_private_key("ssh-rsa", key_size=2048).export_private_key("pkcs1-pem").decode()


def test_ssh_keys_are_validated_and_deduplicated(env: Env) -> None:
    svc = env.svc
    pem = _rsa_pem()
    key = svc.add_ssh_key(env.project, pem, None)
    assert key.hostname == "" and key.fingerprint == read_private_key(pem).fingerprint_md5
    assert svc.add_ssh_key(env.project, pem, "") == key
    scoped = svc.add_ssh_key(env.project, pem, "example.com")
    assert scoped.id != key.id
    public = svc.public_ssh_keys(env.project)
    assert [(k.hostname, k.fingerprint) for k in public] == [
        ("", key.fingerprint),
        ("example.com", key.fingerprint),
    ]
    assert public[0].public_key.startswith("ssh-rsa ")
    public_text = asyncssh.import_private_key(pem).export_public_key("openssh").decode()
    for bad in ("", "garbage", public_text, pem[: len(pem) // 2]):
        with pytest.raises(InvalidRequest) as caught:
            svc.add_ssh_key(env.project, bad, None)
        assert caught.value.message == INVALID_SSH_KEY
    assert INVALID_SSH_KEY == "it looks like private key is invalid key.  Double check"
    svc.delete_ssh_key(env.project, "MD5:" + key.fingerprint, None)
    assert [k.hostname for k in env.settings.list_ssh_keys(env.project.id or 0)] == ["example.com"]
    with pytest.raises(NotFound, match="ssh key not found"):
        svc.delete_ssh_key(env.project, key.fingerprint, "other.com")
    assert svc.overview(env.project, env.admin).ssh_keys[0].hostname == "example.com"


# ------------------------------------------------------------------ webhooks


def test_webhooks_crud(env: Env) -> None:
    svc = env.svc
    hook = svc.add_webhook(env.project, "https://hooks.example.com/circle?x=1")
    assert [h.url for h in svc.list_webhooks(env.project)] == ["https://hooks.example.com/circle?x=1"]
    assert svc.list_webhooks(env.other) == []
    for bad in ("", "ftp://x", "hooks.example.com", "https://"):
        with pytest.raises(InvalidRequest):
            svc.add_webhook(env.project, bad)
    with pytest.raises(NotFound):
        svc.remove_webhook(env.other, hook.id or 0)
    svc.remove_webhook(env.project, hook.id or 0)
    assert svc.list_webhooks(env.project) == []
