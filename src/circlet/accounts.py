"""Users, tokens, memberships and following: the account verbs of the `Circlet` facade.

`AccountVerbs` is mixed into `service.Circlet` (callers use those methods on a Circlet, never
this class alone); the caches it reads (`_users`, `_tokens`, `_visible`) are made by
`Circlet.__init__`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from circlet.core.errors import InvalidRequest, NotFound
from circlet.core.model import Project, Scope, Token, User
from circlet.core.ports import BuildStore, ProjectSettingsStore
from circlet.core.projects import Role
from circlet.core.sessions import FORGET_AFTER, SESSION_LIFETIME, SessionStore

log = logging.getLogger("circlet.service")

LOGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
USER_CACHE_SECONDS = 5.0
AUTH_CACHE_SECONDS = 5.0


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class AccountVerbs:
    """Users and their tokens, project memberships, and which projects a user sees or follows."""

    store: BuildStore
    settings: ProjectSettingsStore
    sessions: SessionStore
    clock: Callable[[], datetime]
    _users: dict[int, tuple[float, User | None]]
    _tokens: dict[str, tuple[float, Token | None]]
    _visible: dict[int, tuple[float, tuple[Project, ...]]]

    if TYPE_CHECKING:  # provided by Circlet

        def _touch(self, project_id: int) -> None: ...

    def ensure_user(self, login: str, *, name: str | None = None, admin: bool = False) -> User:
        user = self.store.get_user_by_login(login)
        if user is None:
            user = self.store.add_user(User(login=login, name=name, admin=admin, created_at=self.clock()))
        return user

    def create_token(
        self,
        *,
        user: User | None = None,
        project: Project | None = None,
        scope: Scope = Scope.ALL,
        label: str = "",
    ) -> tuple[Token, str]:
        """Make a token; returns the stored record and the secret (shown once, stored hashed)."""
        if (user is None) == (project is None):
            raise InvalidRequest("a token belongs to a user or to a project")
        secret = "ccl_" + secrets.token_urlsafe(30)
        token = self.store.add_token(
            Token(
                token_hash=hash_token(secret),
                label=label,
                user_id=user.id if user else None,
                project_id=project.id if project else None,
                scope=scope,
                created_at=self.clock(),
            )
        )
        return token, secret

    def user(self, user_id: int | None) -> User | None:
        """A user by id, from a cache kept for USER_CACHE_SECONDS (names rarely change)."""
        if user_id is None:
            return None
        now = time.monotonic()
        hit = self._users.get(user_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        user = self.store.get_user(user_id)
        self._users[user_id] = (now + USER_CACHE_SECONDS, user)
        return user

    def standing(self, token: Token | None, project: Project) -> tuple[bool, Role | None]:
        """Whether the token's user is an administrator, and their role on the project."""
        if token is None or token.user_id is None:
            return False, None
        user = self.user(token.user_id)
        if user is not None and user.admin:
            return True, None
        return False, self.settings.member_role(project.id or 0, token.user_id)

    def authenticate(self, secret: str | None) -> Token | None:
        """The token with this secret, if it is valid. Answers are kept AUTH_CACHE_SECONDS: a
        token revoked by another process (the CLI) stops working within that time."""
        if not secret:
            return None
        digest = hash_token(secret)
        now = time.monotonic()
        hit = self._tokens.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        token = self.store.find_token(digest)
        if len(self._tokens) > 10_000:
            self._tokens.clear()
        self._tokens[digest] = (now + AUTH_CACHE_SECONDS, token)
        return token

    def revoke_token(self, token_id: int) -> bool:
        self._tokens.clear()
        return self.store.revoke_token(token_id)

    def token_by_hash(self, token_hash: str) -> Token | None:
        """The live token stored under this hash; None when it is unknown or revoked. Not
        cached: callers cache briefly."""
        return self.store.find_token(token_hash)

    def start_session(self, token: Token) -> str:
        """Sign in a browser with a user's live token: a new server-side session lasting
        SESSION_LIFETIME. Returns the secret for the cookie (only its sha256 is stored)."""
        if token.id is None or token.user_id is None or token.revoked:
            raise InvalidRequest("only a live personal token can start a web session")
        secret = secrets.token_urlsafe(32)
        now = self.clock()
        self.sessions.forget(now - FORGET_AFTER)  # sign-ins are rare: keep the table small here
        digest, expires = hash_token(secret), now + SESSION_LIFETIME
        self.sessions.create(token_id=token.id, secret_hash=digest, created_at=now, expires_at=expires)
        log.info("event=web_session_started user_id=%s token_id=%s", token.user_id, token.id)
        return secret

    def session_token(self, secret: str) -> Token | None:
        """The token of a live session (not ended, not expired, its token not revoked); None
        otherwise. Not cached: callers cache briefly."""
        if not secret:
            return None
        token_id = self.sessions.find(hash_token(secret), self.clock())
        return self.store.get_token(token_id) if token_id is not None else None

    def end_session(self, secret: str) -> None:
        """Sign out: the session stops working for every copy of its cookie. Idempotent."""
        if secret and self.sessions.end(hash_token(secret), self.clock()):
            log.info("event=web_session_ended")

    def project_tokens(self, project: Project) -> list[Token]:
        """The project's tokens that are not revoked, oldest first (their hashes, never secrets)."""
        return [t for t in self.store.list_tokens() if t.project_id == project.id and not t.revoked]

    def add_user(
        self, login: str, *, name: str | None = None, email: str | None = None, admin: bool = False
    ) -> User:
        """A new user (Conflict when the login is taken; InvalidRequest for a bad login)."""
        if not LOGIN.fullmatch(login):
            raise InvalidRequest(f"invalid login {login!r}: use letters, digits, '.', '_' and '-'")
        user = self.store.add_user(
            User(login=login, name=name or None, email=email or None, admin=admin, created_at=self.clock())
        )
        log.info("event=user_added login=%s admin=%s", login, admin)
        return user

    def list_users(self) -> list[User]:
        return self.store.list_users()

    def user_by_login(self, login: str) -> User:
        user = self.store.get_user_by_login(login)
        if user is None:
            raise NotFound(f"no user {login!r}")
        return user

    def grant(self, project: Project, login: str, role: Role) -> User:
        """Make `login` a member of the project with `role` (or change their role). Idempotent."""
        user = self.user_by_login(login)
        self.settings.set_member(project.id or 0, user.id or 0, role)
        self._touch(project.id or 0)  # who sees what changed: cached lists must not survive it
        log.info("event=member_set project=%s login=%s role=%s", project.slug, login, role)
        return user

    def revoke(self, project: Project, login: str) -> None:
        """End `login`'s membership; NotFound when they were not a member."""
        user = self.user_by_login(login)
        self._touch(project.id or 0)
        if not self.settings.remove_member(project.id or 0, user.id or 0):
            raise NotFound(f"{login} is not a member of {project.slug}")
        log.info("event=member_removed project=%s login=%s", project.slug, login)

    def role_of(self, project: Project, user: User) -> Role | None:
        return self.settings.member_role(project.id or 0, user.id or 0)

    def follow(self, project: Project, user: User) -> bool:
        """Follow the project; True when the user did not follow it yet. Starts no build."""
        return self.settings.follow(project.id or 0, user.id or 0)

    def unfollow(self, project: Project, user: User) -> bool:
        return self.settings.unfollow(project.id or 0, user.id or 0)

    def followed_projects(self, user: User) -> list[Project]:
        """Projects the user follows and may still see, by id."""
        found = (self.store.get_project_by_id(pid) for pid in self.settings.followed_projects(user.id or 0))
        return [p for p in found if p is not None and self._may_see(p, user)]

    def visible_projects(self, user: User) -> list[Project]:
        """Every project the user may read: all for administrators, else their memberships and
        open-source projects. Costs one membership lookup per project."""
        return [p for p in self.store.list_projects() if self._may_see(p, user)]

    def visible_projects_now(self, user: User) -> tuple[Project, ...]:
        """visible_projects, kept AUTH_CACHE_SECONDS per user (a grant or revoke made by another
        process applies within that time, like token revocation)."""
        now = time.monotonic()
        hit = self._visible.get(user.id or 0)
        if hit is not None and hit[0] > now:
            return hit[1]
        projects = tuple(self.visible_projects(user))
        self._visible[user.id or 0] = (now + AUTH_CACHE_SECONDS, projects)
        return projects

    def dashboard_projects(self, user: User) -> list[Project]:
        """The projects of /projects: followed ones, and for non-administrators also the ones
        they are a member of; ordered by id."""
        chosen = {p.id: p for p in self.followed_projects(user)}
        if not user.admin:
            for project in self.store.list_projects():
                if project.id not in chosen and self.role_of(project, user) is not None:
                    chosen[project.id] = project
        return [chosen[k] for k in sorted(chosen, key=lambda i: i or 0)]

    def projects_with_followers(self) -> set[int]:
        """Ids of projects someone follows (one query per user: fine for a self-hosted server)."""
        found: set[int] = set()
        for user in self.store.list_users():
            found.update(self.settings.followed_projects(user.id or 0))
        return found

    def _may_see(self, project: Project, user: User) -> bool:
        return user.admin or project.oss or self.role_of(project, user) is not None
