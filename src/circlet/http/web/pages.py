"""The pages people read: dashboard, project, build, and the fragments that keep them fresh.

Handlers are plain `def` (Starlette's thread pool), like the API: everything under them is
synchronous. Every page needs a session; projects are shown by the API's permission rules.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from circlet.core.model import Project, Scope
from circlet.core.ports import BuildQuery
from circlet.core.projects import mask
from circlet.http.deps import services
from circlet.http.web import builddata
from circlet.http.web.common import WebRoute, open_build, open_project, page, rights, secure
from circlet.http.web.session import require_session
from circlet.http.web.views import STATUS_FILTERS, BuildRow, build_row, web_path

router = APIRouter(route_class=WebRoute, include_in_schema=False)

PAGE_SIZE = 25
MAX_OFFSET = 100_000


def _int(request: Request, name: str, default: int, top: int) -> int:
    raw = request.query_params.get(name, "")
    return min(int(raw), top) if raw.isascii() and raw.isdigit() and len(raw) < 10 else default


def _rows(request: Request, projects: dict[int, Project], query: BuildQuery) -> list[BuildRow]:
    circlet = services(request).circlet
    now = circlet.clock()
    builds = circlet.list_builds(query) if projects else []
    return [build_row(circlet.view(projects[b.project_id], b, shallow=True), now) for b in builds]


def _dashboard(request: Request) -> dict[str, Any]:
    session = require_session(request)
    circlet = services(request).circlet
    visible = {p.id or 0: p for p in circlet.visible_projects_now(session.user)}
    chosen_slug = request.query_params.get("project", "")
    chosen = [pid for pid, p in visible.items() if p.slug == chosen_slug]
    branch = request.query_params.get("branch", "").strip()
    status = request.query_params.get("status", "")
    lifecycles, outcomes = STATUS_FILTERS.get(status, (None, None))
    offset = _int(request, "offset", 0, MAX_OFFSET)
    query = BuildQuery(
        project_ids=tuple(chosen or visible),
        branch=branch or None,
        lifecycles=lifecycles,
        outcomes=outcomes,
        limit=PAGE_SIZE + 1,
        offset=offset,
    )
    rows = _rows(request, visible, query)
    filters = {
        "project": chosen_slug if chosen else "",
        "branch": branch,
        "status": status if lifecycles or outcomes else "",
    }
    return {
        "rows": rows[:PAGE_SIZE],
        "projects": sorted(p.slug for p in visible.values()),
        "filters": filters,
        "statuses": list(STATUS_FILTERS),
        "offset": offset,
        "previous_offset": max(0, offset - PAGE_SIZE) if offset else None,
        "next_offset": offset + PAGE_SIZE if len(rows) > PAGE_SIZE else None,
        "live": any(r.unfinished for r in rows),
    }


@router.get("/")
def dashboard(request: Request) -> Response:
    return page(request, "dashboard.html", _dashboard(request))


@router.get("/dashboard/rows")
def dashboard_rows(request: Request) -> Response:
    """The dashboard's table body alone: the page's script polls it while builds run."""
    context = _dashboard(request)
    response = page(request, "_rows.html", context)
    response.headers["x-circlet-live"] = "1" if context["live"] else "0"
    return response


@router.get("/{vcs_type}/{username}/{reponame}")
def project_page(request: Request, vcs_type: str, username: str, reponame: str) -> Response:
    _, project = open_project(request, vcs_type, username, reponame)
    return page(request, "project.html", project_context(request, project))


def project_context(request: Request, project: Project, **extra: Any) -> dict[str, Any]:
    """What the project page shows (also rendered after a settings form, with `extra`)."""
    circlet = services(request).circlet
    session = require_session(request)
    allowed = rights(request, session, project)
    branch = request.query_params.get("branch", "").strip() or None
    offset = _int(request, "offset", 0, MAX_OFFSET)
    query = BuildQuery(project_ids=(project.id or 0,), branch=branch, limit=PAGE_SIZE + 1, offset=offset)
    rows = _rows(request, {project.id or 0: project}, query)
    overview = circlet.overview(project, session.user)
    settings: dict[str, Any] = {}
    if allowed.read_settings:
        settings["env"] = [(v.name, mask(v.value)) for v in circlet.list_env_vars(project)]
        settings["webhooks"] = circlet.list_webhooks(project)
    if allowed.admin:
        settings["tokens"] = circlet.project_tokens(project)
    return {
        "project": project,
        "project_url": web_path(project),
        "rows": rows[:PAGE_SIZE],
        "branches": overview.branches,
        "branch": branch or "",
        "rights": allowed,
        "settings": settings,
        "offset": offset,
        "previous_offset": max(0, offset - PAGE_SIZE) if offset else None,
        "next_offset": offset + PAGE_SIZE if len(rows) > PAGE_SIZE else None,
        "live": any(r.unfinished for r in rows),
        "scopes": [s.value for s in Scope if s is not Scope.STATUS],
        **extra,
    }


@router.get("/{vcs_type}/{username}/{reponame}/{build_num}")
def build_page(request: Request, vcs_type: str, username: str, reponame: str, build_num: str) -> Response:
    session, project, build = open_build(request, vcs_type, username, reponame, build_num)
    context = builddata.gather(request, session, project, build)
    return page(request, "build.html", context)


@router.get("/{vcs_type}/{username}/{reponame}/{build_num}/state")
def build_state(request: Request, vcs_type: str, username: str, reponame: str, build_num: str) -> Response:
    """The build's header and steps, re-rendered when `sig` (what the page shows) is stale;
    204 when nothing changed. The page's script polls it while the build is unfinished."""
    session, project, build = open_build(request, vcs_type, username, reponame, build_num)
    if request.query_params.get("sig") == builddata.signature(request, project, build):
        return secure(Response(status_code=204))
    context = builddata.gather(request, session, project, build)
    response = page(request, "_build_live.html", context)
    response.headers["x-circlet-sig"] = context["sig"]
    return response
