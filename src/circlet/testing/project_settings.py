"""InMemoryProjectSettingsStore and InMemoryDeliveryStore: the fakes of the project settings and
webhook delivery ports (contract: tests/contract/test_settings_store.py, test_delivery_store.py)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime

from circlet.core.errors import NotFound
from circlet.core.ports import BuildStore
from circlet.core.projects import CheckoutKey, Delivery, DeliveryState, EnvVar, Role, SshKey, Webhook
from circlet.testing.store import _now

# ================================================================ webhook deliveries
# InMemoryDeliveryStore (DeliveryStore): a dict behind a lock, with the semantics of
# store/deliveries_sql.py (contract tests: tests/contract/test_delivery_store.py).


class InMemoryDeliveryStore:
    """DeliveryStore in a dict; thread-safe.

    Given the build store it sits beside (as the table sits beside `builds`), it also behaves
    like the database's foreign key: NotFound for a delivery of an unknown build, and the
    `project_id` filter of `list_deliveries` (without one, that filter keeps nothing).
    """

    def __init__(self, builds: BuildStore | None = None) -> None:
        self._lock = threading.Lock()
        self._builds = builds
        self._deliveries: dict[int, Delivery] = {}
        self._next_id = 1

    def add_delivery(self, delivery: Delivery) -> Delivery:
        if self._builds is not None and self._builds.get_build_by_id(delivery.build_id) is None:
            raise NotFound(f"no build with id {delivery.build_id}")
        with self._lock:
            delivery = replace(delivery, id=self._next_id, created_at=delivery.created_at or _now())
            self._next_id += 1
            self._deliveries[delivery.id or 0] = delivery
        return delivery

    def save_delivery(self, delivery: Delivery) -> None:
        if delivery.id is None:
            raise ValueError("save_delivery needs a stored delivery (id is None)")
        with self._lock:
            if delivery.id not in self._deliveries:
                raise NotFound(f"no delivery with id {delivery.id}")
            self._deliveries[delivery.id] = delivery

    def due_deliveries(self, now: datetime, limit: int = 100) -> list[Delivery]:
        with self._lock:
            due = [
                d
                for _, d in sorted(self._deliveries.items())
                if d.state is DeliveryState.PENDING
                and (d.next_attempt_at is None or d.next_attempt_at <= now)
            ]
        return due[: max(limit, 0)]

    def list_deliveries(
        self, *, build_id: int | None = None, project_id: int | None = None, limit: int = 100
    ) -> list[Delivery]:
        with self._lock:
            found = [d for _, d in sorted(self._deliveries.items(), reverse=True)]
        if build_id is not None:
            found = [d for d in found if d.build_id == build_id]
        if project_id is not None:
            found = [d for d in found if self._project_of(d.build_id) == project_id]
        return found[: max(limit, 0)]

    def _project_of(self, build_id: int) -> int | None:
        build = self._builds.get_build_by_id(build_id) if self._builds is not None else None
        return build.project_id if build is not None else None


# ================================================================ project settings
# InMemoryProjectSettingsStore (ProjectSettingsStore): dicts behind a lock, with the semantics of
# store/settings_sql.py (contract tests: tests/contract/test_settings_store.py).


class InMemoryProjectSettingsStore:
    """ProjectSettingsStore in dicts; thread-safe. Like SqlProjectSettingsStore, stored objects
    without `created_at` get the current time and overwriting a variable keeps its `created_at`.
    It knows no projects or users, so it cannot refuse unknown ones as the database does."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: dict[tuple[int, int], Role] = {}
        self._follows: set[tuple[int, int]] = set()
        self._env: dict[tuple[int, str], EnvVar] = {}
        self._checkout_keys: dict[int, CheckoutKey] = {}
        self._ssh_keys: dict[int, SshKey] = {}
        self._webhooks: dict[int, Webhook] = {}
        self._ids: dict[str, int] = {}

    def _new_id(self, kind: str) -> int:
        self._ids[kind] = self._ids.get(kind, 0) + 1
        return self._ids[kind]

    # members

    def set_member(self, project_id: int, user_id: int, role: Role) -> None:
        with self._lock:
            self._members[(project_id, user_id)] = role

    def remove_member(self, project_id: int, user_id: int) -> bool:
        with self._lock:
            return self._members.pop((project_id, user_id), None) is not None

    def member_role(self, project_id: int, user_id: int) -> Role | None:
        with self._lock:
            return self._members.get((project_id, user_id))

    # follows

    def follow(self, project_id: int, user_id: int) -> bool:
        with self._lock:
            new = (project_id, user_id) not in self._follows
            self._follows.add((project_id, user_id))
            return new

    def unfollow(self, project_id: int, user_id: int) -> bool:
        with self._lock:
            if (project_id, user_id) not in self._follows:
                return False
            self._follows.discard((project_id, user_id))
            return True

    def followed_projects(self, user_id: int) -> list[int]:
        with self._lock:
            return sorted(p for p, u in self._follows if u == user_id)

    # environment variables

    def set_env_var(self, project_id: int, var: EnvVar) -> EnvVar:
        with self._lock:
            old = self._env.get((project_id, var.name))
            created = old.created_at if old is not None else (var.created_at or _now())
            var = replace(var, created_at=created)
            self._env[(project_id, var.name)] = var
            return var

    def get_env_var(self, project_id: int, name: str) -> EnvVar | None:
        with self._lock:
            return self._env.get((project_id, name))

    def list_env_vars(self, project_id: int) -> list[EnvVar]:
        with self._lock:
            return [v for (p, name), v in sorted(self._env.items()) if p == project_id]

    def delete_env_var(self, project_id: int, name: str) -> bool:
        with self._lock:
            return self._env.pop((project_id, name), None) is not None

    # checkout keys

    def add_checkout_key(self, key: CheckoutKey) -> CheckoutKey:
        with self._lock:
            key = replace(key, id=self._new_id("checkout"), created_at=key.created_at or _now())
            self._checkout_keys[key.id or 0] = key
            return key

    def list_checkout_keys(self, project_id: int) -> list[CheckoutKey]:
        with self._lock:
            return [k for _, k in sorted(self._checkout_keys.items()) if k.project_id == project_id]

    def delete_checkout_key(self, project_id: int, key_id: int) -> bool:
        with self._lock:
            key = self._checkout_keys.get(key_id)
            if key is None or key.project_id != project_id:
                return False
            del self._checkout_keys[key_id]
            return True

    # SSH keys

    def add_ssh_key(self, key: SshKey) -> SshKey:
        with self._lock:
            key = replace(key, id=self._new_id("ssh"), created_at=key.created_at or _now())
            self._ssh_keys[key.id or 0] = key
            return key

    def list_ssh_keys(self, project_id: int) -> list[SshKey]:
        with self._lock:
            return [k for _, k in sorted(self._ssh_keys.items()) if k.project_id == project_id]

    def delete_ssh_key(self, project_id: int, fingerprint: str, hostname: str) -> bool:
        with self._lock:
            doomed = [
                i
                for i, k in self._ssh_keys.items()
                if k.project_id == project_id and k.fingerprint == fingerprint and k.hostname == hostname
            ]
            for i in doomed:
                del self._ssh_keys[i]
            return bool(doomed)

    # webhooks

    def add_webhook(self, hook: Webhook) -> Webhook:
        with self._lock:
            hook = replace(hook, id=self._new_id("webhook"), created_at=hook.created_at or _now())
            self._webhooks[hook.id or 0] = hook
            return hook

    def list_webhooks(self, project_id: int) -> list[Webhook]:
        with self._lock:
            return [h for _, h in sorted(self._webhooks.items()) if h.project_id == project_id]

    def delete_webhook(self, project_id: int, hook_id: int) -> bool:
        with self._lock:
            hook = self._webhooks.get(hook_id)
            if hook is None or hook.project_id != project_id:
                return False
            del self._webhooks[hook_id]
            return True
