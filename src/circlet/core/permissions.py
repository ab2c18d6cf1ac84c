"""Who may do what on a project (api-v1.1.md 2.3, 2.4), as a table and one pure function."""

from __future__ import annotations

from enum import StrEnum

from circlet.core.model import Project, Scope, Token

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


class Decision(StrEnum):
    """The answer to a request on a project."""

    ALLOW = "allow"  # go on
    HIDE = "hide"  # 404 Project not found: do not reveal that the project exists
    DENY = "deny"  # 403 Permission denied: visible, but not allowed


def decide(token: Token | None, project: Project, need: Scope, *, user_only: bool = False) -> Decision:
    """May this token do something needing `need` on `project`?

    User tokens act with `all` on every project (the simplification 2.3 allows); project tokens
    act on their own project with their scope, never on user-only endpoints; without a token
    only reads of open-source projects are allowed. The status scope never reaches the API.
    """
    if token is None:
        if project.oss and need is Scope.VIEW_BUILDS and not user_only:
            return Decision.ALLOW
        return Decision.HIDE
    if token.user_id is not None:
        return Decision.ALLOW
    if token.project_id != project.id:
        return Decision.HIDE
    if user_only or token.scope is Scope.STATUS:
        return Decision.DENY
    return Decision.ALLOW if need in INCLUDES[token.scope] else Decision.DENY
