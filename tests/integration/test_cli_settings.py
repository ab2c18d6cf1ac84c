"""`circlet user`, `circlet project grant/revoke/webhook/env` and `token create --user` in-process
through Click's CliRunner, each test with its own CIRCLET_DATA_DIR (SQLite) in tmp_path."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from circlet.bootstrap import build_services
from circlet.cli import main
from circlet.core.projects import Role
from circlet.harness import config_yaml, make_repo
from circlet.service import Circlet
from circlet.settings import load_settings

pytestmark = pytest.mark.timeout(60)

Cli = Callable[..., Result]
SLUG = "gh/acme/widget"


@pytest.fixture(autouse=True)
def _no_circlet_settings_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CIRCLET_"):
            monkeypatch.delenv(name)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def cli(data_dir: Path, tmp_path: Path) -> Cli:
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(main, list(args), env={"CIRCLET_DATA_DIR": str(data_dir)})

    repo = tmp_path / "widget"
    make_repo(repo, {".circleci/config.yml": config_yaml(["checkout"])})
    assert invoke("project", "add", SLUG, "--repo", str(repo)).exit_code == 0
    return invoke


def _svc(data_dir: Path) -> Circlet:
    return build_services(load_settings({"CIRCLET_DATA_DIR": str(data_dir)})).circlet


def test_users_are_added_and_listed(cli: Cli, data_dir: Path) -> None:
    added = cli("user", "add", "ada", "--name", "Ada Lovelace", "--email", "ada@example.com")
    assert added.exit_code == 0 and added.stdout == "added user ada\n"
    boss = cli("user", "add", "boss", "--admin")
    assert boss.stdout == "added user boss (administrator)\n"
    again = cli("user", "add", "ada")
    assert again.exit_code == 1 and "user ada already exists" in again.stderr
    bad = cli("user", "add", "a b")
    assert bad.exit_code == 1 and "invalid login" in bad.stderr
    assert cli("user", "list").stdout == "ada\tuser\tAda Lovelace\tada@example.com\nboss\tadmin\t\t\n"


def test_token_create_refuses_unknown_users_but_makes_admin(cli: Cli, data_dir: Path) -> None:
    unknown = cli("token", "create", "--user", "ghost")
    assert unknown.exit_code == 1
    assert "no user 'ghost'" in unknown.stderr and "circlet user add ghost" in unknown.stderr
    assert cli("token", "create").exit_code == 0  # the default `admin` appears on first use
    assert cli("user", "list").stdout == "admin\tadmin\t\t\n"
    cli("user", "add", "ada")
    assert cli("token", "create", "--user", "ada").stdout.startswith("ccl_")


def test_grant_and_revoke(cli: Cli, data_dir: Path) -> None:
    cli("user", "add", "ada")
    granted = cli("project", "grant", SLUG, "ada", "--role", "write")
    assert granted.exit_code == 0 and granted.stdout == "ada is now write on gh/acme/widget\n"
    svc = _svc(data_dir)
    project = svc.get_project("gh", "acme", "widget")
    assert svc.role_of(project, svc.user_by_login("ada")) is Role.WRITE
    assert cli("project", "grant", SLUG, "ada", "--role", "admin").exit_code == 0
    assert svc.role_of(project, svc.user_by_login("ada")) is Role.ADMIN
    bad_role = cli("project", "grant", SLUG, "ada", "--role", "owner")
    assert bad_role.exit_code == 2 and "'owner' is not one of" in bad_role.stderr
    ghost = cli("project", "grant", SLUG, "ghost", "--role", "read")
    assert ghost.exit_code == 1 and "circlet user add" in ghost.stderr
    nowhere = cli("project", "grant", "gh/acme/nope", "ada", "--role", "read")
    assert nowhere.exit_code == 1 and "Project not found: gh/acme/nope" in nowhere.stderr
    assert cli("project", "revoke", SLUG, "ada").stdout == "ada is no longer a member of gh/acme/widget\n"
    assert svc.role_of(project, svc.user_by_login("ada")) is None
    twice = cli("project", "revoke", SLUG, "ada")
    assert twice.exit_code == 1 and "not a member" in twice.stderr


def test_webhooks_add_list_remove(cli: Cli) -> None:
    added = cli("project", "webhook", "add", SLUG, "https://hooks.example.com/a")
    assert added.exit_code == 0 and added.stdout == "added webhook 1: https://hooks.example.com/a\n"
    cli("project", "webhook", "add", SLUG, "http://127.0.0.1:9/b")
    assert cli("project", "webhook", "list", SLUG).stdout == (
        "1\thttps://hooks.example.com/a\n2\thttp://127.0.0.1:9/b\n"
    )
    bad = cli("project", "webhook", "add", SLUG, "hooks.example.com")
    assert bad.exit_code == 1 and "invalid webhook URL" in bad.stderr
    assert cli("project", "webhook", "remove", SLUG, "1").stdout == "removed webhook 1\n"
    missing = cli("project", "webhook", "remove", SLUG, "1")
    assert missing.exit_code == 1 and "no webhook 1" in missing.stderr
    assert cli("project", "webhook", "list", SLUG).stdout == "2\thttp://127.0.0.1:9/b\n"


def test_env_set_list_unset(cli: Cli, data_dir: Path) -> None:
    assert cli("project", "env", "set", SLUG, "DEPLOY_KEY", "supersecret").stdout == "set DEPLOY_KEY\n"
    cli("project", "env", "set", SLUG, "SHORT", "abc")
    listed = cli("project", "env", "list", SLUG)
    assert listed.stdout == "DEPLOY_KEY\txxxxcret\nSHORT\txxxxc\n"
    assert "supersecret" not in listed.stdout
    bad = cli("project", "env", "set", SLUG, "1BAD", "x")
    assert bad.exit_code == 1 and "Invalid environment variable name" in bad.stderr
    svc = _svc(data_dir)
    assert svc.get_env_var(svc.get_project("gh", "acme", "widget"), "DEPLOY_KEY").value == "supersecret"
    assert cli("project", "env", "unset", SLUG, "SHORT").stdout == "unset SHORT\n"
    missing = cli("project", "env", "unset", SLUG, "SHORT")
    assert missing.exit_code == 1 and "env var not found: SHORT" in missing.stderr
    assert cli("project", "env", "list", SLUG).stdout == "DEPLOY_KEY\txxxxcret\n"
