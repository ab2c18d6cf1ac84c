"""The CircleCI v1.1 REST API: thin handlers over service.Circlet, JSON shaped by circlet.wire."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from circlet.core import signing
from circlet.core.errors import InvalidRequest, NotFound
from circlet.core.model import ActionStatus, Build, Lifecycle, Outcome, Project, Scope, Token
from circlet.core.ports import BuildQuery
from circlet.core.status import FAILED_FILTER_OUTCOMES
from circlet.http.deps import caller, caller_user, project_access, services
from circlet.http.responses import json_response
from circlet.wire import build_details, build_shallow, build_summary, iter_log_json

router = APIRouter()

P = "/project/{vcs_type}/{username}/{reponame}"
MAX_LIMIT = 100
TRUE_WORDS = ("true", "1", "yes")

# The `filter` query of build lists (api-v1.1.md 9.4); anything else means no filter.
FILTERS: dict[str, tuple[tuple[Lifecycle, ...] | None, tuple[Outcome, ...] | None]] = {
    "completed": ((Lifecycle.FINISHED,), None),
    "successful": (None, (Outcome.SUCCESS,)),
    "failed": (None, tuple(FAILED_FILTER_OUTCOMES)),
    "running": ((Lifecycle.RUNNING,), None),
}


def _int_query(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be a whole number, not {raw!r}") from None
    if value < 0:
        raise InvalidRequest(f"{name} must not be negative")
    return value


def _shallow(request: Request) -> bool:
    return request.query_params.get("shallow", "").lower() in TRUE_WORDS


def _build_num(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise NotFound("Build not found")
    return int(text)


def _list_query(request: Request, project_ids: tuple[int, ...] | None, branch: str | None) -> BuildQuery:
    limit = min(_int_query(request, "limit", 30), MAX_LIMIT)
    offset = _int_query(request, "offset", 0)
    lifecycles, outcomes = FILTERS.get(request.query_params.get("filter", ""), (None, None))
    return BuildQuery(
        project_ids=project_ids,
        branch=branch,
        lifecycles=lifecycles,
        outcomes=outcomes,
        limit=limit,
        offset=offset,
    )


def _summaries(request: Request, builds: list[Build], projects: dict[int, Project]) -> list[dict[str, Any]]:
    svc = services(request)
    if _shallow(request):
        return [
            build_shallow(svc.circlet.view(projects[b.project_id], b, details=False, shallow=True), svc.links)
            for b in builds
        ]
    return [
        build_summary(svc.circlet.view(projects[b.project_id], b, details=False), svc.links) for b in builds
    ]


# ---------------------------------------------------------------- user level


@router.get("/me")
def me(request: Request) -> Response:
    user = caller_user(request)
    return json_response(
        request,
        {
            "login": user.login,
            "name": user.name,
            "selected_email": user.email,
            "all_emails": [user.email] if user.email else [],
            "avatar_url": None,
            "admin": user.admin,
            "basic_email_prefs": "smart",
            "created_at": None,
            "github_id": None,
            "bitbucket": None,
            "identities": {},
            "projects": {},
            "containers": 1,
            "parallelism": 1,
            "plan": None,
            "enrolled_betas": [],
            "in_beta_program": False,
            "num_projects_followed": len(services(request).circlet.list_projects()),
        },
    )


@router.get("/recent-builds")
def recent_builds(request: Request) -> Response:
    caller_user(request)
    svc = services(request).circlet
    projects = {p.id or 0: p for p in svc.list_projects()}
    builds = svc.list_builds(_list_query(request, None, None))
    return json_response(request, _summaries(request, builds, projects))


# ---------------------------------------------------------------- builds of a project


@router.get(P)
def project_builds(request: Request, vcs_type: str, username: str, reponame: str) -> Response:
    project, _ = project_access(request, vcs_type, username, reponame, Scope.VIEW_BUILDS)
    builds = services(request).circlet.list_builds(_list_query(request, (project.id or 0,), None))
    return json_response(request, _summaries(request, builds, {project.id or 0: project}))


@router.get(P + "/tree/{branch:path}")
def branch_builds(request: Request, vcs_type: str, username: str, reponame: str, branch: str) -> Response:
    project, _ = project_access(request, vcs_type, username, reponame, Scope.VIEW_BUILDS)
    builds = services(request).circlet.list_builds(_list_query(request, (project.id or 0,), branch))
    return json_response(request, _summaries(request, builds, {project.id or 0: project}))


@router.get(P + "/{build_num}")
def single_build(request: Request, vcs_type: str, username: str, reponame: str, build_num: str) -> Response:
    project, _ = project_access(request, vcs_type, username, reponame, Scope.VIEW_BUILDS)
    svc = services(request)
    build = svc.circlet.get_build(project, _build_num(build_num))
    return json_response(request, build_details(svc.circlet.view(project, build), svc.links))


# ---------------------------------------------------------------- triggering


async def _trigger_fields(request: Request) -> dict[str, Any]:
    """The trigger body (api-v1.1.md 8.6): JSON, form with `build_parameters[X]` keys, or nothing;
    query parameters of the same names fill in what the body does not give. Nulls mean absent."""
    raw = await request.body()
    fields: dict[str, Any] = {}
    text = raw.decode("utf-8", errors="replace").strip()
    if text:
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
            if "=" in text:
                parsed = _form_fields(text)
            elif "json" in request.headers.get("content-type", ""):
                raise InvalidRequest("The request body is not valid JSON") from None
        if parsed is not None and not isinstance(parsed, dict):
            raise InvalidRequest("The request body must be a JSON object")
        fields = parsed or {}
    for name in ("revision", "tag", "parallel", "branch", "job"):
        if fields.get(name) is None and request.query_params.get(name):
            fields[name] = request.query_params[name]
    return {k: v for k, v in fields.items() if v is not None}


def _form_fields(text: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key.startswith("build_parameters[") and key.endswith("]"):
            fields.setdefault("build_parameters", {})[key[len("build_parameters[") : -1]] = value
        else:
            fields[key] = value
    return fields


def _check_trigger_fields(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("revision", "tag", "job"):
        if name in fields:
            if not isinstance(fields[name], str) or not fields[name]:
                raise InvalidRequest(f"{name} must be a non-empty string")
            out[name] = fields[name]
    if "parallel" in fields:
        value = fields["parallel"]
        if (
            isinstance(value, bool)
            or not (isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()))
            or int(value) < 1
        ):
            raise InvalidRequest("parallel must be a positive integer")
        out["parallel"] = int(value)
    if "build_parameters" in fields:
        params = fields["build_parameters"]
        if not isinstance(params, dict):
            raise InvalidRequest("build_parameters must be an object mapping names to values")
        out["build_parameters"] = params
    if out.get("revision") and out.get("tag"):
        raise InvalidRequest("Cannot specify both revision and tag")
    return out


async def _trigger(
    request: Request, vcs_type: str, username: str, reponame: str, branch: str | None
) -> Response:
    fields = _check_trigger_fields(await _trigger_fields(request))
    project, token = project_access(request, vcs_type, username, reponame, Scope.TRIGGER_BUILDS)
    svc = services(request)

    def run() -> Build:
        return svc.circlet.trigger(
            project,
            branch=branch,
            tag=fields.get("tag"),
            revision=fields.get("revision"),
            build_parameters=fields.get("build_parameters", {}),
            parallel=fields.get("parallel"),
            job=fields.get("job"),
            user_id=_user_id(token),
        )

    build = await run_in_threadpool(run)
    view = await run_in_threadpool(svc.circlet.view, project, build, details=False)
    return json_response(
        request,
        build_summary(view, svc.links),
        201,
        headers={"Location": svc.links.api_build(project, build.build_num)},
    )


def _user_id(token: Token | None) -> int | None:
    return token.user_id if token is not None else None


@router.post(P)
async def trigger_default(request: Request, vcs_type: str, username: str, reponame: str) -> Response:
    return await _trigger(request, vcs_type, username, reponame, None)


@router.post(P + "/tree/{branch:path}")
async def trigger_branch(
    request: Request, vcs_type: str, username: str, reponame: str, branch: str
) -> Response:
    return await _trigger(request, vcs_type, username, reponame, branch)


# ---------------------------------------------------------------- acting on a build


def _retry(
    request: Request, vcs_type: str, username: str, reponame: str, build_num: str, *, ssh: bool
) -> Response:
    project, token = project_access(request, vcs_type, username, reponame, Scope.TRIGGER_BUILDS)
    svc = services(request)
    no_cache = request.query_params.get("no-cache", "").lower() in TRUE_WORDS
    build = svc.circlet.retry(
        project, _build_num(build_num), ssh=ssh, no_cache=no_cache, user_id=_user_id(token)
    )
    return json_response(request, build_summary(svc.circlet.view(project, build, details=False), svc.links))


@router.post(P + "/{build_num}/retry")
def retry(request: Request, vcs_type: str, username: str, reponame: str, build_num: str) -> Response:
    return _retry(request, vcs_type, username, reponame, build_num, ssh=False)


@router.post(P + "/{build_num}/ssh")
def retry_ssh(request: Request, vcs_type: str, username: str, reponame: str, build_num: str) -> Response:
    return _retry(request, vcs_type, username, reponame, build_num, ssh=True)


@router.post(P + "/{build_num}/cancel")
def cancel(request: Request, vcs_type: str, username: str, reponame: str, build_num: str) -> Response:
    project, token = project_access(request, vcs_type, username, reponame, Scope.TRIGGER_BUILDS)
    svc = services(request)
    build = svc.circlet.cancel(project, _build_num(build_num), user_id=_user_id(token))
    return json_response(request, build_summary(svc.circlet.view(project, build, details=False), svc.links))


@router.post(P + "/{build_num}/ssh-users")
def ssh_users(request: Request, vcs_type: str, username: str, reponame: str, build_num: str) -> Response:
    """Let the calling user SSH into the build (user tokens only; any body is ignored)."""
    project, _ = project_access(request, vcs_type, username, reponame, Scope.TRIGGER_BUILDS, user_only=True)
    user = caller_user(request)
    svc = services(request)
    build = svc.circlet.add_ssh_user(project, _build_num(build_num), user.login)
    return json_response(request, build_summary(svc.circlet.view(project, build, details=False), svc.links))


@router.post(P + "/build")
async def trigger_project(request: Request, vcs_type: str, username: str, reponame: str) -> Response:
    """Build the project as a push would; answers exactly {"status": 200, "body": "Build created"}."""
    fields = await _trigger_fields(request)
    project, token = project_access(
        request, vcs_type, username, reponame, Scope.TRIGGER_BUILDS, user_only=True
    )
    named = {}
    for name in ("branch", "revision", "tag"):
        value = fields.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidRequest(f"{name} must be a non-empty string")
        named[name] = value
    svc = services(request)
    await run_in_threadpool(lambda: svc.circlet.trigger_pipeline(project, user_id=_user_id(token), **named))
    return json_response(request, {"status": 200, "body": "Build created"})


# ---------------------------------------------------------------- tests and artifacts


@router.get(P + "/{build_num}/tests")
def tests(request: Request, vcs_type: str, username: str, reponame: str, build_num: str) -> Response:
    """Test metadata. Until test results are parsed (store_test_results), a build has none."""
    project, _ = project_access(request, vcs_type, username, reponame, Scope.VIEW_BUILDS)
    services(request).circlet.get_build(project, _build_num(build_num))
    return json_response(request, {"tests": [], "exceptions": []})


@router.get(P + "/{build_num}/artifacts")
def artifacts(request: Request, vcs_type: str, username: str, reponame: str, build_num: str) -> Response:
    """A build's artifacts (`latest` = the newest build matching ?branch= and ?filter=, default
    completed). Until store_artifacts keeps files, a build has none."""
    project, _ = project_access(request, vcs_type, username, reponame, Scope.VIEW_BUILDS)
    svc = services(request).circlet
    if build_num == "latest":
        filter_name = request.query_params.get("filter", "")
        lifecycles, outcomes = FILTERS.get(filter_name, FILTERS["completed"])
        query = BuildQuery(
            project_ids=(project.id or 0,),
            branch=request.query_params.get("branch") or None,
            lifecycles=lifecycles,
            outcomes=outcomes,
            limit=1,
        )
        if not svc.list_builds(query):
            raise NotFound("Build not found")
    else:
        svc.get_build(project, _build_num(build_num))
    return json_response(request, [])


# ---------------------------------------------------------------- step output


@router.get(P + "/{build_num}/output/{step}/{index}")
def step_output(
    request: Request, vcs_type: str, username: str, reponame: str, build_num: str, step: int, index: int
) -> Response:
    """An action's log: the chunk array, or the raw text with ?file=true. A valid signature
    (the output_url's `expires` and `sig`) stands in for a token."""
    svc = services(request)
    signed = _signature_ok(request, svc.links.secret)
    if signed:
        project = svc.circlet.get_project(vcs_type, username, reponame)
    else:
        project, _ = project_access(request, vcs_type, username, reponame, Scope.VIEW_BUILDS)
    build = svc.circlet.get_build(project, _build_num(build_num))
    action = svc.circlet.action(build, step, index)
    running = action.status is ActionStatus.RUNNING  # a running step's log may still be empty
    if not running and svc.circlet.logs.size(build.id or 0, step, index) is None:
        raise NotFound(f"Step {step} on container {index} of build {build.build_num} has no output")
    if request.query_params.get("file", "").lower() in TRUE_WORDS:
        return StreamingResponse(
            _raw_log(svc.circlet.logs, build.id or 0, step, index), media_type="text/plain; charset=utf-8"
        )
    return StreamingResponse(
        iter_log_json(svc.circlet.log_chunks(build, step, index)), media_type="application/json;charset=utf-8"
    )


def _signature_ok(request: Request, secret: bytes) -> bool:
    sig = request.query_params.get("sig")
    expires = request.query_params.get("expires", "")
    if not sig or not expires.isdigit():
        return False
    return signing.verify(secret, request.url.path, int(expires), sig, time.time())


def _raw_log(logs: Any, build_id: int, step: int, index: int, block: int = 1 << 20) -> Any:
    offset = 0
    while True:
        data: bytes = logs.read(build_id, step, index, offset=offset, length=block)
        if not data:
            return
        offset += len(data)
        yield data


__all__ = ["caller", "router"]
