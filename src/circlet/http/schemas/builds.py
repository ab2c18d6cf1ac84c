"""Builds as v1.1 answers them: summaries, full builds, actions, shallow lists (api-v1.1.md 5, 7.1)."""

from __future__ import annotations

from circlet.http.schemas.base import (
    ACTION_STATUSES,
    ACTION_TYPES,
    BOOL,
    INT,
    LIFECYCLES,
    NULL,
    OUTCOMES,
    STAMP,
    STATUSES,
    STR,
    TRUE_OR_NULL,
    VCS_TYPES,
    WHYS,
    Schema,
    _obj,
    nullable,
    ref,
)
from circlet.wire import SHALLOW_KEYS

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
