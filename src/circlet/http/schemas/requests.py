"""Route decorations: the answers a route gives, its query parameters and request bodies."""

from __future__ import annotations

from typing import Any

from circlet.http.schemas.base import (
    JSON,
    NULL,
    STR,
    Schema,
    nullable,
    ref,
)

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
