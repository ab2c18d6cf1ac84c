"""Administrators' endpoints (not part of CircleCI's API): webhook deliveries, workers, metrics.

Only a personal token of an administrator gets in: no token (or an unknown one) is 401
`You must log in first.`, any other token 403 `Permission denied`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from circlet.core.errors import InvalidRequest, NotFound, PermissionDenied, Unauthenticated
from circlet.core.model import Build, Project, User
from circlet.core.projects import Delivery
from circlet.core.workers import worker_json
from circlet.http.deps import caller, services
from circlet.http.responses import json_response
from circlet.metrics import CONTENT_TYPE
from circlet.wire import iso

router = APIRouter()

DEFAULT_LIMIT = 30
MAX_LIMIT = 100


def admin_user(request: Request) -> User:
    """The calling administrator: 401 without a valid token, 403 for anyone else."""
    token = caller(request)
    if token is None:
        raise Unauthenticated("You must log in first.")
    user = services(request).circlet.store.get_user(token.user_id) if token.user_id is not None else None
    if user is None or not user.admin:
        raise PermissionDenied("Permission denied")
    return user


def _int_param(request: Request, name: str, default: int | None, *, minimum: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise InvalidRequest(f"{name} must be at least {minimum}")
    return value


def _project_param(request: Request) -> Project | None:
    slug = request.query_params.get("project")
    if not slug:
        return None
    parts = slug.strip("/").split("/")
    if len(parts) != 3:
        raise InvalidRequest(f"project must look like gh/acme/widget, not {slug!r}")
    try:
        return services(request).circlet.get_project(*parts)
    except NotFound:
        raise NotFound("Project not found") from None


def delivery_json(delivery: Delivery, build: Build | None, project: Project | None) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "project": project.slug if project is not None else None,
        "build_num": build.build_num if build is not None else None,
        "url": delivery.url,
        "source": delivery.source,
        "state": delivery.state.value,
        "attempts": delivery.attempts,
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "next_attempt_at": iso(delivery.next_attempt_at),
        "created_at": iso(delivery.created_at),
        "finished_at": iso(delivery.finished_at),
    }


@router.get("/admin/webhook-deliveries")
def webhook_deliveries(request: Request) -> Response:
    """Newest first; `project=gh/acme/widget`, `build_num` (needs project) and `limit` (<= 100)."""
    admin_user(request)
    project = _project_param(request)
    build_num = _int_param(request, "build_num", None, minimum=1)
    limit = min(_int_param(request, "limit", DEFAULT_LIMIT, minimum=0) or 0, MAX_LIMIT)
    if build_num is not None and project is None:
        raise InvalidRequest("build_num needs project (gh/acme/widget)")
    rows = services(request).circlet.list_deliveries(project=project, build_num=build_num, limit=limit)
    return json_response(request, [delivery_json(*row) for row in rows])


@router.get("/admin/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus metrics (docs/metrics.md), in the text exposition format."""
    admin_user(request)
    found = services(request).metrics
    if found is None:
        raise NotFound("This server keeps no metrics")
    return Response(found.render(), media_type=CONTENT_TYPE)


@router.get("/admin/workers")
def workers(request: Request) -> Response:
    """The celery executor's workers, by name: host, classes, slots, busy, last heartbeat, state."""
    admin_user(request)
    circlet = services(request).circlet
    now = circlet.clock()
    return json_response(request, [worker_json(w, now) for w in circlet.list_workers()])
