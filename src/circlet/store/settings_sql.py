"""ProjectSettingsStore on SQLAlchemy Core: members, follows, environment variables, checkout and
SSH keys, webhooks (tables of migration 0002), on SQLite or PostgreSQL.

Same conventions as store/sql.py: rows become dataclasses through explicit `_x_from_row` /
`_x_to_values` functions; every method is one short transaction (writes begin with BEGIN
IMMEDIATE on SQLite through make_engine's hook, reads are single SELECTs without BEGIN), so one
store is shared by every thread.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from circlet.core.errors import NotFound
from circlet.core.projects import CheckoutKey, EnvVar, Role, SshKey, Webhook
from circlet.store.sql import _READ_ONLY
from circlet.store.tables import (
    checkout_keys,
    follows,
    project_env_vars,
    project_members,
    project_ssh_keys,
    project_webhooks,
)

# ---------------------------------------------------------------- rows <-> dataclasses


def _env_var_from_row(row: sa.Row[Any]) -> EnvVar:
    m = row._mapping
    return EnvVar(name=m["name"], value=m["value"], created_at=m["created_at"])


def _checkout_key_to_values(key: CheckoutKey) -> dict[str, Any]:
    return {
        "project_id": key.project_id,
        "type": key.type,
        "public_key": key.public_key,
        "private_key": key.private_key,
        "fingerprint_md5": key.fingerprint_md5,
        "fingerprint_sha256": key.fingerprint_sha256,
        "login": key.login,
        "preferred": key.preferred,
        "created_at": key.created_at,
    }


def _checkout_key_from_row(row: sa.Row[Any]) -> CheckoutKey:
    m = row._mapping
    return CheckoutKey(
        id=m["id"],
        project_id=m["project_id"],
        type=m["type"],
        public_key=m["public_key"],
        private_key=m["private_key"],
        fingerprint_md5=m["fingerprint_md5"],
        fingerprint_sha256=m["fingerprint_sha256"],
        login=m["login"],
        preferred=m["preferred"],
        created_at=m["created_at"],
    )


def _ssh_key_to_values(key: SshKey) -> dict[str, Any]:
    return {
        "project_id": key.project_id,
        "hostname": key.hostname,
        "private_key": key.private_key,
        "fingerprint": key.fingerprint,
        "created_at": key.created_at,
    }


def _ssh_key_from_row(row: sa.Row[Any]) -> SshKey:
    m = row._mapping
    return SshKey(
        id=m["id"],
        project_id=m["project_id"],
        hostname=m["hostname"],
        private_key=m["private_key"],
        fingerprint=m["fingerprint"],
        created_at=m["created_at"],
    )


def _webhook_to_values(hook: Webhook) -> dict[str, Any]:
    return {"project_id": hook.project_id, "url": hook.url, "created_at": hook.created_at}


def _webhook_from_row(row: sa.Row[Any]) -> Webhook:
    m = row._mapping
    return Webhook(id=m["id"], project_id=m["project_id"], url=m["url"], created_at=m["created_at"])


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------- the store


class SqlProjectSettingsStore:
    """ProjectSettingsStore on an SQLAlchemy engine (use store.sql.make_engine; schema by migrate).

    Beyond the protocol: writes naming an unknown project or user raise NotFound; stored objects
    without `created_at` get the current time; overwriting an environment variable keeps its
    `created_at`.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        if engine.dialect.name == "postgresql":
            self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        else:
            self._reader = engine.execution_options(**{_READ_ONLY: True})
        self._insert = sqlite.insert if engine.dialect.name == "sqlite" else postgresql.insert

    def _all(self, statement: sa.Select[Any]) -> list[sa.Row[Any]]:
        with self._reader.connect() as connection:
            return list(connection.execute(statement))

    def _write(self, statement: sa.Executable, what: str) -> int:
        """Run one write in its own transaction and return the rows it changed; a broken
        foreign key is NotFound(what)."""
        try:
            with self._engine.begin() as connection:
                return connection.execute(statement).rowcount
        except sa.exc.IntegrityError:
            raise NotFound(what) from None

    def _returning(self, statement: sa.Executable, what: str) -> Any:
        """Run one write ending in RETURNING of one column and return that value."""
        try:
            with self._engine.begin() as connection:
                return connection.execute(statement).scalar_one()
        except sa.exc.IntegrityError:
            raise NotFound(what) from None

    # members

    def set_member(self, project_id: int, user_id: int, role: Role) -> None:
        upsert = self._insert(project_members).values(
            project_id=project_id, user_id=user_id, role=role.value, created_at=_now()
        )
        self._write(
            upsert.on_conflict_do_update(
                index_elements=[project_members.c.project_id, project_members.c.user_id],
                set_={"role": upsert.excluded.role},
            ),
            "no such project or user",
        )

    def remove_member(self, project_id: int, user_id: int) -> bool:
        changed = self._write(
            project_members.delete().where(
                project_members.c.project_id == project_id, project_members.c.user_id == user_id
            ),
            "no such member",
        )
        return changed > 0

    def member_role(self, project_id: int, user_id: int) -> Role | None:
        rows = self._all(
            sa.select(project_members.c.role).where(
                project_members.c.project_id == project_id, project_members.c.user_id == user_id
            )
        )
        return Role(rows[0][0]) if rows else None

    # follows

    def follow(self, project_id: int, user_id: int) -> bool:
        insert = self._insert(follows).values(project_id=project_id, user_id=user_id, created_at=_now())
        statement = insert.on_conflict_do_nothing().returning(follows.c.project_id)
        try:
            with self._engine.begin() as connection:
                return connection.execute(statement).first() is not None
        except sa.exc.IntegrityError:
            raise NotFound("no such project or user") from None

    def unfollow(self, project_id: int, user_id: int) -> bool:
        changed = self._write(
            follows.delete().where(follows.c.project_id == project_id, follows.c.user_id == user_id),
            "no such follow",
        )
        return changed > 0

    def followed_projects(self, user_id: int) -> list[int]:
        rows = self._all(
            sa.select(follows.c.project_id).where(follows.c.user_id == user_id).order_by(follows.c.project_id)
        )
        return [row[0] for row in rows]

    # environment variables

    def set_env_var(self, project_id: int, var: EnvVar) -> EnvVar:
        upsert = self._insert(project_env_vars).values(
            project_id=project_id, name=var.name, value=var.value, created_at=var.created_at or _now()
        )
        created_at = self._returning(
            upsert.on_conflict_do_update(
                index_elements=[project_env_vars.c.project_id, project_env_vars.c.name],
                set_={"value": upsert.excluded.value},
            ).returning(project_env_vars.c.created_at),
            f"no project with id {project_id}",
        )
        return replace(var, created_at=created_at)

    def get_env_var(self, project_id: int, name: str) -> EnvVar | None:
        rows = self._all(
            sa.select(project_env_vars).where(
                project_env_vars.c.project_id == project_id, project_env_vars.c.name == name
            )
        )
        return _env_var_from_row(rows[0]) if rows else None

    def list_env_vars(self, project_id: int) -> list[EnvVar]:
        statement = (
            sa.select(project_env_vars)
            .where(project_env_vars.c.project_id == project_id)
            .order_by(project_env_vars.c.name)
        )
        return [_env_var_from_row(row) for row in self._all(statement)]

    def delete_env_var(self, project_id: int, name: str) -> bool:
        changed = self._write(
            project_env_vars.delete().where(
                project_env_vars.c.project_id == project_id, project_env_vars.c.name == name
            ),
            "no such variable",
        )
        return changed > 0

    # checkout keys

    def add_checkout_key(self, key: CheckoutKey) -> CheckoutKey:
        key = replace(key, created_at=key.created_at or _now())
        new_id = self._returning(
            checkout_keys.insert().values(_checkout_key_to_values(key)).returning(checkout_keys.c.id),
            f"no project with id {key.project_id}",
        )
        return replace(key, id=new_id)

    def list_checkout_keys(self, project_id: int) -> list[CheckoutKey]:
        """Oldest first."""
        statement = (
            sa.select(checkout_keys)
            .where(checkout_keys.c.project_id == project_id)
            .order_by(checkout_keys.c.id)
        )
        return [_checkout_key_from_row(row) for row in self._all(statement)]

    def delete_checkout_key(self, project_id: int, key_id: int) -> bool:
        changed = self._write(
            checkout_keys.delete().where(
                checkout_keys.c.project_id == project_id, checkout_keys.c.id == key_id
            ),
            "no such key",
        )
        return changed > 0

    # SSH keys

    def add_ssh_key(self, key: SshKey) -> SshKey:
        key = replace(key, created_at=key.created_at or _now())
        new_id = self._returning(
            project_ssh_keys.insert().values(_ssh_key_to_values(key)).returning(project_ssh_keys.c.id),
            f"no project with id {key.project_id}",
        )
        return replace(key, id=new_id)

    def list_ssh_keys(self, project_id: int) -> list[SshKey]:
        """Oldest first."""
        statement = (
            sa.select(project_ssh_keys)
            .where(project_ssh_keys.c.project_id == project_id)
            .order_by(project_ssh_keys.c.id)
        )
        return [_ssh_key_from_row(row) for row in self._all(statement)]

    def delete_ssh_key(self, project_id: int, fingerprint: str, hostname: str) -> bool:
        """Deletes every key of the project with this fingerprint and hostname."""
        changed = self._write(
            project_ssh_keys.delete().where(
                project_ssh_keys.c.project_id == project_id,
                project_ssh_keys.c.fingerprint == fingerprint,
                project_ssh_keys.c.hostname == hostname,
            ),
            "no such key",
        )
        return changed > 0

    # webhooks

    def add_webhook(self, hook: Webhook) -> Webhook:
        hook = replace(hook, created_at=hook.created_at or _now())
        new_id = self._returning(
            project_webhooks.insert().values(_webhook_to_values(hook)).returning(project_webhooks.c.id),
            f"no project with id {hook.project_id}",
        )
        return replace(hook, id=new_id)

    def list_webhooks(self, project_id: int) -> list[Webhook]:
        """Oldest first."""
        statement = (
            sa.select(project_webhooks)
            .where(project_webhooks.c.project_id == project_id)
            .order_by(project_webhooks.c.id)
        )
        return [_webhook_from_row(row) for row in self._all(statement)]

    def delete_webhook(self, project_id: int, hook_id: int) -> bool:
        changed = self._write(
            project_webhooks.delete().where(
                project_webhooks.c.project_id == project_id, project_webhooks.c.id == hook_id
            ),
            "no such webhook",
        )
        return changed > 0
