"""One contract for every ProjectSettingsStore: the in-memory fake, SQLite and PostgreSQL.

The build store beside it (same engine for the SQL backends) provides the projects and users
the settings refer to; the project-level BuildStore writes used by settings (save_project,
list_users) are checked here too.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from circlet.core.errors import NotFound
from circlet.core.model import Project, User, VcsType
from circlet.core.ports import BuildStore, ProjectSettingsStore
from circlet.core.projects import CheckoutKey, EnvVar, Role, SshKey, Webhook
from circlet.store.migrate import migrate
from circlet.store.settings_sql import SqlProjectSettingsStore
from circlet.store.sql import SqlBuildStore, make_engine
from circlet.testing import InMemoryBuildStore, InMemoryProjectSettingsStore

T0 = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)


@dataclass
class Stores:
    kind: str
    builds: BuildStore
    settings: ProjectSettingsStore
    project: int
    other: int
    ada: int
    bob: int


def _stores(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    engine = None
    builds: BuildStore
    settings: ProjectSettingsStore
    if kind == "memory":
        builds, settings = InMemoryBuildStore(), InMemoryProjectSettingsStore()
    else:
        if kind == "sqlite":
            url = f"sqlite:///{tmp_path}/data/circlet.db"
        else:
            url = request.getfixturevalue("postgres_url")
        engine = make_engine(url)
        migrate(engine)
        builds, settings = SqlBuildStore(engine), SqlProjectSettingsStore(engine)
    try:
        projects = [
            builds.add_project(
                Project(vcs_type=VcsType.GITHUB, username="acme", reponame=name, repo_url=f"/src/{name}")
            )
            for name in ("widget", "gadget")
        ]
        users = [builds.add_user(User(login=login)) for login in ("ada", "bob")]
        yield Stores(
            kind=kind,
            builds=builds,
            settings=settings,
            project=projects[0].id or 0,
            other=projects[1].id or 0,
            ada=users[0].id or 0,
            bob=users[1].id or 0,
        )
    finally:
        if engine is not None:
            engine.dispose()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    yield from _stores(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    """The database backends only: what the fake, knowing no projects or users, cannot do."""
    yield from _stores(request.param, request, tmp_path)


def _checkout_key(project_id: int, n: int = 1, **changes: object) -> CheckoutKey:
    key = CheckoutKey(
        project_id=project_id,
        type="deploy-key",
        public_key=f"ssh-ed25519 AAAA{n} circlet",
        private_key=f"-----BEGIN OPENSSH PRIVATE KEY-----\n{n}\n-----END OPENSSH PRIVATE KEY-----\n",
        fingerprint_md5=":".join([f"{n:02x}"] * 16),
        fingerprint_sha256=f"sha{n}/+abc",
    )
    return replace(key, **changes)  # type: ignore[arg-type]  # test data


# ------------------------------------------------------------------ members


def test_members_are_set_changed_and_removed(stores: Stores) -> None:
    s = stores.settings
    assert s.member_role(stores.project, stores.ada) is None
    s.set_member(stores.project, stores.ada, Role.READ)
    assert s.member_role(stores.project, stores.ada) is Role.READ
    s.set_member(stores.project, stores.ada, Role.ADMIN)
    assert s.member_role(stores.project, stores.ada) is Role.ADMIN
    assert s.member_role(stores.other, stores.ada) is None
    assert s.member_role(stores.project, stores.bob) is None
    assert s.remove_member(stores.project, stores.ada) is True
    assert s.remove_member(stores.project, stores.ada) is False
    assert s.member_role(stores.project, stores.ada) is None


# ------------------------------------------------------------------ follows


def test_follow_is_idempotent_and_reports_whether_it_was_new(stores: Stores) -> None:
    s = stores.settings
    assert s.followed_projects(stores.ada) == []
    assert s.follow(stores.other, stores.ada) is True
    assert s.follow(stores.project, stores.ada) is True
    assert s.follow(stores.project, stores.ada) is False
    assert s.followed_projects(stores.ada) == sorted([stores.project, stores.other])
    assert s.followed_projects(stores.bob) == []
    assert s.unfollow(stores.project, stores.ada) is True
    assert s.unfollow(stores.project, stores.ada) is False
    assert s.followed_projects(stores.ada) == [stores.other]


# ------------------------------------------------------------------ environment variables


def test_env_vars_overwrite_by_name_and_list_by_name(stores: Stores) -> None:
    s = stores.settings
    first = s.set_env_var(stores.project, EnvVar(name="TOKEN", value="one", created_at=T0))
    assert first == EnvVar(name="TOKEN", value="one", created_at=T0)
    again = s.set_env_var(stores.project, EnvVar(name="TOKEN", value="two"))
    assert again.value == "two" and again.created_at == T0  # overwriting keeps the creation time
    s.set_env_var(stores.project, EnvVar(name="A_FIRST", value="x" * 10_000))
    s.set_env_var(stores.other, EnvVar(name="TOKEN", value="other project"))
    assert [(v.name, v.value) for v in s.list_env_vars(stores.project)] == [
        ("A_FIRST", "x" * 10_000),
        ("TOKEN", "two"),
    ]
    assert s.get_env_var(stores.project, "TOKEN") == EnvVar(name="TOKEN", value="two", created_at=T0)
    assert s.get_env_var(stores.project, "token") is None  # names are case-sensitive
    assert s.get_env_var(stores.project, "MISSING") is None
    assert s.delete_env_var(stores.project, "TOKEN") is True
    assert s.delete_env_var(stores.project, "TOKEN") is False
    assert [v.name for v in s.list_env_vars(stores.project)] == ["A_FIRST"]
    assert [v.value for v in s.list_env_vars(stores.other)] == ["other project"]


def test_env_var_without_time_gets_one(stores: Stores) -> None:
    var = stores.settings.set_env_var(stores.project, EnvVar(name="X", value="unicode ✓ \n multi"))
    assert var.created_at is not None and var.created_at.tzinfo is not None
    assert stores.settings.get_env_var(stores.project, "X") == var


def test_concurrent_env_var_writes_leave_one_value(stores: Stores) -> None:
    s = stores.settings
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: s.set_env_var(stores.project, EnvVar(name="V", value=str(i))), range(40)))
    found = s.list_env_vars(stores.project)
    assert len(found) == 1 and found[0].value in {str(i) for i in range(40)}


# ------------------------------------------------------------------ checkout keys


def test_checkout_keys_round_trip_and_delete_by_id(stores: Stores) -> None:
    s = stores.settings
    one = s.add_checkout_key(_checkout_key(stores.project, 1, created_at=T0, login=None))
    two = s.add_checkout_key(
        _checkout_key(stores.project, 2, type="github-user-key", login="ada", preferred=False)
    )
    s.add_checkout_key(_checkout_key(stores.other, 3))
    assert one.id is not None and two.id is not None and one.id != two.id
    assert two.created_at is not None
    assert s.list_checkout_keys(stores.project) == [one, two]
    assert s.delete_checkout_key(stores.other, one.id) is False  # another project's id
    assert s.delete_checkout_key(stores.project, one.id) is True
    assert s.delete_checkout_key(stores.project, one.id) is False
    assert s.list_checkout_keys(stores.project) == [two]
    assert [k.fingerprint_md5 for k in s.list_checkout_keys(stores.other)] == [":".join(["03"] * 16)]


# ------------------------------------------------------------------ SSH keys


def test_ssh_keys_are_deleted_by_fingerprint_and_hostname(stores: Stores) -> None:
    s = stores.settings

    def key(hostname: str, fingerprint: str, project: int | None = None) -> SshKey:
        return SshKey(
            project_id=project or stores.project,
            hostname=hostname,
            private_key="-----BEGIN...",
            fingerprint=fingerprint,
        )

    everywhere = s.add_ssh_key(replace(key("", "aa:bb"), created_at=T0))
    example = s.add_ssh_key(key("example.com", "aa:bb"))
    other = s.add_ssh_key(key("example.com", "cc:dd"))
    s.add_ssh_key(key("example.com", "aa:bb", stores.other))
    assert everywhere.created_at == T0 and example.created_at is not None
    assert s.list_ssh_keys(stores.project) == [everywhere, example, other]
    assert s.delete_ssh_key(stores.project, "aa:bb", "nowhere.org") is False
    assert s.delete_ssh_key(stores.project, "aa:bb", "example.com") is True
    assert s.list_ssh_keys(stores.project) == [everywhere, other]
    assert s.delete_ssh_key(stores.project, "aa:bb", "") is True
    assert s.delete_ssh_key(stores.project, "aa:bb", "") is False
    assert s.list_ssh_keys(stores.project) == [other]
    assert len(s.list_ssh_keys(stores.other)) == 1


# ------------------------------------------------------------------ webhooks


def test_webhooks_round_trip(stores: Stores) -> None:
    s = stores.settings
    a = s.add_webhook(Webhook(project_id=stores.project, url="https://example.com/a", created_at=T0))
    b = s.add_webhook(Webhook(project_id=stores.project, url="https://example.com/b?x=1&y=2"))
    assert a.created_at == T0 and b.created_at is not None and a.id != b.id
    assert s.list_webhooks(stores.project) == [a, b]
    assert s.list_webhooks(stores.other) == []
    assert s.delete_webhook(stores.other, a.id or 0) is False
    assert s.delete_webhook(stores.project, a.id or 0) is True
    assert s.delete_webhook(stores.project, a.id or 0) is False
    assert s.list_webhooks(stores.project) == [b]


# ------------------------------------------------------------------ the build store's side


def test_save_project_changes_only_default_branch_and_oss(stores: Stores) -> None:
    b = stores.builds
    project = b.get_project_by_id(stores.project)
    assert project is not None and project.oss is False
    b.save_project(replace(project, default_branch="trunk", oss=True, repo_url="/elsewhere", reponame="x"))
    saved = b.get_project_by_id(stores.project)
    assert saved == replace(project, default_branch="trunk", oss=True)
    assert b.get_project("gh", "ACME", "Widget") == saved
    with pytest.raises(NotFound):
        b.save_project(replace(project, id=9999))


def test_list_users_oldest_first(stores: Stores) -> None:
    assert [u.login for u in stores.builds.list_users()] == ["ada", "bob"]


# ------------------------------------------------------------------ the database's extras


def test_sql_refuses_unknown_projects_and_users(sql_stores: Stores) -> None:
    stores = sql_stores
    s = stores.settings
    with pytest.raises(NotFound):
        s.set_member(9999, stores.ada, Role.READ)
    with pytest.raises(NotFound):
        s.set_member(stores.project, 9999, Role.READ)
    with pytest.raises(NotFound):
        s.follow(stores.project, 9999)
    with pytest.raises(NotFound):
        s.set_env_var(9999, EnvVar(name="X", value="y"))
    with pytest.raises(NotFound):
        s.add_checkout_key(_checkout_key(9999))
    with pytest.raises(NotFound):
        s.add_webhook(Webhook(project_id=9999, url="https://example.com"))
