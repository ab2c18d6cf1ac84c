"""Permissions, environment and signing: pure rules, table-driven."""

from __future__ import annotations

import pytest

from circlet.core import signing
from circlet.core.env import build_url, builtin_environment, is_env_name, job_environment, parameter_text
from circlet.core.model import Build, Project, Scope, Token, VcsType
from circlet.core.permissions import Decision, decide
from circlet.core.projects import Role

PROJECT = Project(id=1, vcs_type=VcsType.GITHUB, username="acme", reponame="widget", repo_url="/r")
OSS = Project(id=2, vcs_type=VcsType.GITHUB, username="acme", reponame="open", repo_url="/o", oss=True)
USER = Token(token_hash="u", user_id=7)
ALL = Token(token_hash="a", project_id=1, scope=Scope.ALL)
VIEW = Token(token_hash="v", project_id=1, scope=Scope.VIEW_BUILDS)
STATUS = Token(token_hash="s", project_id=1, scope=Scope.STATUS)
OTHER = Token(token_hash="o", project_id=99, scope=Scope.ALL)


R, W, A = Role.READ, Role.WRITE, Role.ADMIN
V, T, RS, WS = Scope.VIEW_BUILDS, Scope.TRIGGER_BUILDS, Scope.READ_SETTINGS, Scope.WRITE_SETTINGS
ALLOW, HIDE, DENY = Decision.ALLOW, Decision.HIDE, Decision.DENY


@pytest.mark.parametrize(
    ("token", "project", "need", "user_only", "admin", "role", "expected"),
    [
        pytest.param(None, PROJECT, V, False, False, None, HIDE, id="anonymous-private-hidden"),
        pytest.param(None, OSS, V, False, False, None, ALLOW, id="anonymous-reads-oss"),
        pytest.param(None, OSS, T, False, False, None, HIDE, id="anonymous-cannot-trigger-oss"),
        pytest.param(USER, PROJECT, WS, False, True, None, ALLOW, id="admin-user-everything"),
        pytest.param(USER, PROJECT, V, False, False, None, HIDE, id="non-member-hidden"),
        pytest.param(USER, OSS, V, False, False, None, ALLOW, id="non-member-reads-oss"),
        pytest.param(USER, OSS, T, False, False, None, HIDE, id="non-member-cannot-trigger-oss"),
        pytest.param(USER, PROJECT, V, False, False, R, ALLOW, id="reader-reads"),
        pytest.param(USER, PROJECT, T, False, False, R, DENY, id="reader-cannot-trigger"),
        pytest.param(USER, PROJECT, RS, False, False, R, DENY, id="reader-cannot-read-settings"),
        pytest.param(USER, PROJECT, T, False, False, W, ALLOW, id="writer-triggers"),
        pytest.param(USER, PROJECT, RS, False, False, W, ALLOW, id="writer-reads-settings"),
        pytest.param(USER, PROJECT, WS, False, False, W, DENY, id="writer-cannot-write-settings"),
        pytest.param(USER, PROJECT, WS, False, False, A, ALLOW, id="project-admin-writes-settings"),
        pytest.param(USER, PROJECT, V, True, False, R, ALLOW, id="user-only-endpoint-for-a-member"),
        pytest.param(ALL, PROJECT, T, False, False, None, ALLOW, id="project-all-triggers"),
        pytest.param(ALL, PROJECT, V, True, False, None, DENY, id="project-token-user-only-403"),
        pytest.param(VIEW, PROJECT, V, False, False, None, ALLOW, id="view-builds-reads"),
        pytest.param(VIEW, PROJECT, T, False, False, None, DENY, id="view-builds-cannot-trigger"),
        pytest.param(VIEW, PROJECT, WS, False, False, None, DENY, id="view-builds-cannot-write"),
        pytest.param(STATUS, PROJECT, V, False, False, None, DENY, id="status-token-never-api"),
        pytest.param(OTHER, PROJECT, V, False, False, None, HIDE, id="other-projects-token-hidden"),
    ],
)
def test_permission_table(
    token: Token | None,
    project: Project,
    need: Scope,
    user_only: bool,
    admin: bool,
    role: Role | None,
    expected: Decision,
) -> None:
    assert decide(token, project, need, user_only=user_only, user_admin=admin, role=role) is expected


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("x", "x"),
        (500, "500"),
        (True, "true"),
        (None, ""),
        ({"a": 1}, '{"a": 1}'),
        ([1, "b"], '[1, "b"]'),
    ],
)
def test_parameter_text(value: object, text: str) -> None:
    assert parameter_text(value) == text


@pytest.mark.parametrize(
    ("name", "ok"), [("A", True), ("_x1", True), ("1A", False), ("A-B", False), ("", False)]
)
def test_env_names(name: str, ok: bool) -> None:
    assert is_env_name(name) is ok


def test_builtins_win_over_project_variables_and_parameters() -> None:
    build = Build(project_id=1, build_num=12, branch="feature/x", vcs_revision="a" * 40)
    builtins = builtin_environment(
        project=PROJECT,
        build=build,
        job_name="test",
        base_url="http://h:1/",
        working_directory="~/project",
        previous_build_num=11,
        username="ann",
    )
    env = job_environment(
        build_parameters={"CIRCLE_BUILD_NUM": "999", "EXTRA": 5, "SHARED": "param"},
        project_variables={"SHARED": "project"},
        builtins=builtins,
    )
    assert env["CIRCLE_BUILD_NUM"] == "12"
    assert env["EXTRA"] == "5"
    assert env["SHARED"] == "project"
    assert env["CIRCLE_BRANCH"] == "feature/x"
    assert "CIRCLE_TAG" not in env
    assert env["CIRCLE_BUILD_URL"] == build_url("http://h:1", PROJECT, 12) == "http://h:1/gh/acme/widget/12"
    assert env["CIRCLE_PREVIOUS_BUILD_NUM"] == "11"
    assert env["CIRCLE_USERNAME"] == "ann"
    assert env["CI"] == env["CIRCLECI"] == "true"


def test_tag_build_has_tag_and_no_branch() -> None:
    build = Build(project_id=1, build_num=3, vcs_tag="v1", vcs_revision="b" * 40)
    env = builtin_environment(
        project=PROJECT, build=build, job_name="build", base_url="http://h", working_directory="~/project"
    )
    assert env["CIRCLE_TAG"] == "v1"
    assert "CIRCLE_BRANCH" not in env


def test_signatures_expire_and_bind_to_the_path() -> None:
    secret = b"k" * 32
    sig = signing.sign(secret, "/a/1", 1000)
    assert signing.verify(secret, "/a/1", 1000, sig, now=999)
    assert not signing.verify(secret, "/a/1", 1000, sig, now=1001)
    assert not signing.verify(secret, "/a/2", 1000, sig, now=999)
    assert not signing.verify(b"x" * 32, "/a/1", 1000, sig, now=999)
    assert not signing.verify(secret, "/a/1", 2000, sig, now=999)
