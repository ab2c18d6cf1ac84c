"""What the v1.1 API answers, as JSON Schemas for the OpenAPI document (documentation only).

The bodies themselves are built by circlet.wire and the handlers; these schemas describe them
as api-v1.1.md sections 5, 7, 8 and 9 do, `null` exactly where a value may be null. Handlers
attach them with `responses=` and `openapi_extra=` on their route decorators; `install()`
adds the shared components, the path parameters and the ways to send a token to the document
FastAPI generates, and drops FastAPI's 422 answers (circlet answers 400 instead).

OpenAPI 3.1, so a nullable value is `"type": [..., "null"]`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from circlet.wire import SHALLOW_KEYS

JSON = "application/json"
Schema = dict[str, Any]

# Timestamps circlet generates (api-v1.1.md 4): UTC, milliseconds, `Z`.
TIMESTAMP = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """The schema, or null."""
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    kind = schema.get("type")
    out = dict(schema)
    if isinstance(kind, str):
        out["type"] = [kind, "null"]
    elif isinstance(kind, list):
        out["type"] = [*kind, "null"]
    else:
        return {"anyOf": [schema, {"type": "null"}]}
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


def _obj(properties: dict[str, Schema], *, optional: tuple[str, ...] = (), closed: bool = False) -> Schema:
    schema: Schema = {
        "type": "object",
        "required": [k for k in properties if k not in optional],
        "properties": properties,
    }
    if closed:
        schema["additionalProperties"] = False
    return schema


STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
BOOL: Schema = {"type": "boolean"}
NULL: Schema = {"type": "null"}
STAMP: Schema = {"type": "string", "pattern": TIMESTAMP}
TRUE_OR_NULL: Schema = {"enum": [True, None]}

LIFECYCLES = ["not_running", "queued", "scheduled", "running", "finished", "not_run"]
OUTCOMES = ["success", "failed", "timedout", "no_tests", "infrastructure_fail", "canceled"]
STATUSES = [
    "not_running",
    "queued",
    "scheduled",
    "running",
    "not_run",
    "success",
    "fixed",
    "failed",
    "timedout",
    "no_tests",
    "infrastructure_fail",
    "canceled",
    "retried",
]
WHYS = [
    "github",
    "bitbucket",
    "api",
    "retry",
    "ssh",
    "auto-retry",
    "edit",
    "first-build",
    "trigger",
    "local",
    "scheduled_pipeline",
]
ACTION_STATUSES = ["running", "success", "failed", "timedout", "canceled", "infrastructure_fail"]
ACTION_TYPES = [
    "infrastructure",
    "checkout",
    "machine",
    "dependencies",
    "database",
    "test",
    "deployment",
    "teardown",
]
VCS_TYPES = ["github", "bitbucket"]

MESSAGE: Schema = {
    **_obj({"message": STR}),
    "description": 'Every error body: {"message": "..."} (api-v1.1.md 3).',
    "examples": [{"message": "Project not found"}],
}

COMMIT: Schema = _obj(
    {
        "commit": STR,
        "commit_url": STR,
        "subject": nullable(STR),
        "body": nullable(STR),
        "branch": nullable(STR),
        "author_name": nullable(STR),
        "author_email": nullable(STR),
        "author_login": nullable(STR),
        "author_date": nullable(STR),
        "committer_name": nullable(STR),
        "committer_email": nullable(STR),
        "committer_login": nullable(STR),
        "committer_date": nullable(STR),
    }
)

USER: Schema = {
    "description": 'Who triggered the build; `{"is_user": false, "login": "none"}` for project '
    "tokens and the system.",
    "oneOf": [
        _obj(
            {
                "is_user": {"const": True},
                "login": STR,
                "name": nullable(STR),
                "email": nullable(STR),
                "avatar_url": nullable(STR),
                "vcs_type": {"enum": VCS_TYPES},
                "id": INT,
            },
            optional=("email",),
        ),
        _obj({"is_user": {"const": False}, "login": {"const": "none"}}, closed=True),
    ],
}

PREVIOUS: Schema = _obj({"build_num": INT, "status": {"enum": STATUSES}, "build_time_millis": INT})

CANCELER: Schema = _obj(
    {
        "login": STR,
        "name": nullable(STR),
        "avatar_url": nullable(STR),
        "id": nullable(INT),
        "external_id": nullable(INT),
        "type": {"enum": VCS_TYPES},
        "domain": STR,
        "user?": BOOL,
        "authorized?": BOOL,
    }
)

WORKFLOWS: Schema = _obj(
    {
        "workflow_id": STR,
        "workflow_name": STR,
        "job_id": STR,
        "job_name": STR,
        "workspace_id": STR,
        "upstream_job_ids": {"type": "array", "items": STR},
        "upstream_concurrency_map": {"type": "object"},
    }
)

PICARD: Schema = _obj(
    {
        "executor": STR,
        "resource_class": _obj({"class": nullable(STR), "cpu": nullable(INT), "ram": nullable(INT)}),
        "build_agent": _obj(
            {
                "image": nullable(STR),
                "properties": _obj({"build_agent": STR, "executor": STR}),
            }
        ),
    }
)

NODE: Schema = _obj(
    {
        "public_ip_addr": STR,
        "port": INT,
        "username": STR,
        "image_id": nullable(STR),
        "ssh_enabled": nullable(BOOL),
    }
)

SSH_USER: Schema = _obj(
    {
        "login": STR,
        "github_id": nullable(INT),
        "type": {"enum": VCS_TYPES},
        "external_id": nullable(INT),
    }
)

BUILD_MESSAGE: Schema = _obj(
    {"type": {"enum": ["warning", "error"]}, "message": STR, "reason": STR}, optional=("reason",)
)

SUMMARY_PROPERTIES: dict[str, Schema] = {
    "vcs_url": STR,
    "build_url": STR,
    "build_num": {"type": "integer", "minimum": 1},
    "branch": nullable(STR),
    "vcs_revision": STR,
    "vcs_tag": nullable(STR),
    "vcs_type": {"enum": VCS_TYPES},
    "username": STR,
    "reponame": STR,
    "committer_name": nullable(STR),
    "committer_email": nullable(STR),
    "committer_date": nullable(STR),
    "author_name": nullable(STR),
    "author_email": nullable(STR),
    "author_date": nullable(STR),
    "subject": nullable(STR),
    "body": nullable(STR),
    "all_commit_details": {"type": "array", "items": ref("Commit")},
    "all_commit_details_truncated": BOOL,
    "compare": nullable(STR),
    "why": {"enum": WHYS},
    "dont_build": nullable(STR),
    "usage_queued_at": nullable(STAMP),
    "queued_at": nullable(STAMP),
    "start_time": nullable(STAMP),
    "stop_time": nullable(STAMP),
    "build_time_millis": nullable({"type": "integer", "minimum": 0}),
    "lifecycle": {"enum": LIFECYCLES},
    "outcome": nullable({"type": "string", "enum": OUTCOMES}),
    "status": {"enum": STATUSES},
    "failed": TRUE_OR_NULL,
    "timedout": BOOL,
    "infrastructure_fail": BOOL,
    "canceled": BOOL,
    "canceler": nullable(ref("Canceler")),
    "retry_of": nullable(INT),
    "retries": nullable({"type": "array", "items": INT}),
    "previous": nullable(ref("PreviousBuild")),
    "previous_successful_build": nullable(ref("PreviousBuild")),
    "parallel": {"type": "integer", "minimum": 1},
    "build_parameters": nullable({"type": "object"}),
    "user": ref("User"),
    "job_name": nullable(STR),
    "workflows": nullable(ref("Workflows")),
    "platform": {"const": "2.0"},
    "picard": nullable(ref("Picard")),
    "node": nullable({"type": "array", "items": ref("Node")}),
    "ssh_users": {"type": "array", "items": ref("SshUser")},
    "ssh_disabled": BOOL,
    "ssh_enabled": TRUE_OR_NULL,
    "messages": {"type": "array", "items": ref("BuildMessage")},
    "circle_yml": nullable(_obj({"string": STR})),
    "context_ids": {"type": "array", "items": STR},
    "oss": BOOL,
    "is_first_green_build": BOOL,
    "no_dependency_cache": BOOL,
    "fail_reason": NULL,
}

BUILD_SUMMARY: Schema = {
    **_obj(SUMMARY_PROPERTIES),
    "description": "A build (one job run) as lists and trigger/retry/cancel answers show it "
    "(api-v1.1.md 5.1). Every key is always present.",
}

ACTION: Schema = {
    **_obj(
        {
            "name": STR,
            "index": {"type": "integer", "minimum": 0},
            "step": {"type": "integer", "minimum": 0},
            "type": {"enum": ACTION_TYPES},
            "source": nullable({"type": "string", "enum": ["config", "cache", "inference"]}),
            "bash_command": nullable(STR),
            "status": {"enum": ACTION_STATUSES},
            "start_time": nullable(STAMP),
            "end_time": nullable(STAMP),
            "run_time_millis": nullable({"type": "integer", "minimum": 0}),
            "exit_code": nullable(INT),
            "failed": TRUE_OR_NULL,
            "timedout": TRUE_OR_NULL,
            "infrastructure_fail": TRUE_OR_NULL,
            "canceled": TRUE_OR_NULL,
            "continue": TRUE_OR_NULL,
            "parallel": BOOL,
            "background": BOOL,
            "insignificant": BOOL,
            "truncated": BOOL,
            "messages": {"type": "array"},
            "has_output": BOOL,
            "output_url": {"type": "string", "description": "Signed URL of the log; needs no token."},
            "allocation_id": STR,
        },
        optional=("output_url", "allocation_id"),
    ),
    "description": "One step on one container (api-v1.1.md 7.1); `output_url` is present exactly "
    "when `has_output` is true.",
    "if": {"properties": {"has_output": {"const": True}}},
    "then": {"required": ["output_url"]},
    "else": {"not": {"required": ["output_url"]}},
}

STEP: Schema = _obj({"name": STR, "actions": {"type": "array", "items": ref("Action")}})

BUILD: Schema = {
    "description": "The full build (api-v1.1.md 5.2): the summary plus steps, pull requests and owners.",
    "allOf": [
        ref("BuildSummary"),
        _obj(
            {
                "steps": {"type": "array", "items": ref("Step")},
                "pull_requests": {
                    "type": "array",
                    "items": _obj({"head_sha": STR, "url": STR}),
                },
                "owners": {"type": "array", "items": STR},
            }
        ),
    ],
}

SHALLOW_BUILD: Schema = {
    **_obj(
        {
            **{key: SUMMARY_PROPERTIES[key] for key in SHALLOW_KEYS if key in SUMMARY_PROPERTIES},
            "pull_requests": {"type": "array"},
            "fleet": {"const": "picard"},
        },
        closed=True,
    ),
    "description": "A build in a list asked for with shallow=true: exactly these keys (api-v1.1.md 5.3).",
}

BUILD_LIST: Schema = {
    "type": "array",
    "description": "Newest first; summaries, or shallow builds with shallow=true.",
    "items": {"anyOf": [ref("BuildSummary"), ref("ShallowBuild")]},
}

PROJECT_BUILD_CREATED: Schema = {
    **_obj({"status": {"const": 200}, "body": {"const": "Build created"}}, closed=True),
    "description": "Exactly this body (api-v1.1.md 8.9).",
}

TEST: Schema = _obj(
    {
        "name": STR,
        "classname": STR,
        "file": nullable(STR),
        "result": {"enum": ["success", "failure", "skipped", "error"]},
        "run_time": {"type": "number"},
        "message": nullable(STR),
        "source": STR,
        "source_type": STR,
    }
)

TEST_RESULTS: Schema = _obj(
    {"tests": {"type": "array", "items": ref("Test")}, "exceptions": {"type": "array"}}
)

ARTIFACT: Schema = _obj(
    {
        "path": STR,
        "pretty_path": STR,
        "node_index": {"type": "integer", "minimum": 0},
        "url": {"type": "string", "description": "Absolute; takes the token in any of the three forms."},
    }
)

LOG_CHUNK: Schema = _obj(
    {
        "type": {"enum": ["out", "err"]},
        "time": STAMP,
        "message": STR,
        "truncated": BOOL,
    },
    optional=("truncated",),
)

LOG: Schema = {
    "type": "array",
    "items": ref("LogChunk"),
    "description": "An action's log as chunks (api-v1.1.md 7.2).",
}

ME: Schema = _obj(
    {
        "login": STR,
        "name": nullable(STR),
        "selected_email": nullable(STR),
        "all_emails": {"type": "array", "items": STR},
        "avatar_url": nullable(STR),
        "admin": nullable(BOOL),
        "basic_email_prefs": {"enum": ["smart", "none", "all"]},
        "created_at": nullable(STR),
        "github_id": nullable(INT),
        "bitbucket": nullable({"type": "object"}),
        "identities": {"type": "object"},
        "projects": {"type": "object"},
        "containers": INT,
        "parallelism": INT,
        "plan": nullable({"type": "object"}),
        "enrolled_betas": {"type": "array"},
        "in_beta_program": BOOL,
        "num_projects_followed": {"type": "integer", "minimum": 0},
    }
)

COMPONENTS: dict[str, Schema] = {
    "Message": MESSAGE,
    "Commit": COMMIT,
    "User": USER,
    "PreviousBuild": PREVIOUS,
    "Canceler": CANCELER,
    "Workflows": WORKFLOWS,
    "Picard": PICARD,
    "Node": NODE,
    "SshUser": SSH_USER,
    "BuildMessage": BUILD_MESSAGE,
    "BuildSummary": BUILD_SUMMARY,
    "Action": ACTION,
    "Step": STEP,
    "Build": BUILD,
    "ShallowBuild": SHALLOW_BUILD,
    "BuildList": BUILD_LIST,
    "ProjectBuildCreated": PROJECT_BUILD_CREATED,
    "Test": TEST,
    "TestResults": TEST_RESULTS,
    "Artifact": ARTIFACT,
    "Artifacts": {"type": "array", "items": ref("Artifact")},
    "LogChunk": LOG_CHUNK,
    "Log": LOG,
    "Me": ME,
}

# ---------------------------------------------------------------- responses

ERROR_TEXTS = {
    400: "The request cannot be carried out as given (bad query value, bad trigger body, unknown "
    "branch, tag or revision, ...).",
    401: "No token, or an unknown one: `You must log in first.`",
    403: "The token may see the project but not do this: `Permission denied`.",
    404: "`Project not found` (also for a private project without a valid token), `Build not "
    "found`, or another named thing that does not exist.",
}


def answers(
    status: int,
    schema: Schema | None,
    description: str,
    *errors: int,
    headers: dict[str, Any] | None = None,
    content: dict[str, Any] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: the success answer and the `{"message"}` errors it can give."""
    ok: dict[str, Any] = {"description": description}
    if content is not None:
        ok["content"] = content
    elif schema is not None:
        ok["content"] = {JSON: {"schema": schema}}
    if headers:
        ok["headers"] = headers
    out: dict[int | str, dict[str, Any]] = {status: ok}
    for code in errors:
        out[code] = {"description": ERROR_TEXTS[code], "content": {JSON: {"schema": ref("Message")}}}
    return out


LOCATION = {
    "Location": {
        "description": "Absolute API URL of the new build.",
        "schema": {"type": "string", "format": "uri"},
    }
}

# ---------------------------------------------------------------- query parameters and bodies


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


LIMIT = _query(
    "limit", {"type": "integer", "minimum": 0}, "How many builds (default 30; above 100 counts as 100)."
)
OFFSET = _query(
    "offset", {"type": "integer", "minimum": 0}, "How many of the newest builds to skip (default 0)."
)
FILTER = _query(
    "filter",
    STR,
    "`completed`, `successful`, `failed` or `running`; absent, empty or any other value means no filter.",
)
SHALLOW = _query(
    "shallow", STR, "`true`, `True`, `1` or `yes` (any case) lists shallow builds; anything else does not."
)

LIST_QUERY: dict[str, Any] = {"parameters": [LIMIT, OFFSET, FILTER, SHALLOW]}
RECENT_QUERY: dict[str, Any] = {"parameters": [LIMIT, OFFSET, SHALLOW]}
ARTIFACTS_QUERY: dict[str, Any] = {
    "parameters": [
        _query(
            "branch", STR, "With build_num `latest`: the newest build of this branch (any branch if absent)."
        ),
        _query(
            "filter",
            STR,
            "With build_num `latest`: `completed` (default), `successful`, `failed` or `running`.",
        ),
    ]
}
RETRY_QUERY: dict[str, Any] = {
    "parameters": [_query("no-cache", STR, "`true` retries without restoring caches.")],
    "requestBody": {
        "required": False,
        "description": 'Usually absent; `{"no-cache": "true"}` is accepted. Any body is ignored otherwise.',
        "content": {JSON: {"schema": {"type": "object"}}},
    },
}
OUTPUT_QUERY: dict[str, Any] = {
    "parameters": [
        _query("file", STR, "`true` serves the log as plain text instead of the chunk array."),
        _query("expires", STR, "Part of a signed output_url: stands in for a token with `sig`."),
        _query("sig", STR, "Part of a signed output_url."),
    ]
}

_NULLABLE_STR = nullable(STR)
_NON_EMPTY = nullable({"type": "string", "minLength": 1})
TRIGGER_FIELDS: Schema = {
    "type": "object",
    "description": "All optional; a null field counts as absent. Unknown keys are ignored. "
    "`revision` and `tag` exclude each other.",
    "properties": {
        "revision": {
            **nullable({"type": "string", "pattern": "^[0-9a-fA-F]{4,40}$"}),
            "description": "Build this commit (a full or abbreviated SHA).",
        },
        "tag": {**_NON_EMPTY, "description": "Build this tag."},
        "parallel": {
            "description": "Positive integer or numeric string; ignored (2.0 jobs take it from config).",
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
                {"type": "string", "pattern": "^ *0*[1-9][0-9]{0,8} *$"},
                NULL,
            ],
        },
        "build_parameters": {
            **nullable({"type": "object"}),
            "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
            "description": "Environment variables for the job; non-string values are given as JSON "
            "text. A string value cannot hold a NUL character.",
        },
        "job": {
            **_NON_EMPTY,
            "description": "The job to run (else build_parameters.CIRCLE_JOB, else `build`).",
        },
    },
    "not": {
        "type": "object",
        "required": ["revision", "tag"],
        "properties": {"revision": {"type": "string"}, "tag": {"type": "string"}},
    },
}
TRIGGER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "description": "JSON, a form with `build_parameters[NAME]=value` keys, or nothing (api-v1.1.md 8.6).",
        "content": {
            JSON: {"schema": nullable(TRIGGER_FIELDS)},
            "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
        },
    }
}
PROJECT_BUILD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "description": "Which commit to build as a push would; `tag` excludes `branch` and `revision`.",
        "content": {
            JSON: {
                "schema": nullable(
                    {
                        "type": "object",
                        "properties": {
                            "branch": _NON_EMPTY,
                            "revision": _NON_EMPTY,
                            "tag": _NON_EMPTY,
                            "parameters": {"type": "object", "description": "2.1 pipeline parameters"},
                        },
                    }
                )
            }
        },
    }
}
IGNORED_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "description": "Ignored (clients send none, `{}` or unrelated keys).",
        "content": {JSON: {"schema": {}}},
    }
}

# ---------------------------------------------------------------- path parameters

PATH_PARAMETERS: dict[str, tuple[Schema, str]] = {
    "vcs_type": (
        {"type": "string", "enum": ["github", "gh", "bitbucket", "bb"]},
        "Where the repository lives; any other value answers 404 `Project not found`.",
    ),
    "username": (
        {"type": "string", "pattern": "^[^/]+$"},
        "Owner of the repository, matched case-insensitively (answers use the stored spelling).",
    ),
    "reponame": (
        {"type": "string", "pattern": "^[^/]+$"},
        "The repository, matched case-insensitively (answers use the stored spelling).",
    ),
    "build_num": ({"type": "integer", "minimum": 1}, "The build's number in its project."),
    "branch": (
        {"type": "string", "minLength": 1},
        "Everything after /tree/ is the branch: slashes may be raw or percent-encoded.",
    ),
    "step": ({"type": "integer", "minimum": 0}, "The action's step number (`step` in the build's actions)."),
    "index": ({"type": "integer", "minimum": 0}, "The container index of the action."),
}
LATEST_OR_NUMBER: Schema = {"anyOf": [{"type": "integer", "minimum": 1}, {"const": "latest"}]}

SECURITY_SCHEMES: dict[str, Schema] = {
    "CircleToken": {"type": "apiKey", "in": "header", "name": "Circle-Token"},
    "BasicToken": {
        "type": "http",
        "scheme": "basic",
        "description": "The token as the user name with an empty password (or as the password "
        "with an empty user name).",
    },
    "TokenQuery": {"type": "apiKey", "in": "query", "name": "circle-token"},
}
# Any one of them; none at all for open-source projects (an unknown token counts as none).
SECURITY: list[dict[str, list[str]]] = [{"CircleToken": []}, {"BasicToken": []}, {"TokenQuery": []}, {}]

# ---------------------------------------------------------------- the document


def document(openapi: dict[str, Any]) -> dict[str, Any]:
    """Complete FastAPI's document in place: components, path parameters, security; no 422s."""
    components = openapi.setdefault("components", {})
    found = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        found.pop(unused, None)
    found.update(COMPONENTS)
    components["securitySchemes"] = SECURITY_SCHEMES
    openapi["security"] = SECURITY
    for path, operations in openapi.get("paths", {}).items():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
            for parameter in operation.get("parameters", []):
                if parameter.get("in") != "path" or parameter.get("name") not in PATH_PARAMETERS:
                    continue
                schema, description = PATH_PARAMETERS[parameter["name"]]
                if parameter["name"] == "build_num" and path.endswith("/{build_num}/artifacts"):
                    schema = LATEST_OR_NUMBER
                    description += " `latest` = the newest build matching ?branch= and ?filter=."
                parameter["schema"] = schema
                parameter["description"] = description
    return openapi


def install(app: FastAPI) -> None:
    """Make `app.openapi()` serve the completed document (built once, on first use)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(generate())
        schema: dict[str, Any] = app.openapi_schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
