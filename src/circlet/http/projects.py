"""The v1.1 endpoints about users and project settings (api-v1.1.md 9.1, 9.2, 9.6-9.8): /me,
/projects, /user/repos, /user/heroku-key, follow, environment variables, checkout and SSH keys,
build cache, settings. Thin handlers over service.Circlet, JSON shaped by circlet.wire.

Permissions follow api-v1.1.md 2.3 through project_access; bodies are read by one async
dependency and parsed only after the access check, so a caller without access learns nothing
from a malformed body. This router is included before api.router: its fixed paths
(`P/envvar`, `P/settings`, ...) must win over `P/{build_num}`.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from circlet.core.errors import InvalidRequest, NotFound
from circlet.core.model import Project, Scope, Token, User, VcsType
from circlet.core.projects import Role
from circlet.http.deps import caller_user, project_access, services
from circlet.http.responses import json_response
from circlet.http.schemas import answers, ref
from circlet.wire import checkout_key_json, env_var_json, me_json, project_json, repo_json

router = APIRouter()

P = "/project/{vcs_type}/{username}/{reponame}"
DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 100
DIGESTS = ("md5", "sha256")

# ---------------------------------------------------------------- documentation (OpenAPI)

_STR: dict[str, Any] = {"type": "string"}
_OBJECT: dict[str, Any] = {"type": "object"}
_EMPTY: dict[str, Any] = {"const": "", "description": 'The JSON string `""`.'}
_OK: dict[str, Any] = {"type": "object", "required": ["message"], "properties": {"message": {"const": "ok"}}}
_ENV_VAR: dict[str, Any] = {
    "type": "object",
    "required": ["name", "value"],
    "properties": {"name": _STR, "value": {"type": "string", "pattern": "^xxxx"}},
}
_CHECKOUT_KEY: dict[str, Any] = {
    "type": "object",
    "required": ["public_key", "type", "fingerprint", "login", "preferred", "time"],
    "properties": {
        "public_key": _STR,
        "type": {"enum": ["deploy-key", "github-user-key"]},
        "fingerprint": _STR,
        "login": {"type": ["string", "null"]},
        "preferred": {"type": "boolean"},
        "time": {"type": ["string", "null"]},
    },
}
_PROJECT: dict[str, Any] = {
    "type": "object",
    "required": ["vcs_url", "username", "reponame", "vcs_type", "default_branch", "oss", "followed"],
    "properties": {
        "vcs_url": _STR,
        "username": _STR,
        "reponame": _STR,
        "default_branch": _STR,
        "oss": {"type": "boolean"},
        "followed": {"type": "boolean"},
        "following": {"type": "boolean"},
        "scopes": {"type": "array", "items": _STR},
        "branches": _OBJECT,
    },
}
_FOLLOW: dict[str, Any] = {
    "type": "object",
    "required": ["followed", "following"],
    "properties": {"followed": {"type": "boolean"}, "following": {"type": "boolean"}},
}


def _body_doc(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": list(required)}
    return {"requestBody": {"required": bool(required), "content": {"application/json": {"schema": schema}}}}


_DIGEST_QUERY: dict[str, Any] = {
    "parameters": [
        {
            "name": "digest",
            "in": "query",
            "required": False,
            "schema": {"enum": list(DIGESTS)},
            "description": "Fingerprint form to show: md5 (colon-hex, the default) or sha256 (base64).",
        }
    ]
}
_PAGE_QUERY: dict[str, Any] = {
    "parameters": [
        {"name": "per-page", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}},
        {"name": "page", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}},
    ]
}

# ---------------------------------------------------------------- helpers


async def raw_body(request: Request) -> bytes:
    """The request body, read in the event loop so that handlers can stay plain `def`."""
    return await request.body()


def _fields(request: Request, raw: bytes) -> dict[str, Any]:
    """A JSON object or form fields; an empty body is no fields."""
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except ValueError:
        if "json" in request.headers.get("content-type", "") or "=" not in text:
            raise InvalidRequest("The request body is not valid JSON") from None
        parsed = dict(parse_qsl(text, keep_blank_values=True))
    if not isinstance(parsed, dict):
        raise InvalidRequest("The request body must be a JSON object")
    return parsed


def _text(fields: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = fields.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string")
    if "\x00" in value:
        raise InvalidRequest(f"{name} must not contain NUL characters")
    return value


def _user(request: Request, token: Token | None) -> User | None:
    """The caller's user when the token is personal (None for project tokens)."""
    return caller_user(request) if token is not None and token.user_id is not None else None


def _digest(request: Request, default: str = "md5") -> str:
    digest = request.query_params.get("digest") or default
    if digest not in DIGESTS:
        raise InvalidRequest("digest must be md5 or sha256")
    return digest


def _page_query(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidRequest(f"{name} must be a positive whole number, not {raw!r}")
    return int(raw)


def _settings_json(request: Request, project: Project, token: Token | None) -> dict[str, Any]:
    svc = services(request).circlet
    user = _user(request, token)
    scope = token.scope if token is not None else Scope.VIEW_BUILDS
    return project_json(svc.overview(project, user, token_scope=scope))


# ---------------------------------------------------------------- user level


@router.get("/me", summary="The calling user", responses=answers(200, ref("Me"), "The token's user.", 401))
def current_user(request: Request) -> Response:
    user = caller_user(request)
    return json_response(request, me_json(user, services(request).circlet.followed_projects(user)))


@router.get(
    "/projects",
    summary="Projects the user follows or belongs to",
    responses=answers(200, {"type": "array", "items": _PROJECT}, "One entry per project.", 401),
)
def projects(request: Request) -> Response:
    user = caller_user(request)
    svc = services(request).circlet
    return json_response(request, [project_json(svc.overview(p, user)) for p in svc.dashboard_projects(user)])


@router.get(
    "/user/repos/{vcs_type}",
    summary="Repositories the user can see",
    responses=answers(200, {"type": "array", "items": _OBJECT}, "One page of repositories.", 400, 401, 404),
    openapi_extra=_PAGE_QUERY,
)
def user_repos(request: Request, vcs_type: str) -> Response:
    user = caller_user(request)
    vcs = VcsType.parse(vcs_type)
    if vcs is None:
        raise NotFound("Unknown vcs type: use github (gh) or bitbucket (bb)")
    per_page = min(_page_query(request, "per-page", DEFAULT_PER_PAGE), MAX_PER_PAGE)
    page = _page_query(request, "page", 1)
    svc = services(request).circlet
    visible = [p for p in svc.visible_projects(user) if p.vcs_type is vcs]
    chosen = visible[(page - 1) * per_page : page * per_page]
    followed = {p.id for p in svc.followed_projects(user)}
    with_followers = svc.projects_with_followers() if chosen else set()
    return json_response(
        request,
        [
            repo_json(
                p,
                following=p.id in followed,
                has_followers=(p.id or 0) in with_followers,
                admin=user.admin or svc.role_of(p, user) is Role.ADMIN,
            )
            for p in chosen
        ],
    )


@router.post(
    "/user/heroku-key",
    summary="Accept a Heroku API key (kept nowhere: circlet deploys nothing to Heroku)",
    responses=answers(200, _EMPTY, "Accepted.", 400, 401),
    openapi_extra=_body_doc({"apikey": _STR}, ("apikey",)),
)
def heroku_key(request: Request, body: bytes = Depends(raw_body)) -> Response:
    user = caller_user(request)
    fields = _fields(request, body)
    services(request).circlet.set_heroku_key(user, _text(fields, "apikey") or "")
    return json_response(request, "")


# ---------------------------------------------------------------- follow


@router.post(
    P + "/follow",
    summary="Follow a project",
    responses=answers(200, _FOLLOW, "Followed (`first_build` is null: following starts no build).", 403, 404),
)
def follow(request: Request, vcs_type: str, username: str, reponame: str) -> Response:
    """A project token has no user to follow as: 403."""
    project, _ = project_access(request, vcs_type, username, reponame, Scope.WRITE_SETTINGS, user_only=True)
    services(request).circlet.follow(project, caller_user(request))
    return json_response(request, {"followed": True, "following": True, "first_build": None})


@router.post(
    P + "/unfollow",
    summary="Stop following a project",
    responses=answers(200, _FOLLOW, "Not followed any more.", 403, 404),
)
def unfollow(request: Request, vcs_type: str, username: str, reponame: str) -> Response:
    project, _ = project_access(request, vcs_type, username, reponame, Scope.WRITE_SETTINGS, user_only=True)
    services(request).circlet.unfollow(project, caller_user(request))
    return json_response(request, {"followed": False, "following": False})


# ---------------------------------------------------------------- environment variables


@router.get(
    P + "/envvar",
    summary="The project's environment variables, values masked",
    responses=answers(200, {"type": "array", "items": _ENV_VAR}, "Ordered by name.", 403, 404),
)
def list_env_vars(request: Request, vcs_type: str, username: str, reponame: str) -> Response:
    project, _ = project_access(request, vcs_type, username, reponame, Scope.READ_SETTINGS)
    found = services(request).circlet.list_env_vars(project)
    return json_response(request, [env_var_json(v) for v in found])


@router.post(
    P + "/envvar",
    status_code=201,
    summary="Add or overwrite an environment variable",
    responses=answers(201, _ENV_VAR, "The variable, masked.", 400, 403, 404),
    openapi_extra=_body_doc({"name": _STR, "value": _STR}, ("name", "value")),
)
def add_env_var(
    request: Request, vcs_type: str, username: str, reponame: str, body: bytes = Depends(raw_body)
) -> Response:
    project, _ = project_access(request, vcs_type, username, reponame, Scope.WRITE_SETTINGS)
    fields = _fields(request, body)
    name, value = _text(fields, "name") or "", _text(fields, "value") or ""
    svc = services(request)
    var = svc.circlet.set_env_var(project, name, value)
    location = f"{svc.links.api_project(project)}/envvar/{var.name}"
    return json_response(request, env_var_json(var), 201, headers={"Location": location})


@router.get(
    P + "/envvar/{name}",
    summary="One environment variable, masked",
    responses=answers(200, _ENV_VAR, "The variable.", 403, 404),
)
def get_env_var(request: Request, vcs_type: str, username: str, reponame: str, name: str) -> Response:
    project, _ = project_access(request, vcs_type, username, reponame, Scope.READ_SETTINGS)
    return json_response(request, env_var_json(services(request).circlet.get_env_var(project, name)))


@router.delete(
    P + "/envvar/{name}",
    summary="Delete an environment variable",
    responses=answers(200, _OK, "Deleted.", 403, 404),
)
def delete_env_var(request: Request, vcs_type: str, username: str, reponame: str, name: str) -> Response:
    project, _ = project_access(request, vcs_type, username, reponame, Scope.WRITE_SETTINGS)
    services(request).circlet.delete_env_var(project, name)
    return json_response(request, {"message": "ok"})


# ---------------------------------------------------------------- checkout keys


@router.get(
    P + "/checkout-key",
    summary="The project's checkout keys",
    responses=answers(200, {"type": "array", "items": _CHECKOUT_KEY}, "Oldest first.", 400, 403, 404),
    openapi_extra=_DIGEST_QUERY,
)
def list_checkout_keys(request: Request, vcs_type: str, username: str, reponame: str) -> Response:
    project, _ = project_access(request, vcs_type, username, reponame, Scope.WRITE_SETTINGS)
    digest = _digest(request)
    keys = services(request).circlet.list_checkout_keys(project)
    return json_response(request, [checkout_key_json(k, digest) for k in keys])


@router.post(
    P + "/checkout-key",
    status_code=201,
    summary="Make a new checkout key (personal tokens only)",
    responses=answers(201, _CHECKOUT_KEY, "The new key.", 400, 403, 404),
    openapi_extra=_body_doc({"type": {"enum": ["deploy-key", "github-user-key"]}}, ("type",)),
)
def create_checkout_key(
    request: Request, vcs_type: str, username: str, reponame: str, body: bytes = Depends(raw_body)
) -> Response:
    project, _ = project_access(request, vcs_type, username, reponame, Scope.WRITE_SETTINGS, user_only=True)
    key_type = _text(_fields(request, body), "type") or ""
    svc = services(request)
    key = svc.circlet.create_checkout_key(project, key_type, caller_user(request))
    location = f"{svc.links.api_project(project)}/checkout-key/{key.fingerprint_md5}"
    return json_response(request, checkout_key_json(key), 201, headers={"Location": location})


@router.get(
    P + "/checkout-key/{fingerprint:path}",
    summary="One checkout key by its md5 or sha256 fingerprint",
    responses=answers(200, _CHECKOUT_KEY, "The key.", 400, 403, 404),
    openapi_extra=_DIGEST_QUERY,
)
def get_checkout_key(
    request: Request, vcs_type: str, username: str, reponame: str, fingerprint: str
) -> Response:
    project, _ = project_access(request, vcs_type, username, reponame, Scope.WRITE_SETTINGS)
    key, matched = services(request).circlet.find_checkout_key(project, fingerprint)
    return json_response(request, checkout_key_json(key, _digest(request, matched)))


@router.delete(
    P + "/checkout-key/{fingerprint:path}",
    summary="Delete a checkout key",
    responses=answers(200, _OK, "Deleted.", 403, 404),
)
def delete_checkout_key(
    request: Request, vcs_type: str, username: str, reponame: str, fingerprint: str
) -> Response:
    project, _ = project_access(request, vcs_type, username, reponame, Scope.WRITE_SETTINGS)
    services(request).circlet.delete_checkout_key(project, fingerprint)
    return json_response(request, {"message": "ok"})


# ---------------------------------------------------------------- SSH keys, build cache


@router.post(
    P + "/ssh-key",
    summary="Add a private SSH key for the project's builds",
    responses=answers(200, _EMPTY, "Added.", 400, 403, 404),
    openapi_extra=_body_doc(
        {"hostname": {"type": ["string", "null"]}, "private_key": _STR}, ("private_key",)
    ),
)
def add_ssh_key(
    request: Request, vcs_type: str, username: str, reponame: str, body: bytes = Depends(raw_body)
) -> Response:
    project, _ = project_access(request, vcs_type, username, reponame, Scope.WRITE_SETTINGS)
    fields = _fields(request, body)
    private_key = fields.get("private_key")
    hostname = _text(fields, "hostname", required=False)
    if not isinstance(private_key, str):
        private_key = ""
    services(request).circlet.add_ssh_key(project, private_key, hostname)
    return json_response(request, "")


@router.delete(
    P + "/ssh-key",
    summary="Delete a project's SSH key by fingerprint and hostname",
    responses=answers(200, _EMPTY, "Deleted.", 400, 403, 404),
    openapi_extra=_body_doc(
        {"fingerprint": _STR, "hostname": {"type": ["string", "null"]}}, ("fingerprint",)
    ),
)
def delete_ssh_key(
    request: Request, vcs_type: str, username: str, reponame: str, body: bytes = Depends(raw_body)
) -> Response:
    project, _ = project_access(request, vcs_type, username, reponame, Scope.WRITE_SETTINGS)
    fields = _fields(request, body)
    fingerprint = _text(fields, "fingerprint") or ""
    hostname = _text(fields, "hostname", required=False)
    services(request).circlet.delete_ssh_key(project, fingerprint, hostname)
    return json_response(request, "")


@router.delete(
    P + "/build-cache",
    summary="Clear the project's dependency caches",
    responses=answers(200, _OBJECT, "Cleared.", 403, 404),
)
def clear_build_cache(request: Request, vcs_type: str, username: str, reponame: str) -> Response:
    project, _ = project_access(request, vcs_type, username, reponame, Scope.WRITE_SETTINGS)
    services(request).circlet.clear_build_cache(project)
    return json_response(request, {"status": "build dependency caches deleted"})


# ---------------------------------------------------------------- settings


@router.get(
    P + "/settings",
    summary="The project's settings (the shape of a /projects entry)",
    responses=answers(200, _PROJECT, "The settings.", 403, 404),
)
def get_settings(request: Request, vcs_type: str, username: str, reponame: str) -> Response:
    project, token = project_access(request, vcs_type, username, reponame, Scope.READ_SETTINGS)
    return json_response(request, _settings_json(request, project, token))


@router.put(
    P + "/settings",
    summary="Change whether the project is open source, and its default branch",
    responses=answers(200, _PROJECT, "The new settings.", 400, 403, 404),
    openapi_extra=_body_doc(
        {
            "oss": {"type": "boolean"},
            "default_branch": _STR,
            "feature_flags": {"type": "object", "properties": {"oss": {"type": "boolean"}}},
        }
    ),
)
def put_settings(
    request: Request, vcs_type: str, username: str, reponame: str, body: bytes = Depends(raw_body)
) -> Response:
    """`oss` (also as `feature_flags.oss`, CircleCI's spelling) and `default_branch`; every other
    key is ignored, so a client may send back the object it read."""
    project, token = project_access(request, vcs_type, username, reponame, Scope.WRITE_SETTINGS)
    fields = _fields(request, body)
    flags = fields.get("feature_flags")
    oss = fields.get("oss", flags.get("oss") if isinstance(flags, dict) else None)
    if oss is not None and not isinstance(oss, bool):
        raise InvalidRequest("oss must be true or false")
    branch = _text(fields, "default_branch", required=False)
    updated = services(request).circlet.update_project_settings(project, oss=oss, default_branch=branch)
    return json_response(request, _settings_json(request, updated, token))


__all__ = ["router"]
