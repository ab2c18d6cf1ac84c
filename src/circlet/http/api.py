"""The CircleCI v1.1 REST API: thin handlers over service.Circlet, JSON shaped by circlet.wire."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from circlet.core.errors import InvalidRequest, NotFound
from circlet.core.model import ActionStatus, Build, Lifecycle, Outcome, Project, Scope, Token
from circlet.core.ports import BuildQuery
from circlet.core.status import FAILED_FILTER_OUTCOMES
from circlet.http import schemas
from circlet.http.artifacts import artifacts_response
from circlet.http.deps import caller, caller_user, project_access, services
from circlet.http.responses import cached_json_response_async, json_response
from circlet.http.schemas import answers, ref
from circlet.http.signatures import signed_project
from circlet.wire import build_details, build_shallow, build_summary, iter_log_json

router = APIRouter()

P = "/project/{vcs_type}/{username}/{reponame}"
MAX_LIMIT = 100
MAX_PARALLEL = 2**31 - 1  # containers; more than any machine has, and the store holds it
MAX_NUMBER = 2**63 - 1  # the largest integer the store holds (build numbers, offsets, steps)
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
    # ASCII digits only (str.isdigit() also takes "²", which int() refuses), and no number
    # larger than the store can hold: such builds do not exist.
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_NUMBER:
        raise NotFound("Build not found")
    return int(text)


def _list_query(request: Request, project_ids: tuple[int, ...] | None, branch: str | None) -> BuildQuery:
    limit = min(_int_query(request, "limit", 30), MAX_LIMIT)
    offset = min(_int_query(request, "offset", 0), MAX_NUMBER)  # past the last build: []
    lifecycles, outcomes = FILTERS.get(request.query_params.get("filter", ""), (None, None))
    return BuildQuery(
        project_ids=project_ids,
        branch=branch,
        lifecycles=lifecycles,
        outcomes=outcomes,
        limit=limit,
        offset=offset,
    )


def _summaries(
    request: Request, query: BuildQuery, builds: list[Build], projects: dict[int, Project]
) -> list[dict[str, Any]]:
    svc = services(request)
    if _shallow(request):
        return [
            build_shallow(svc.circlet.view(projects[b.project_id], b, details=False, shallow=True), svc.links)
            for b in builds
        ]
    whole = query.lifecycles is None and query.outcomes is None  # (a page of every build in its range)
    return [build_summary(view, svc.links) for view in svc.circlet.list_views(projects, builds, whole=whole)]


async def _project_list(request: Request, project: Project, branch: str | None) -> Response:
    svc = services(request)
    query = _list_query(request, (project.id or 0,), branch)

    def render() -> Any:
        return _summaries(request, query, svc.circlet.list_builds(query), {project.id or 0: project})

    key = ("list", query, _shallow(request))
    return await cached_json_response_async(
        request, svc.cache, key, svc.circlet.generation(project.id), render
    )


# ---------------------------------------------------------------- user level


@router.get(
    "/recent-builds",
    summary="Recent builds of every project",
    responses=answers(200, ref("BuildList"), "Builds across all projects, newest first.", 400, 401),
    openapi_extra=schemas.RECENT_QUERY,
)
async def recent_builds(request: Request) -> Response:
    user = caller_user(request)
    svc = services(request)
    query = _list_query(request, None, None)

    # Builds of the projects this user may see (all for administrators), never others'. That
    # set may change in another process (the CLI); it is looked up again every few seconds.
    projects = {p.id or 0: p for p in svc.circlet.visible_projects_now(user)}
    visible = replace(query, project_ids=tuple(projects))

    def render() -> Any:
        return _summaries(request, visible, svc.circlet.list_builds(visible), projects)

    key = ("recent", user.id, visible, _shallow(request))
    return await cached_json_response_async(request, svc.cache, key, svc.circlet.generation(), render)


# ---------------------------------------------------------------- builds of a project


@router.get(
    P,
    summary="Recent builds of a project",
    responses=answers(200, ref("BuildList"), "The project's builds, newest first.", 400, 403, 404),
    openapi_extra=schemas.LIST_QUERY,
)
async def project_builds(request: Request, vcs_type: str, username: str, reponame: str) -> Response:
    project, _ = project_access(request, vcs_type, username, reponame, Scope.VIEW_BUILDS)
    return await _project_list(request, project, None)


@router.get(
    P + "/tree/{branch:path}",
    summary="Recent builds of a branch",
    responses=answers(200, ref("BuildList"), "The branch's builds, newest first.", 400, 403, 404),
    openapi_extra=schemas.LIST_QUERY,
)
async def branch_builds(
    request: Request, vcs_type: str, username: str, reponame: str, branch: str
) -> Response:
    project, _ = project_access(request, vcs_type, username, reponame, Scope.VIEW_BUILDS)
    return await _project_list(request, project, branch)


@router.get(
    P + "/{build_num}",
    summary="A build with its steps",
    responses=answers(200, ref("Build"), "The full build.", 403, 404),
)
async def single_build(
    request: Request, vcs_type: str, username: str, reponame: str, build_num: str
) -> Response:
    project, _ = project_access(request, vcs_type, username, reponame, Scope.VIEW_BUILDS)
    svc = services(request)
    num = _build_num(build_num)
    generation = svc.circlet.generation(project.id)

    def render() -> Any:
        build = svc.circlet.get_build(project, num)
        return build_details(svc.circlet.view(project, build), svc.links)

    return await cached_json_response_async(
        request, svc.cache, ("build", project.id, num), generation, render
    )


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
        except (ValueError, RecursionError):  # RecursionError: nested deeper than json can read
            parsed = None
            if "=" in text:
                parsed = _form_fields(text)
            elif "json" in request.headers.get("content-type", ""):
                raise InvalidRequest("The request body is not valid JSON") from None
        if parsed is not None and not isinstance(parsed, dict):
            raise InvalidRequest("The request body must be a JSON object")
        if parsed and not _encodable(parsed):
            raise InvalidRequest("The request body is not valid Unicode text (a lone surrogate)")
        fields = parsed or {}
    for name in ("revision", "tag", "parallel", "branch", "job"):
        if fields.get(name) is None and request.query_params.get(name):
            fields[name] = request.query_params[name]
    return {k: v for k, v in fields.items() if v is not None}


def _encodable(value: Any) -> bool:
    """Whether JSON text can hold it as UTF-8: `"\\ud800"` parses to a lone surrogate, which
    neither git, the store nor a response can take."""
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


def _form_fields(text: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key.startswith("build_parameters[") and key.endswith("]"):
            fields.setdefault("build_parameters", {})[key[len("build_parameters[") : -1]] = value
        else:
            fields[key] = value
    return fields


def _digits(text: str) -> bool:
    """ASCII digits, short enough for int() (str.isdigit() also takes "²", which int() refuses)."""
    return text.isascii() and text.isdigit() and len(text) <= 30


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
            or not (isinstance(value, int) or (isinstance(value, str) and _digits(value.strip())))
            or not 1 <= int(value) <= MAX_PARALLEL
        ):
            raise InvalidRequest("parallel must be a positive integer")
        out["parallel"] = int(value)
    if "build_parameters" in fields:
        params = fields["build_parameters"]
        if not isinstance(params, dict):
            raise InvalidRequest("build_parameters must be an object mapping names to values")
        for name, value in params.items():
            if isinstance(value, str) and "\x00" in value:  # no environment variable can hold it
                raise InvalidRequest(f"Build parameter {name!r} holds a NUL character")
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


@router.post(
    P,
    summary="Trigger a job on the default branch",
    status_code=201,
    responses=answers(201, ref("BuildSummary"), "The new build.", 400, 403, 404, headers=schemas.LOCATION),
    openapi_extra=schemas.TRIGGER_BODY,
)
async def trigger_default(request: Request, vcs_type: str, username: str, reponame: str) -> Response:
    return await _trigger(request, vcs_type, username, reponame, None)


@router.post(
    P + "/tree/{branch:path}",
    summary="Trigger a job on a branch",
    status_code=201,
    responses=answers(201, ref("BuildSummary"), "The new build.", 400, 403, 404, headers=schemas.LOCATION),
    openapi_extra=schemas.TRIGGER_BODY,
)
async def trigger_branch(
    request: Request, vcs_type: str, username: str, reponame: str, branch: str
) -> Response:
    return await _trigger(request, vcs_type, username, reponame, branch)


# ---------------------------------------------------------------- acting on a build


async def _retry_body(request: Request) -> None:
    """Retry's optional body: `{"no-cache": "true"}` (or the form `no-cache=true`) retries
    without cache, as the query `no-cache=true` does (api-v1.1.md 8.2). Any other body is ignored."""
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else None
    except (ValueError, RecursionError):
        body = dict(parse_qsl(raw.decode("utf-8", errors="replace")))
    value = body.get("no-cache") if isinstance(body, dict) else None
    request.state.no_cache = str(value).lower() in TRUE_WORDS


def _retry(
    request: Request, vcs_type: str, username: str, reponame: str, build_num: str, *, ssh: bool
) -> Response:
    project, token = project_access(request, vcs_type, username, reponame, Scope.TRIGGER_BUILDS)
    svc = services(request)
    no_cache = request.query_params.get("no-cache", "").lower() in TRUE_WORDS or request.state.no_cache
    build = svc.circlet.retry(
        project, _build_num(build_num), ssh=ssh, no_cache=no_cache, user_id=_user_id(token)
    )
    return json_response(request, build_summary(svc.circlet.view(project, build, details=False), svc.links))


@router.post(
    P + "/{build_num}/retry",
    summary="Retry a build",
    responses=answers(200, ref("BuildSummary"), "The new build.", 400, 403, 404),
    openapi_extra=schemas.RETRY_QUERY,
    dependencies=[Depends(_retry_body)],
)
def retry(request: Request, vcs_type: str, username: str, reponame: str, build_num: str) -> Response:
    return _retry(request, vcs_type, username, reponame, build_num, ssh=False)


@router.post(
    P + "/{build_num}/ssh",
    summary="Retry a build with SSH",
    responses=answers(200, ref("BuildSummary"), "The new build.", 400, 403, 404),
    openapi_extra=schemas.RETRY_QUERY,
    dependencies=[Depends(_retry_body)],
)
def retry_ssh(request: Request, vcs_type: str, username: str, reponame: str, build_num: str) -> Response:
    return _retry(request, vcs_type, username, reponame, build_num, ssh=True)


@router.post(
    P + "/{build_num}/cancel",
    summary="Cancel a build",
    responses=answers(200, ref("BuildSummary"), "The build after the cancel.", 403, 404),
    openapi_extra=schemas.IGNORED_BODY,
)
def cancel(request: Request, vcs_type: str, username: str, reponame: str, build_num: str) -> Response:
    project, token = project_access(request, vcs_type, username, reponame, Scope.TRIGGER_BUILDS)
    svc = services(request)
    build = svc.circlet.cancel(project, _build_num(build_num), user_id=_user_id(token))
    return json_response(request, build_summary(svc.circlet.view(project, build, details=False), svc.links))


@router.post(
    P + "/{build_num}/ssh-users",
    summary="Let the calling user SSH into a build",
    responses=answers(200, ref("BuildSummary"), "The build with the user in ssh_users.", 401, 403, 404),
    openapi_extra=schemas.IGNORED_BODY,
)
def ssh_users(request: Request, vcs_type: str, username: str, reponame: str, build_num: str) -> Response:
    """Let the calling user SSH into the build (user tokens only; any body is ignored)."""
    project, _ = project_access(request, vcs_type, username, reponame, Scope.TRIGGER_BUILDS, user_only=True)
    user = caller_user(request)
    svc = services(request)
    build = svc.circlet.add_ssh_user(project, _build_num(build_num), user.login)
    return json_response(request, build_summary(svc.circlet.view(project, build, details=False), svc.links))


@router.post(
    P + "/build",
    summary="Build the project as a push would",
    responses=answers(200, ref("ProjectBuildCreated"), "The build was created.", 400, 403, 404),
    openapi_extra=schemas.PROJECT_BUILD_BODY,
)
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
    parameters = fields.get("parameters")  # 2.1 pipeline parameters (docs/workflows.md)
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidRequest("parameters must be a JSON object of pipeline parameters")
    svc = services(request)
    await run_in_threadpool(
        lambda: svc.circlet.trigger_pipeline(
            project,
            user_id=_user_id(token),
            parameters=parameters,
            branch=named["branch"],
            revision=named["revision"],
            tag=named["tag"],
        )
    )
    return json_response(request, {"status": 200, "body": "Build created"})


# ---------------------------------------------------------------- tests and artifacts


@router.get(
    P + "/{build_num}/tests",
    summary="Test results of a build",
    responses=answers(200, ref("TestResults"), "The build's test results.", 403, 404),
)
def tests(request: Request, vcs_type: str, username: str, reponame: str, build_num: str) -> Response:
    """Test metadata: every case the build's store_test_results steps found, every container."""
    project, _ = project_access(request, vcs_type, username, reponame, Scope.VIEW_BUILDS)
    svc = services(request).circlet
    found, problems = svc.tests_of(svc.get_build(project, _build_num(build_num)))
    return json_response(request, {"tests": found, "exceptions": problems})


@router.get(
    P + "/{build_num}/artifacts",
    summary="Artifacts of a build",
    responses=answers(200, ref("Artifacts"), "The build's artifacts.", 403, 404),
    openapi_extra=schemas.ARTIFACTS_QUERY,
)
def artifacts(request: Request, vcs_type: str, username: str, reponame: str, build_num: str) -> Response:
    """A build's artifacts (`latest` = the newest build matching ?branch= and ?filter=, default
    completed), from the blob store (http/artifacts.py)."""
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
        latest = svc.list_builds(query)
        if not latest:
            raise NotFound("Build not found")
        build = latest[0]
    else:
        build = svc.get_build(project, _build_num(build_num))
    return artifacts_response(request, project, build)


# ---------------------------------------------------------------- step output


@router.get(
    P + "/{build_num}/output/{step}/{index}",
    summary="The log of one action",
    responses=answers(
        200,
        None,
        "The log: the chunk array, or plain text with ?file=true.",
        400,
        403,
        404,
        content={schemas.JSON: {"schema": ref("Log")}, "text/plain": {"schema": {"type": "string"}}},
    ),
    openapi_extra=schemas.OUTPUT_QUERY,
)
def step_output(
    request: Request, vcs_type: str, username: str, reponame: str, build_num: str, step: int, index: int
) -> Response:
    """An action's log: the chunk array, or the raw text with ?file=true. A valid signature
    (the output_url's `expires` and `sig`) stands in for a token."""
    svc = services(request)
    project = _signed_project(request, vcs_type, username, reponame, build_num, step, index)
    if project is None:
        project, _ = project_access(request, vcs_type, username, reponame, Scope.VIEW_BUILDS)
    build = svc.circlet.get_build(project, _build_num(build_num))
    if not (0 <= step <= MAX_NUMBER and 0 <= index <= MAX_NUMBER):
        raise NotFound(f"Build {build.build_num} has no step {step} on container {index}")
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


def _signed_project(
    request: Request, vcs_type: str, username: str, reponame: str, build_num: str, step: int, index: int
) -> Project | None:
    """The project when the request carries a valid output_url signature, else None. The
    signature covers the canonical path (Links.output_path), so every spelling of the same
    URL verifies: `/api/v1/...`, `gh`, another case of the names."""
    if not (build_num.isascii() and build_num.isdigit()):
        return None
    links = services(request).links
    return signed_project(
        request,
        vcs_type,
        username,
        reponame,
        request.query_params.get("sig", ""),
        request.query_params.get("expires", ""),
        lambda project: links.output_path(project, int(build_num), step, index),
    )


def _raw_log(logs: Any, build_id: int, step: int, index: int, block: int = 1 << 20) -> Any:
    offset = 0
    while True:
        data: bytes = logs.read(build_id, step, index, offset=offset, length=block)
        if not data:
            return
        offset += len(data)
        yield data


__all__ = ["caller", "router"]
