"""The CircleCI v1.1 JSON shapes, translated from domain values here and nowhere else.

api-v1.1.md section 5 (build object), 7 (actions, log chunks). Every summary key is always
present, null where unknown.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from circlet import __version__
from circlet.core import signing
from circlet.core.env import build_url
from circlet.core.model import (
    Action,
    ActionStatus,
    Build,
    BuildView,
    Outcome,
    Project,
    User,
    group_steps,
)
from circlet.core.ports import LogChunk
from circlet.core.projects import (
    BranchOverview,
    BuildBrief,
    CheckoutKey,
    EnvVar,
    ProjectOverview,
    mask,
)
from circlet.core.status import failed_flag

OUTPUT_URL_LIFETIME = 7 * 24 * 3600  # seconds a signed output_url stays valid


def iso(moment: datetime | None) -> str | None:
    """ISO-8601 UTC with milliseconds and `Z`: 2024-05-01T12:00:03.123Z."""
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class Links:
    """Absolute URLs of the API, signed where a client fetches them without credentials."""

    def __init__(self, base_url: str, secret: bytes) -> None:
        self.base_url = base_url.rstrip("/")
        self.secret = secret

    def api_project(self, project: Project) -> str:
        return (
            f"{self.base_url}/api/v1.1/project/{project.vcs_type.value}/{project.username}/{project.reponame}"
        )

    def api_build(self, project: Project, build_num: int) -> str:
        return f"{self.api_project(project)}/{build_num}"

    def output_path(self, project: Project, build_num: int, step: int, index: int) -> str:
        return (
            f"/api/v1.1/project/{project.vcs_type.value}/{project.username}/{project.reponame}"
            f"/{build_num}/output/{step}/{index}"
        )

    def output_url(self, project: Project, build_num: int, step: int, index: int) -> str:
        path = self.output_path(project, build_num, step, index)
        # Expiry rounded to the hour so that repeated reads of a build give the same URLs.
        expires = (int(time.time()) // 3600 + 1) * 3600 + OUTPUT_URL_LIFETIME
        sig = signing.sign(self.secret, path, expires)
        return f"{self.base_url}{path}?expires={expires}&sig={sig}"

    def build_url(self, project: Project, build_num: int) -> str:
        return build_url(self.base_url, project, build_num)


def user_json(user: User | None, project: Project) -> dict[str, Any]:
    if user is None:
        return {"is_user": False, "login": "none"}
    return {
        "is_user": True,
        "login": user.login,
        "name": user.name,
        "email": user.email,
        "avatar_url": None,
        "vcs_type": project.vcs_type.value,
        "id": user.id,
    }


def _mini(build: Build | None, status: str | None) -> dict[str, Any] | None:
    if build is None:
        return None
    return {"build_num": build.build_num, "status": status, "build_time_millis": build.build_time_millis or 0}


def _commit_json(build: Build, project: Project) -> list[dict[str, Any]]:
    c = build.commit
    if c is None:
        return []
    return [
        {
            "commit": c.sha,
            "commit_url": f"{project.vcs_url}/commit/{c.sha}",
            "subject": c.subject,
            "body": c.body,
            "branch": build.branch,
            "author_name": c.author_name,
            "author_email": c.author_email,
            "author_login": None,
            "author_date": c.author_date,
            "committer_name": c.committer_name,
            "committer_email": c.committer_email,
            "committer_login": None,
            "committer_date": c.committer_date,
        }
    ]


def _picard(build: Build) -> dict[str, Any] | None:
    ex = build.executor
    if ex is None:
        return None
    return {
        "executor": ex.kind,
        "resource_class": {"class": ex.resource_class, "cpu": None, "ram": None},
        "build_agent": {
            "image": ex.image,
            "properties": {"build_agent": f"circlet/{__version__}", "executor": ex.kind},
        },
    }


def build_summary(view: BuildView, links: Links) -> dict[str, Any]:
    """The summary object (section 5.1): lists and the bodies of trigger/retry/cancel."""
    b, p = view.build, view.project
    c = b.commit
    outcome = b.outcome
    canceler = view.canceler
    return {
        "vcs_url": p.vcs_url,
        "build_url": links.build_url(p, b.build_num),
        "build_num": b.build_num,
        "branch": b.branch,
        "vcs_revision": b.vcs_revision,
        "vcs_tag": b.vcs_tag,
        "vcs_type": p.vcs_type.value,
        "username": p.username,
        "reponame": p.reponame,
        "committer_name": c.committer_name if c else None,
        "committer_email": c.committer_email if c else None,
        "committer_date": c.committer_date if c else None,
        "author_name": c.author_name if c else None,
        "author_email": c.author_email if c else None,
        "author_date": c.author_date if c else None,
        "subject": c.subject if c else None,
        "body": c.body if c else None,
        "all_commit_details": _commit_json(b, p),
        "all_commit_details_truncated": False,
        "compare": None,
        "why": b.why.value,
        "dont_build": b.dont_build,
        "usage_queued_at": iso(b.usage_queued_at),
        "queued_at": iso(b.queued_at),
        "start_time": iso(b.start_time),
        "stop_time": iso(b.stop_time),
        "build_time_millis": b.build_time_millis,
        "lifecycle": b.lifecycle.value,
        "outcome": outcome.value if outcome else None,
        "status": view.status,
        "failed": failed_flag(outcome),
        "timedout": outcome is Outcome.TIMEDOUT,
        "infrastructure_fail": outcome is Outcome.INFRASTRUCTURE_FAIL,
        "canceled": outcome is Outcome.CANCELED,
        "canceler": None
        if outcome is not Outcome.CANCELED
        else {
            "login": canceler.login if canceler else "none",
            "name": canceler.name if canceler else None,
            "avatar_url": None,
            "id": canceler.id if canceler else None,
            "external_id": None,
            "type": p.vcs_type.value,
            "domain": p.vcs_type.host,
            "user?": canceler is not None,
            "authorized?": True,
        },
        "retry_of": b.retry_of,
        "retries": list(view.retries) or None,
        "previous": _mini(view.previous, view.previous_status),
        "previous_successful_build": _mini(
            view.previous_successful, "success" if view.previous_successful else None
        ),
        "parallel": b.parallel,
        "build_parameters": b.build_parameters,
        "user": user_json(view.user, p),
        "job_name": b.extra.get("requested_job"),  # the trigger's `job` parameter, else null
        "workflows": b.extra.get("workflows"),
        "platform": "2.0",
        "picard": _picard(b),
        "node": None,
        "ssh_users": [
            {"login": login, "github_id": None, "type": p.vcs_type.value, "external_id": None}
            for login in b.ssh_users
        ],
        "ssh_disabled": not b.ssh_enabled,
        "ssh_enabled": b.ssh_enabled or None,
        "messages": [
            {"type": m.type, "message": m.message, **({"reason": m.reason} if m.reason else {})}
            for m in b.messages
        ],
        "circle_yml": {"string": b.config_text} if b.config_text is not None else None,
        "context_ids": list(b.extra.get("context_ids") or []),  # contexts of a workflow job
        "oss": p.oss,
        "is_first_green_build": False,
        "no_dependency_cache": b.no_dependency_cache,
        "fail_reason": None,
        "owners": [p.username],
        "pull_requests": [],
    }


def action_json(action: Action, view: BuildView, links: Links) -> dict[str, Any]:
    s = action.status
    data: dict[str, Any] = {
        "name": action.name,
        "index": action.index,
        "step": action.step,
        "type": action.type,
        "source": action.source,
        "bash_command": action.bash_command,
        "status": s.value,
        "start_time": iso(action.start_time),
        "end_time": iso(action.end_time),
        "run_time_millis": action.run_time_millis,
        "exit_code": action.exit_code,
        "failed": True if s is ActionStatus.FAILED else None,
        "timedout": True if s is ActionStatus.TIMEDOUT else None,
        "infrastructure_fail": True if s is ActionStatus.INFRASTRUCTURE_FAIL else None,
        "canceled": True if s is ActionStatus.CANCELED else None,
        "continue": None,
        "parallel": action.parallel,
        "background": action.background,
        "insignificant": False,
        "truncated": action.truncated,
        "messages": list(action.messages),
        "has_output": action.has_output or s is ActionStatus.RUNNING,
    }
    if data["has_output"]:
        data["output_url"] = links.output_url(view.project, view.build.build_num, action.step, action.index)
    return data


def build_details(view: BuildView, links: Links) -> dict[str, Any]:
    """The full object (section 5.2): single-build endpoint and webhook payloads."""
    data = build_summary(view, links)
    data["steps"] = [
        {"name": step.name, "actions": [action_json(a, view, links) for a in step.actions]}
        for step in group_steps(view.actions)
    ]
    return data


SHALLOW_KEYS = (
    "build_num",
    "build_url",
    "branch",
    "vcs_revision",
    "vcs_tag",
    "vcs_url",
    "username",
    "reponame",
    "committer_name",
    "committer_email",
    "committer_date",
    "author_name",
    "author_email",
    "author_date",
    "subject",
    "body",
    "why",
    "user",
    "workflows",
    "pull_requests",
    "status",
    "lifecycle",
    "outcome",
    "dont_build",
    "usage_queued_at",
    "queued_at",
    "start_time",
    "stop_time",
    "build_time_millis",
    "parallel",
    "platform",
)


def build_shallow(view: BuildView, links: Links) -> dict[str, Any]:
    full = build_summary(view, links)
    data = {k: full[k] for k in SHALLOW_KEYS}
    data["fleet"] = "picard"
    return data


def log_chunk_json(chunk: LogChunk) -> dict[str, Any]:
    return {
        "type": chunk.type,
        "time": iso(chunk.time),
        "message": chunk.data.decode("utf-8", errors="replace"),
    }


def iter_log_json(chunks: Iterable[LogChunk]) -> Iterable[bytes]:
    """The log array `[{"type","time","message"}, ...]`, produced chunk by chunk (never whole)."""
    import json

    yield b"["
    first = True
    for chunk in chunks:
        if not first:
            yield b","
        first = False
        yield json.dumps(log_chunk_json(chunk)).encode()
    yield b"]"


def branch_key(branch: str) -> str:
    """Branch names as keys of /projects: percent-encoded, dots included."""
    return quote(branch, safe="").replace(".", "%2E")


# ---------------------------------------------------------------- users, projects, settings (9.1-9.8)


def me_json(user: User, followed: list[Project]) -> dict[str, Any]:
    """GET /me (api-v1.1.md 9.1)."""
    return {
        "login": user.login,
        "name": user.name,
        "selected_email": user.email,
        "all_emails": [user.email] if user.email else [],
        "avatar_url": None,
        "admin": user.admin,
        "basic_email_prefs": "smart",
        "created_at": iso(user.created_at),
        "github_id": None,
        "bitbucket": None,
        "identities": {
            "github": {
                "login": user.login,
                "name": user.name,
                "avatar_url": None,
                "id": user.id,
                "external_id": user.id,
                "type": "github",
                "domain": "github.com",
            }
        },
        "projects": {p.vcs_url: {"on_dashboard": True, "emails": "default"} for p in followed},
        "containers": 1,
        "parallelism": 1,
        "plan": None,
        "enrolled_betas": [],
        "in_beta_program": False,
        "num_projects_followed": len(followed),
    }


def brief_json(brief: BuildBrief) -> dict[str, Any]:
    """The `mini` build of a /projects branch."""
    b = brief.build
    return {
        "build_num": b.build_num,
        "status": brief.status,
        "outcome": b.outcome.value if b.outcome else None,
        "vcs_revision": b.vcs_revision,
        "pushed_at": iso(b.usage_queued_at),
        "added_at": iso(b.usage_queued_at),
        "is_workflow_job": b.extra.get("workflows") is not None,
        "is_2_0_job": True,
    }


def branch_json(branch: BranchOverview) -> dict[str, Any]:
    data: dict[str, Any] = {
        "pusher_logins": list(branch.pusher_logins),
        "running_builds": [brief_json(b) for b in branch.running],
        "recent_builds": [brief_json(b) for b in branch.recent],
        "is_using_workflows": any(b.build.extra.get("workflows") is not None for b in branch.recent),
        "latest_workflows": {
            branch_key(w.name): {"status": w.status.value, "created_at": iso(w.created_at), "id": w.id}
            for w in branch.latest_workflows
        },
    }
    if branch.last_success is not None:
        data["last_success"] = brief_json(branch.last_success)
    if branch.last_non_success is not None:
        data["last_non_success"] = brief_json(branch.last_non_success)
    return data


def project_json(view: ProjectOverview) -> dict[str, Any]:
    """An entry of GET /projects, also the body of GET/PUT P/settings (api-v1.1.md 9.2)."""
    p = view.project
    return {
        "vcs_url": p.vcs_url,
        "username": p.username,
        "reponame": p.reponame,
        "vcs_type": p.vcs_type.value,
        "default_branch": p.default_branch,
        "oss": p.oss,
        "parallel": 1,
        "followed": view.following,
        "following": view.following,
        "has_usable_key": view.has_usable_key,
        "scopes": [scope.value for scope in view.scopes],
        "feature_flags": {"oss": p.oss},
        "ssh_keys": [
            {"hostname": k.hostname, "public_key": k.public_key, "fingerprint": k.fingerprint}
            for k in view.ssh_keys
        ],
        "aws": {"keypair": None},
        "branches": {branch_key(b.name): branch_json(b) for b in view.branches},
    }


def env_var_json(var: EnvVar) -> dict[str, Any]:
    """A project environment variable, its value masked (api-v1.1.md 9.6)."""
    return {"name": var.name, "value": mask(var.value)}


def checkout_key_json(key: CheckoutKey, digest: str = "md5") -> dict[str, Any]:
    """A checkout key with its md5 (colon-hex) or sha256 (base64) fingerprint (api-v1.1.md 9.7)."""
    return {
        "public_key": key.public_key,
        "type": key.type,
        "fingerprint": key.fingerprint_sha256 if digest == "sha256" else key.fingerprint_md5,
        "login": key.login,
        "preferred": key.preferred,
        "time": iso(key.created_at),
    }


def repo_json(project: Project, *, following: bool, has_followers: bool, admin: bool) -> dict[str, Any]:
    """An entry of GET /user/repos/:vcs-type."""
    return {
        "name": project.reponame,
        "username": project.username,
        "vcs_type": project.vcs_type.value,
        "vcs_url": project.vcs_url,
        "following": following,
        "has_followers": has_followers,
        "admin": admin,
        "fork": False,
        "language": None,
        "owner": {"login": project.username, "avatar_url": None, "type": "User"},
    }
