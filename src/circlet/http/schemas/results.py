"""What a build leaves and who asks: test results, artifacts, logs (api-v1.1.md 7, 9) and /me."""

from __future__ import annotations

from circlet.http.schemas.base import (
    BOOL,
    INT,
    STAMP,
    STR,
    Schema,
    _obj,
    nullable,
    ref,
)

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
