"""The OpenAPI document: shared components, path parameters, security, and `install()`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from circlet.http.schemas.base import (
    Schema,
    ref,
)
from circlet.http.schemas.builds import (
    ACTION,
    BUILD,
    BUILD_LIST,
    BUILD_MESSAGE,
    BUILD_SUMMARY,
    CANCELER,
    COMMIT,
    MESSAGE,
    NODE,
    PICARD,
    PREVIOUS,
    PROJECT_BUILD_CREATED,
    SHALLOW_BUILD,
    SSH_USER,
    STEP,
    USER,
    WORKFLOWS,
)
from circlet.http.schemas.results import ARTIFACT, LOG, LOG_CHUNK, ME, TEST, TEST_RESULTS

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
