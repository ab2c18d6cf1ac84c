"""What crosses between the server and a runner process: RunRequests going out, RunReporter
events coming back, as JSON objects (one per line on a pipe here; a queue or HTTP later).

Explicit encode/decode functions, so the domain classes stay plain.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from circlet.core.model import Action, ActionStatus, Message, Project, VcsType
from circlet.core.plan import JobPlan
from circlet.core.ports import RunRequest

# What a runner process inherits from the server (local executor) or the worker (celery): no
# credentials of either; steps get a subset of this (runner/workspace.py).
RUNNER_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "USER",
    "LOGNAME",
    "TMPDIR",
    "HOME",
    "XDG_RUNTIME_DIR",
    "PYTHONPATH",
)


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


def encode_project(project: Project) -> dict[str, Any]:
    return {
        "id": project.id,
        "vcs_type": project.vcs_type.value,
        "username": project.username,
        "reponame": project.reponame,
        "repo_url": project.repo_url,
        "default_branch": project.default_branch,
        "oss": project.oss,
        "created_at": _time(project.created_at),
    }


def decode_project(data: dict[str, Any]) -> Project:
    return Project(
        id=data["id"],
        vcs_type=VcsType(data["vcs_type"]),
        username=data["username"],
        reponame=data["reponame"],
        repo_url=data["repo_url"],
        default_branch=data["default_branch"],
        oss=data["oss"],
        created_at=_parse_time(data["created_at"]),
    )


def encode_request(request: RunRequest) -> dict[str, Any]:
    return {
        "build_id": request.build_id,
        "project": encode_project(request.project),
        "build_num": request.build_num,
        "revision": request.revision,
        "branch": request.branch,
        "tag": request.tag,
        "plan": request.plan.to_dict(),
        "environment": request.environment,
        "parallelism": request.parallelism,
        "timings": request.timings,
        "workflow_id": request.workflow_id,
        "upstream_build_ids": list(request.upstream_build_ids),
        "no_dependency_cache": request.no_dependency_cache,
    }


def decode_request(data: dict[str, Any]) -> RunRequest:
    return RunRequest(
        build_id=data["build_id"],
        project=decode_project(data["project"]),
        build_num=data["build_num"],
        revision=data["revision"],
        branch=data["branch"],
        tag=data["tag"],
        plan=JobPlan.from_dict(data["plan"]),
        environment=dict(data["environment"]),
        parallelism=data["parallelism"],
        timings=data.get("timings"),
        workflow_id=data.get("workflow_id"),
        upstream_build_ids=tuple(data.get("upstream_build_ids") or ()),
        no_dependency_cache=bool(data.get("no_dependency_cache", False)),  # absent before it existed
    )


def encode_action(action: Action) -> dict[str, Any]:
    return {
        "step": action.step,
        "index": action.index,
        "name": action.name,
        "type": action.type,
        "source": action.source,
        "bash_command": action.bash_command,
        "status": action.status.value,
        "exit_code": action.exit_code,
        "start_time": _time(action.start_time),
        "end_time": _time(action.end_time),
        "background": action.background,
        "parallel": action.parallel,
        "has_output": action.has_output,
        "truncated": action.truncated,
        "messages": list(action.messages),
    }


def decode_action(data: dict[str, Any]) -> Action:
    return Action(
        step=data["step"],
        index=data["index"],
        name=data["name"],
        type=data["type"],
        source=data["source"],
        bash_command=data["bash_command"],
        status=ActionStatus(data["status"]),
        exit_code=data["exit_code"],
        start_time=_parse_time(data["start_time"]),
        end_time=_parse_time(data["end_time"]),
        background=data["background"],
        parallel=data["parallel"],
        has_output=data["has_output"],
        truncated=data["truncated"],
        messages=tuple(data["messages"]),
    )


def encode_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    return [{"type": m.type, "message": m.message, "reason": m.reason} for m in messages]


def decode_messages(data: list[dict[str, Any]]) -> tuple[Message, ...]:
    return tuple(Message(type=m["type"], message=m["message"], reason=m.get("reason")) for m in data)


def encode_time(moment: datetime) -> str:
    return moment.isoformat()


def decode_time(text: str) -> datetime:
    return datetime.fromisoformat(text)
