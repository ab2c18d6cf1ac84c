"""Who may do what on a project (api-v1.1.md 2.3, 2.4), as a table and one pure function."""

from __future__ import annotations

from enum import StrEnum

from circlet.core.model import Project, Scope, Token
from circlet.core.projects import Role

# What each scope includes: status < view-builds < {read-settings, trigger-builds, write-settings} < all.
INCLUDES: dict[Scope, frozenset[Scope]] = {
    Scope.STATUS: frozenset({Scope.STATUS}),
    Scope.VIEW_BUILDS: frozenset({Scope.STATUS, Scope.VIEW_BUILDS}),
    Scope.READ_SETTINGS: frozenset({Scope.STATUS, Scope.VIEW_BUILDS, Scope.READ_SETTINGS}),
    Scope.TRIGGER_BUILDS: frozenset({Scope.STATUS, Scope.VIEW_BUILDS, Scope.TRIGGER_BUILDS}),
    Scope.WRITE_SETTINGS: frozenset(
        {Scope.STATUS, Scope.VIEW_BUILDS, Scope.READ_SETTINGS, Scope.WRITE_SETTINGS}
    ),
    Scope.ALL: frozenset(Scope),
}


# What a member of each role may do.
ROLE_SCOPE: dict[Role, Scope] = {
    Role.READ: Scope.VIEW_BUILDS,
    Role.WRITE: Scope.TRIGGER_BUILDS,
    Role.ADMIN: Scope.ALL,
}
WRITE_EXTRA = frozenset({Scope.READ_SETTINGS})  # writers may read settings too


def allowed_scopes(
    role: Role | None, *, user_admin: bool = False, oss: bool = False, token_scope: Scope | None = None
) -> list[Scope]:
    """What a user may do on a project (a /projects entry's `scopes`), smallest first: the
    same answers as decide() gives a personal token of that user. With `token_scope`, what a
    project token of that scope may do instead."""
    if token_scope is not None:
        return [scope for scope in Scope if scope in INCLUDES[token_scope]]
    if user_admin:
        return list(Scope)
    if role is None:
        return [Scope.STATUS, Scope.VIEW_BUILDS] if oss else []
    allowed = INCLUDES[ROLE_SCOPE[role]] | (WRITE_EXTRA if role is Role.WRITE else frozenset())
    return [scope for scope in Scope if scope in allowed]


class Decision(StrEnum):
    """The answer to a request on a project."""

    ALLOW = "allow"  # go on
    HIDE = "hide"  # 404 Project not found: do not reveal that the project exists
    DENY = "deny"  # 403 Permission denied: visible, but not allowed


def decide(
    token: Token | None,
    project: Project,
    need: Scope,
    *,
    user_only: bool = False,
    user_admin: bool = False,
    role: Role | None = None,
) -> Decision:
    """May this token do something needing `need` on `project`?

    A personal token acts as its user: an administrator may do everything everywhere; anyone
    else what their role on the project allows (api-v1.1.md 2.3), and sees nothing of a
    project they are not a member of (unless it is open source, for reads). A project token
    acts on its own project with its scope, never on user-only endpoints; the status scope
    never reaches the API. Without a token only reads of open-source projects are allowed.
    """
    if token is None:
        if project.oss and need is Scope.VIEW_BUILDS and not user_only:
            return Decision.ALLOW
        return Decision.HIDE
    if token.user_id is not None:
        if user_admin:
            return Decision.ALLOW
        if role is None:
            if project.oss and need is Scope.VIEW_BUILDS:
                return Decision.ALLOW
            return Decision.HIDE
        allowed = INCLUDES[ROLE_SCOPE[role]] | (WRITE_EXTRA if role is Role.WRITE else frozenset())
        return Decision.ALLOW if need in allowed else Decision.DENY
    if token.project_id != project.id:
        return Decision.HIDE
    if user_only or token.scope is Scope.STATUS:
        return Decision.DENY
    return Decision.ALLOW if need in INCLUDES[token.scope] else Decision.DENY
