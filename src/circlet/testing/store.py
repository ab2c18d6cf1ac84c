"""InMemoryBuildStore: the fake of core/ports.py BuildStore.

Dicts behind a lock, with the semantics of store/sql.py (contract tests:
tests/contract/test_build_store.py run on both).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Collection
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from circlet.core.errors import Conflict, NotFound
from circlet.core.model import Action, Build, Lifecycle, Outcome, Project, Token, User, VcsType
from circlet.core.ports import BuildQuery


def _slug_key(vcs_type: VcsType, username: str, reponame: str) -> str:
    return f"{vcs_type.value}/{username}/{reponame}".lower()


def _same_job(a: str | None, b: str | None) -> bool:
    return (a or "build") == (b or "build")


class InMemoryBuildStore:
    """BuildStore in dicts; thread-safe. Builds are deep-copied in and out, as a database would.

    Same extras as SqlBuildStore: NotFound for unknown projects/builds on create_build,
    save_build and save_action; Conflict for duplicate logins and token hashes; `created_at`
    filled with the current time when missing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._projects: dict[int, Project] = {}
        self._project_keys: dict[str, int] = {}
        self._next_num: dict[int, int] = {}
        self._builds: dict[int, Build] = {}
        self._build_keys: dict[tuple[int, int], int] = {}
        self._actions: dict[int, dict[tuple[int, int], Action]] = {}
        self._tests: dict[tuple[int, int], tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
        self._users: dict[int, User] = {}
        self._tokens: dict[int, Token] = {}
        self._ids: dict[str, int] = {}

    def _new_id(self, kind: str) -> int:
        self._ids[kind] = self._ids.get(kind, 0) + 1
        return self._ids[kind]

    # projects

    def add_project(self, project: Project) -> Project:
        key = _slug_key(project.vcs_type, project.username, project.reponame)
        with self._lock:
            if key in self._project_keys:
                raise Conflict(f"project {project.slug} already exists")
            project = replace(project, id=self._new_id("project"), created_at=project.created_at or _now())
            self._projects[project.id or 0] = project
            self._project_keys[key] = project.id or 0
            self._next_num[project.id or 0] = 1
            return project

    def get_project(self, vcs_type: str, username: str, reponame: str) -> Project | None:
        vcs = VcsType.parse(vcs_type)
        if vcs is None:
            return None
        with self._lock:
            project_id = self._project_keys.get(_slug_key(vcs, username, reponame))
            return self._projects.get(project_id) if project_id is not None else None

    def get_project_by_id(self, project_id: int) -> Project | None:
        with self._lock:
            return self._projects.get(project_id)

    def list_projects(self) -> list[Project]:
        with self._lock:
            return [self._projects[k] for k in sorted(self._projects)]

    def save_project(self, project: Project) -> None:
        """Replace the default branch and oss flag; NotFound for an unknown id."""
        if project.id is None:
            raise ValueError("save_project needs a stored project (id is None)")
        with self._lock:
            stored = self._projects.get(project.id)
            if stored is None:
                raise NotFound(f"no project with id {project.id}")
            self._projects[project.id] = replace(
                stored, default_branch=project.default_branch, oss=project.oss
            )

    # builds

    def create_build(self, build: Build) -> Build:
        with self._lock:
            if build.project_id not in self._projects:
                raise NotFound(f"no project with id {build.project_id}")
            build_num = self._next_num[build.project_id]
            self._next_num[build.project_id] = build_num + 1
            build = replace(copy.deepcopy(build), id=self._new_id("build"), build_num=build_num)
            self._builds[build.id or 0] = build
            self._build_keys[(build.project_id, build_num)] = build.id or 0
            return copy.deepcopy(build)

    def get_build(self, project_id: int, build_num: int) -> Build | None:
        with self._lock:
            build_id = self._build_keys.get((project_id, build_num))
            return copy.deepcopy(self._builds[build_id]) if build_id is not None else None

    def get_build_by_id(self, build_id: int) -> Build | None:
        with self._lock:
            build = self._builds.get(build_id)
            return copy.deepcopy(build) if build is not None else None

    def save_build(self, build: Build) -> None:
        """Replace every field but id, project_id and build_num; NotFound for an unknown id."""
        if build.id is None:
            raise ValueError("save_build needs a stored build (id is None)")
        with self._lock:
            stored = self._builds.get(build.id)
            if stored is None:
                raise NotFound(f"no build with id {build.id}")
            self._builds[build.id] = replace(
                copy.deepcopy(build), project_id=stored.project_id, build_num=stored.build_num
            )

    def _copies(self, keep: list[Build]) -> list[Build]:
        return [copy.deepcopy(b) for b in keep]

    def list_builds(self, query: BuildQuery) -> list[Build]:
        with self._lock:
            found = [
                b
                for b in self._builds.values()
                if (query.project_ids is None or b.project_id in query.project_ids)
                and (query.branch is None or b.branch == query.branch)
                and (query.lifecycles is None or b.lifecycle in query.lifecycles)
                and (query.outcomes is None or b.outcome in query.outcomes)
            ]
            if query.project_ids is not None and len(query.project_ids) == 1:
                found.sort(key=lambda b: b.build_num, reverse=True)
            else:
                found.sort(key=lambda b: b.id or 0, reverse=True)
            offset, limit = max(query.offset, 0), max(query.limit, 0)
            return self._copies(found[offset : offset + limit])

    def builds_in(self, lifecycles: tuple[Lifecycle, ...]) -> list[Build]:
        with self._lock:
            return self._copies(
                [self._builds[k] for k in sorted(self._builds) if self._builds[k].lifecycle in lifecycles]
            )

    def previous_build(
        self,
        project_id: int,
        branch: str | None,
        job_name: str | None,
        before_num: int,
        *,
        finished_only: bool = False,
        outcome: Outcome | None = None,
    ) -> Build | None:
        """Jobs `None` and `build` are the same job (None means the default job, `build`)."""
        with self._lock:
            candidates = [
                b
                for b in self._builds.values()
                if b.project_id == project_id
                and b.build_num < before_num
                and b.branch == branch
                and _same_job(b.job_name, job_name)
                and (
                    not finished_only
                    or (b.lifecycle is Lifecycle.FINISHED and b.outcome is not Outcome.CANCELED)
                )
                and (outcome is None or b.outcome == outcome)
            ]
            if not candidates:
                return None
            return copy.deepcopy(max(candidates, key=lambda b: b.build_num))

    def retries_of_many(self, project_id: int, build_nums: Collection[int]) -> dict[int, list[Build]]:
        wanted = set(build_nums)
        with self._lock:
            found = sorted(
                (b for b in self._builds.values() if b.project_id == project_id and b.retry_of in wanted),
                key=lambda b: b.build_num,
            )
            by_num: dict[int, list[Build]] = {}
            for build in self._copies(found):
                by_num.setdefault(build.retry_of or 0, []).append(build)
            return by_num

    def retries_of(self, project_id: int, build_num: int) -> list[Build]:
        with self._lock:
            found = [
                b for b in self._builds.values() if b.project_id == project_id and b.retry_of == build_num
            ]
            return self._copies(sorted(found, key=lambda b: b.build_num))

    # actions

    def save_action(self, build_id: int, action: Action) -> None:
        with self._lock:
            if build_id not in self._builds:
                raise NotFound(f"no build with id {build_id}")
            self._actions.setdefault(build_id, {})[(action.step, action.index)] = action

    def save_actions(self, build_id: int, actions: list[Action]) -> None:
        with self._lock:
            if build_id not in self._builds:
                raise NotFound(f"no build with id {build_id}")
            mine = self._actions.setdefault(build_id, {})
            for action in actions:
                mine[(action.step, action.index)] = action

    def add_test_results(
        self, build_id: int, node_index: int, tests: list[dict[str, Any]], exceptions: list[dict[str, Any]]
    ) -> None:
        with self._lock:
            if build_id not in self._builds:
                raise NotFound(f"no build with id {build_id}")
            kept = self._tests.setdefault((build_id, node_index), ([], []))
            kept[0].extend(copy.deepcopy(tests))
            kept[1].extend(copy.deepcopy(exceptions))

    def test_results(self, build_id: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with self._lock:
            found = sorted((k[1], v) for k, v in self._tests.items() if k[0] == build_id)
            return (
                [copy.deepcopy(t) for _, v in found for t in v[0]],
                [copy.deepcopy(e) for _, v in found for e in v[1]],
            )

    def list_actions(self, build_id: int) -> list[Action]:
        with self._lock:
            by_key = self._actions.get(build_id, {})
            return [by_key[k] for k in sorted(by_key)]

    def get_action(self, build_id: int, step: int, index: int) -> Action | None:
        with self._lock:
            return self._actions.get(build_id, {}).get((step, index))

    # users and tokens

    def add_user(self, user: User) -> User:
        with self._lock:
            if any(u.login == user.login for u in self._users.values()):
                raise Conflict(f"user {user.login} already exists")
            user = replace(user, id=self._new_id("user"), created_at=user.created_at or _now())
            self._users[user.id or 0] = user
            return user

    def get_user(self, user_id: int) -> User | None:
        with self._lock:
            return self._users.get(user_id)

    def get_user_by_login(self, login: str) -> User | None:
        with self._lock:
            return next((u for u in self._users.values() if u.login == login), None)

    def list_users(self) -> list[User]:
        with self._lock:
            return [self._users[k] for k in sorted(self._users)]

    def add_token(self, token: Token) -> Token:
        with self._lock:
            if any(t.token_hash == token.token_hash for t in self._tokens.values()):
                raise Conflict("a token with this hash already exists")
            if (token.user_id is not None and token.user_id not in self._users) or (
                token.project_id is not None and token.project_id not in self._projects
            ):
                raise NotFound("the token's user or project does not exist")
            token = replace(token, id=self._new_id("token"), created_at=token.created_at or _now())
            self._tokens[token.id or 0] = token
            return token

    def find_token(self, token_hash: str) -> Token | None:
        with self._lock:
            return next(
                (t for t in self._tokens.values() if t.token_hash == token_hash and not t.revoked), None
            )

    def get_token(self, token_id: int) -> Token | None:
        with self._lock:
            token = self._tokens.get(token_id)
            return token if token is not None and not token.revoked else None

    def revoke_token(self, token_id: int) -> bool:
        """True when the token exists (revoking twice is fine), False otherwise."""
        with self._lock:
            token = self._tokens.get(token_id)
            if token is None:
                return False
            self._tokens[token_id] = replace(token, revoked=True)
            return True

    def list_tokens(self) -> list[Token]:
        with self._lock:
            return [self._tokens[k] for k in sorted(self._tokens)]


def _now() -> datetime:
    return datetime.now(UTC)
