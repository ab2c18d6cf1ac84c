"""Per-request helpers: the services, the caller's token, and access to a project."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from starlette.requests import Request

from circlet.core.errors import NotFound, PermissionDenied, Unauthenticated
from circlet.core.model import Project, Scope, Token, User
from circlet.core.permissions import Decision, decide
from circlet.http.cache import RenderCache
from circlet.metrics import Metrics
from circlet.poller import Pushes
from circlet.service import Circlet
from circlet.wire import Links


@dataclass(frozen=True, kw_only=True)
class Services:
    """What the HTTP layer needs, built once by bootstrap."""

    circlet: Circlet
    links: Links
    cache: RenderCache = field(default_factory=RenderCache)
    pushes: Pushes | None = None  # push webhooks (http/hooks.py); None = refused
    worker_token: str = ""  # the runner gateway's shared secret (remote/gateway.py); "" = refuse all
    metrics: Metrics | None = None  # GET /api/v1.1/admin/metrics (metrics.py); None = 404


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def token_secret(request: Request) -> str | None:
    """The first non-empty of: Circle-Token header, Basic user (or password), circle-token query."""
    header = request.headers.get("circle-token")
    if header:
        return header.strip()
    auth = request.headers.get("authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, password = "", ""
        if user or password:
            return user or password
    query = request.query_params.get("circle-token")
    return query or None


def caller(request: Request) -> Token | None:
    """The caller's token; unknown tokens count as none. Cached on the request."""
    if not hasattr(request.state, "token"):
        request.state.token = services(request).circlet.authenticate(token_secret(request))
    token: Token | None = request.state.token
    return token


def caller_user(request: Request) -> User:
    """The calling user (user-level endpoints): 401 without a valid personal token."""
    token = caller(request)
    if token is None or token.user_id is None:
        raise Unauthenticated("You must log in first.")
    user = services(request).circlet.store.get_user(token.user_id)
    if user is None:
        raise Unauthenticated("You must log in first.")
    return user


def project_access(
    request: Request, vcs_type: str, username: str, reponame: str, need: Scope, *, user_only: bool = False
) -> tuple[Project, Token | None]:
    """The project, if the caller may act on it with `need`; else 404 or 403 as the spec says."""
    try:
        project = services(request).circlet.get_project(vcs_type, username, reponame)
    except NotFound:
        raise NotFound("Project not found") from None
    token = caller(request)
    user_admin, role = services(request).circlet.standing(token, project)
    decision = decide(token, project, need, user_only=user_only, user_admin=user_admin, role=role)
    if decision is Decision.HIDE:
        raise NotFound("Project not found")
    if decision is Decision.DENY:
        raise PermissionDenied("Permission denied")
    return project, token
