"""Workflows and contexts over HTTP (circlet's own endpoints beside the v1.1 API; docs/workflows.md).

- `GET /workflow/{id}`: a workflow, its status and its jobs (read access to its project).
- `POST P/workflow/{id}/approve/{job}`: approve an approval job on hold (write access).
- `POST P/workflow/{id}/cancel`: cancel what runs or waits in a workflow (write access).
- `/contexts...`: contexts and their variables (administrators only; values never shown).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from circlet.core.errors import InvalidRequest
from circlet.core.model import Project, Scope
from circlet.core.pipeline import Context, ContextVar
from circlet.core.projects import mask
from circlet.core.workflow import WorkflowGraph
from circlet.http.admin import admin_user
from circlet.http.deps import project_access, services
from circlet.http.responses import json_response
from circlet.http.schemas import JSON, answers, ref
from circlet.pipelines import Workflows
from circlet.wire import iso

router = APIRouter()

P = "/project/{vcs_type}/{username}/{reponame}"
_OBJECT: dict[str, Any] = {"type": "object"}
_LIST: dict[str, Any] = {"type": "array", "items": {"type": "object"}}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "It exists already.", "content": {JSON: {"schema": ref("Message")}}}
}


def _engine(request: Request) -> Workflows:
    engine = services(request).circlet.workflows
    if engine is None:
        raise InvalidRequest("this server keeps no pipelines")
    return engine


def workflow_json(
    graph: WorkflowGraph, project: Project, logins: dict[int, str] | None = None
) -> dict[str, Any]:
    """A workflow as `GET /workflow/{id}` shows it."""
    return {
        "id": graph.workflow_id,
        "name": graph.name,
        "status": graph.status.value,
        "created_at": iso(graph.created_at),
        "stopped_at": iso(graph.stopped_at),
        "pipeline_id": graph.pipeline_id,
        "pipeline_number": graph.pipeline_number,
        "project_slug": project.slug,
        "jobs": [
            {
                "id": job.job_id,
                "name": job.name,
                "type": job.type.value,
                "status": job.state.value,
                "build_num": job.build_num,
                "requires": list(job.requires),
            }
            for job in graph.jobs
        ],
    }


@router.get(
    "/workflow/{workflow_id}",
    summary="A workflow and its jobs",
    responses=answers(
        200, _OBJECT, "The workflow: status, jobs with their states and build numbers.", 401, 403, 404
    ),
)
def get_workflow(request: Request, workflow_id: str) -> Response:
    engine = _engine(request)
    workflow = engine.workflow_of(workflow_id)
    found = services(request).circlet.store.get_project_by_id(workflow.project_id)
    if found is None:
        raise InvalidRequest("the project of this workflow is gone")
    project, _ = project_access(
        request, found.vcs_type.value, found.username, found.reponame, Scope.VIEW_BUILDS
    )
    return json_response(request, workflow_json(engine.graph(workflow.id), project))


@router.post(
    P + "/workflow/{workflow_id}/approve/{job_name}",
    summary="Approve an approval job of a workflow",
    responses=answers(200, _OBJECT, "The workflow after the approval.", 400, 401, 403, 404),
)
def approve(
    request: Request, vcs_type: str, username: str, reponame: str, workflow_id: str, job_name: str
) -> Response:
    """Approve a job of `type: approval` that is on hold; approving it again changes nothing."""
    project, token = project_access(request, vcs_type, username, reponame, Scope.TRIGGER_BUILDS)
    user_id = token.user_id if token is not None else None
    graph = _engine(request).approve(project, workflow_id, job_name, user_id=user_id)
    return json_response(request, workflow_json(graph, project))


@router.post(
    P + "/workflow/{workflow_id}/cancel",
    summary="Cancel a workflow",
    responses=answers(200, _OBJECT, "The workflow after the cancel.", 401, 403, 404),
)
def cancel(request: Request, vcs_type: str, username: str, reponame: str, workflow_id: str) -> Response:
    """Cancel the workflow's running builds and approvals on hold; what waited is not run."""
    project, token = project_access(request, vcs_type, username, reponame, Scope.TRIGGER_BUILDS)
    user_id = token.user_id if token is not None else None
    graph = _engine(request).cancel(project, workflow_id, user_id=user_id)
    return json_response(request, workflow_json(graph, project))


# ---------------------------------------------------------------- contexts (administrators)


def context_json(context: Context, variables: list[ContextVar] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": context.id, "name": context.name, "created_at": iso(context.created_at)}
    if variables is not None:
        out["variables"] = [var_json(v) for v in variables]
    return out


def var_json(var: ContextVar) -> dict[str, Any]:
    return {"name": var.name, "value": mask(var.value), "created_at": iso(var.created_at)}


@router.get(
    "/contexts", summary="Every context", responses=answers(200, _LIST, "Contexts by name.", 401, 403)
)
def list_contexts(request: Request) -> Response:
    admin_user(request)
    return json_response(request, [context_json(c) for c in _engine(request).contexts.all()])


@router.put(
    "/contexts/{name}",
    summary="Create a context",
    responses={**answers(201, _OBJECT, "The new context.", 400, 401, 403), **_CONFLICT},
)
def create_context(request: Request, name: str) -> Response:
    admin_user(request)
    return json_response(request, context_json(_engine(request).contexts.create(name)), status=201)


@router.get(
    "/contexts/{name}",
    summary="A context and its variables (masked)",
    responses=answers(200, _OBJECT, "The context.", 401, 403, 404),
)
def get_context(request: Request, name: str) -> Response:
    admin_user(request)
    contexts = _engine(request).contexts
    return json_response(request, context_json(contexts.get(name), contexts.vars(name)))


@router.delete(
    "/contexts/{name}",
    summary="Delete a context and its variables",
    responses=answers(200, _OBJECT, "Deleted.", 401, 403, 404),
)
def delete_context(request: Request, name: str) -> Response:
    admin_user(request)
    _engine(request).contexts.delete(name)
    return json_response(request, {"message": "ok"})


@router.put(
    "/contexts/{name}/envvar/{var_name}",
    summary="Set a variable of a context",
    responses=answers(200, _OBJECT, "The variable (masked).", 400, 401, 403, 404),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                JSON: {
                    "schema": {
                        "type": "object",
                        "properties": {"value": {"type": "string"}},
                        "required": ["value"],
                    }
                }
            },
        }
    },
)
async def set_context_var(request: Request, name: str, var_name: str) -> Response:
    await run_in_threadpool(admin_user, request)
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else None
    except (ValueError, RecursionError):
        body = None
    value = body.get("value") if isinstance(body, dict) else None
    if not isinstance(value, str):
        raise InvalidRequest('the body must be a JSON object {"value": "<text>"}')
    engine = _engine(request)
    var = await run_in_threadpool(engine.contexts.set_var, name, var_name, value)
    return json_response(request, var_json(var))


@router.delete(
    "/contexts/{name}/envvar/{var_name}",
    summary="Remove a variable of a context",
    responses=answers(200, _OBJECT, "Removed.", 401, 403, 404),
)
def unset_context_var(request: Request, name: str, var_name: str) -> Response:
    admin_user(request)
    _engine(request).contexts.unset_var(name, var_name)
    return json_response(request, {"message": "ok"})
