"""Project settings as domain values: members, environment variables, keys, webhooks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from circlet.core.model import Build, Project, Scope
from circlet.core.workflow import WorkflowBrief


class Role(StrEnum):
    """What a member may do on a project (core/permissions.py maps roles to scopes)."""

    READ = "read"  # see builds, logs, tests, artifacts
    WRITE = "write"  # also trigger, retry, cancel; read settings
    ADMIN = "admin"  # everything, settings included


@dataclass(frozen=True, kw_only=True)
class EnvVar:
    """A project environment variable; the API only ever shows it masked."""

    name: str
    value: str
    created_at: datetime | None = None


def mask(value: str) -> str:
    """CircleCI's masking: `xxxx` + the last 4 characters (`xxxx` + the last one under 8)."""
    if not value:
        return "xxxx"
    return "xxxx" + (value[-4:] if len(value) >= 8 else value[-1:])


@dataclass(frozen=True, kw_only=True)
class CheckoutKey:
    """An SSH key circlet uses to check a project out (deploy-key or github-user-key)."""

    id: int | None = None
    project_id: int
    type: str
    public_key: str
    private_key: str
    fingerprint_md5: str  # colon-hex
    fingerprint_sha256: str  # base64, no padding
    login: str | None = None
    preferred: bool = True
    created_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class SshKey:
    """A private key added to a project for its builds (`POST .../ssh-key`)."""

    id: int | None = None
    project_id: int
    hostname: str  # "" = every host
    private_key: str
    fingerprint: str  # md5, colon-hex
    created_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class Webhook:
    """A URL to notify when a build of the project finishes."""

    id: int | None = None
    project_id: int
    url: str
    created_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class PublicSshKey:
    """What the API shows of a project's SSH key: never the private half."""

    hostname: str
    public_key: str
    fingerprint: str


@dataclass(frozen=True, kw_only=True)
class BuildBrief:
    """A build with its derived status (the `mini` builds of /projects)."""

    build: Build
    status: str


@dataclass(frozen=True, kw_only=True)
class BranchOverview:
    """One branch of a project as /projects shows it (api-v1.1.md 9.2)."""

    name: str
    recent: tuple[BuildBrief, ...] = ()  # up to 5, newest first
    running: tuple[BuildBrief, ...] = ()
    last_success: BuildBrief | None = None
    last_non_success: BuildBrief | None = None
    pusher_logins: tuple[str, ...] = ()
    latest_workflows: tuple[WorkflowBrief, ...] = ()  # newest run of each workflow on the branch


@dataclass(frozen=True, kw_only=True)
class ProjectOverview:
    """A project with what a user sees of it on /projects and /settings (gathered by the service)."""

    project: Project
    following: bool
    scopes: tuple[Scope, ...]
    has_usable_key: bool
    ssh_keys: tuple[PublicSshKey, ...] = ()
    branches: tuple[BranchOverview, ...] = ()


class DeliveryState(StrEnum):
    """Where one webhook delivery is."""

    PENDING = "pending"  # not sent yet, or to be retried at next_attempt_at
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # given up after the last retry


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """One build's notification to one URL, with what happened to it."""

    id: int | None = None
    build_id: int
    url: str
    source: str  # "config" (notify.webhooks) or "project" (settings)
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
