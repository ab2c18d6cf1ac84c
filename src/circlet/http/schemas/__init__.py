"""What the v1.1 API answers, as JSON Schemas for the OpenAPI document (documentation only).

The bodies themselves are built by circlet.wire and the handlers; these schemas describe them
as api-v1.1.md sections 5, 7, 8 and 9 do, `null` exactly where a value may be null. Handlers
attach them with `responses=` and `openapi_extra=` on their route decorators; `install()`
adds the shared components, the path parameters and the ways to send a token to the document
FastAPI generates, and drops FastAPI's 422 answers (circlet answers 400 instead).

OpenAPI 3.1, so a nullable value is `"type": [..., "null"]`.
"""

from __future__ import annotations

from circlet.http.schemas.base import JSON, TIMESTAMP, Schema, nullable, ref
from circlet.http.schemas.document import (
    COMPONENTS,
    LATEST_OR_NUMBER,
    PATH_PARAMETERS,
    SECURITY,
    SECURITY_SCHEMES,
    document,
    install,
)
from circlet.http.schemas.requests import (
    ARTIFACTS_QUERY,
    ERROR_TEXTS,
    FILTER,
    IGNORED_BODY,
    LIMIT,
    LIST_QUERY,
    LOCATION,
    OFFSET,
    OUTPUT_QUERY,
    PROJECT_BUILD_BODY,
    RECENT_QUERY,
    RETRY_QUERY,
    SHALLOW,
    TRIGGER_BODY,
    TRIGGER_FIELDS,
    answers,
)

__all__ = [
    "ARTIFACTS_QUERY",
    "COMPONENTS",
    "ERROR_TEXTS",
    "FILTER",
    "IGNORED_BODY",
    "JSON",
    "LATEST_OR_NUMBER",
    "LIMIT",
    "LIST_QUERY",
    "LOCATION",
    "OFFSET",
    "OUTPUT_QUERY",
    "PATH_PARAMETERS",
    "PROJECT_BUILD_BODY",
    "RECENT_QUERY",
    "RETRY_QUERY",
    "SECURITY",
    "SECURITY_SCHEMES",
    "SHALLOW",
    "TIMESTAMP",
    "TRIGGER_BODY",
    "TRIGGER_FIELDS",
    "Schema",
    "answers",
    "document",
    "install",
    "nullable",
    "ref",
]
