"""The building blocks of the schemas: scalar types, nullable, objects, and the enumerations of v1.1."""

from __future__ import annotations

from typing import Any

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
