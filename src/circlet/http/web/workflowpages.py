"""The workflow page and its forms: `/:vcs/:user/:project/workflows/:workflow_id`.

The path follows CircleCI's app (`.../pipelines/:vcs/:user/:project/:n/workflows/:id`) and
cannot clash with a build page: build numbers are digits, `workflows` is not. Routes:

- `GET  W` the page: the graph (jobs as boxes by dependency depth), Approve and Cancel;
- `GET  W/graph?sig=&build=` the graph alone (204 when `sig` is still what it shows): the
  script of the workflow page and of every build page of its jobs polls it while the workflow
  is not finished, so jobs started later (after an approval, downstream) appear by themselves;
- `POST W/approve` (`job`, `back`) and `POST W/cancel` (`back`): trigger rights, CSRF, then
  303 to `back` (a local path: the page the form was on) or the workflow page.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from circlet.core.errors import InvalidRequest, NotFound
from circlet.core.model import Project, Scope
from circlet.core.workflow import WorkflowGraph
from circlet.http.deps import services
from circlet.http.web.common import WebRoute, build_number, form, open_project, page, redirect, rights, secure
from circlet.http.web.graphview import WorkflowView, workflow_view
from circlet.http.web.session import Session, safe_next
from circlet.http.web.views import web_path, workflow_path
from circlet.pipelines import Workflows

router = APIRouter(route_class=WebRoute, include_in_schema=False)

W = "/{vcs_type}/{username}/{reponame}/workflows/{workflow_id}"


def _engine(request: Request) -> Workflows:
    engine = services(request).circlet.workflows
    if engine is None:
        raise NotFound("This server runs no workflows.")
    return engine


def _graph(request: Request, project: Project, workflow_id: str) -> WorkflowGraph:
    engine = _engine(request)
    engine.workflow_of(workflow_id, project)  # NotFound: unknown, or another project's
    return engine.graph(workflow_id)


def _current(request: Request) -> int | None:
    raw = request.query_params.get("build", "")
    try:
        return build_number(raw) if raw else None
    except NotFound:
        return None


def graph_context(
    request: Request, session: Session, project: Project, view: WorkflowView, *, back: str
) -> dict[str, Any]:
    """What templates/_workflow.html needs (the build page passes its own `back`)."""
    allowed = rights(request, session, project)
    return {"wf": view, "can_act": allowed.trigger, "back": back}


def _open(
    request: Request, vcs_type: str, username: str, reponame: str, workflow_id: str
) -> tuple[Session, Project, WorkflowView]:
    session, project = open_project(request, vcs_type, username, reponame)
    graph = _graph(request, project, workflow_id)
    view = workflow_view(graph, project, services(request).circlet.clock(), current_build=_current(request))
    return session, project, view


@router.get(W)
def workflow_page(
    request: Request, vcs_type: str, username: str, reponame: str, workflow_id: str
) -> Response:
    session, project, view = _open(request, vcs_type, username, reponame, workflow_id)
    circlet = services(request).circlet
    build = None  # the commit: from the first job's build that is still there
    for number in (j.build_num for j in view.jobs if j.build_num is not None):
        try:
            build = circlet.get_build(project, number)
            break
        except NotFound:
            continue
    context = graph_context(request, session, project, view, back=view.url)
    context.update(
        project=project,
        project_url=web_path(project),
        poll_url=f"{view.url}/graph",
        branch=(build.branch or "") if build else "",
        tag=(build.vcs_tag or "") if build else "",
        subject=build.commit.subject if build and build.commit else "",
        short_sha=(build.vcs_revision or "")[:7] if build else "",
        revision=(build.vcs_revision or "") if build else "",
    )
    return page(request, "workflow.html", context)


@router.get(W + "/graph")
def workflow_graph(
    request: Request, vcs_type: str, username: str, reponame: str, workflow_id: str
) -> Response:
    session, project, view = _open(request, vcs_type, username, reponame, workflow_id)
    if request.query_params.get("sig") == view.sig:
        response = secure(Response(status_code=204))
    else:
        current = _current(request)
        back = web_path(project, current) if current is not None else view.url
        response = page(request, "_workflow.html", graph_context(request, session, project, view, back=back))
        response.headers["x-circlet-sig"] = view.sig
    response.headers["x-circlet-live"] = "1" if view.active else "0"
    return response


@router.post(W + "/approve")
async def approve(
    request: Request, vcs_type: str, username: str, reponame: str, workflow_id: str
) -> Response:
    """Approve the approval job `job` (on hold) of this workflow."""
    fields = await form(request)
    session, project = await run_in_threadpool(
        open_project, request, vcs_type, username, reponame, Scope.TRIGGER_BUILDS
    )
    job = fields.get("job", "")
    if not job:
        raise InvalidRequest("Say which job to approve.")
    engine = _engine(request)
    await run_in_threadpool(lambda: engine.approve(project, workflow_id, job, user_id=session.user.id))
    return redirect(_back(fields, project, workflow_id))


@router.post(W + "/cancel")
async def cancel(request: Request, vcs_type: str, username: str, reponame: str, workflow_id: str) -> Response:
    """Cancel the workflow: its running builds and approvals on hold; what waited is not run."""
    fields = await form(request)
    session, project = await run_in_threadpool(
        open_project, request, vcs_type, username, reponame, Scope.TRIGGER_BUILDS
    )
    engine = _engine(request)
    await run_in_threadpool(lambda: engine.cancel(project, workflow_id, user_id=session.user.id))
    return redirect(_back(fields, project, workflow_id))


def _back(fields: dict[str, str], project: Project, workflow_id: str) -> str:
    back = fields.get("back", "")
    return safe_next(back) if back else workflow_path(project, workflow_id)
