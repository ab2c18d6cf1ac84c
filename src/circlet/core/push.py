"""Push events of forges (GitHub, Gitea/Forgejo, Gogs, GitLab) -> what circlet builds.

Pure: takes the parsed JSON payload, the raw body and the headers' values; returns a PushEvent
or raises InvalidRequest with a message the sender's delivery log will show. The HTTP router
(http/hooks.py) reads the request; poller.py triggers the builds (docs/push-triggers.md).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from circlet.core.errors import InvalidRequest
from circlet.core.model import Project

ZERO_SHA = "0" * 40
# The project environment variable holding a project's push secret (never exported to builds).
SECRET_VAR = "CIRCLET_PUSH_SECRET"
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# Payload keys that may hold the repository's URL (GitHub/Gitea `repository`, GitLab `project`).
_URL_KEYS = ("clone_url", "ssh_url", "git_url", "html_url", "url", "git_http_url", "git_ssh_url", "web_url")
# Headers naming the event, per forge; an absent header means a push (curl, scripts).
EVENT_HEADERS = ("x-github-event", "x-gitea-event", "x-gogs-event", "x-gitlab-event")
PUSH_EVENTS = frozenset({"push", "Push Hook", "Tag Push Hook"})
PING_EVENTS = frozenset({"ping"})


@dataclass(frozen=True, kw_only=True)
class PushEvent:
    """One push: which ref moved to which commit, in which repository."""

    ref: str  # refs/heads/main or refs/tags/v1
    after: str  # the new head; ZERO_SHA when the ref was deleted
    full_name: str | None  # owner/repo as the forge names it
    urls: tuple[str, ...]  # the repository's URLs as the payload gives them

    @property
    def deleted(self) -> bool:
        return self.after == ZERO_SHA

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") else None

    @property
    def tag(self) -> str | None:
        return self.ref.removeprefix("refs/tags/") if self.ref.startswith("refs/tags/") else None


def parse_push(payload: object) -> PushEvent:
    """A PushEvent from a push payload (InvalidRequest saying what is missing or wrong)."""
    if not isinstance(payload, dict):
        raise InvalidRequest("The push payload must be a JSON object")
    ref, after = payload.get("ref"), payload.get("after")
    if not isinstance(ref, str) or not ref.startswith(("refs/heads/", "refs/tags/")) or ref.endswith("/"):
        raise InvalidRequest("The push payload needs `ref`: refs/heads/<branch> or refs/tags/<tag>")
    if payload.get("deleted") is True:
        after = ZERO_SHA
    if not isinstance(after, str) or not _SHA.fullmatch(after.lower()):
        raise InvalidRequest("The push payload needs `after`: the full SHA the ref now points at")
    repo = payload.get("repository")
    project = payload.get("project")  # GitLab
    full_name = None
    urls: list[str] = []
    for source in (repo, project):
        if not isinstance(source, dict):
            continue
        name = source.get("full_name") or source.get("path_with_namespace")
        if isinstance(name, str) and full_name is None:
            full_name = name
        urls.extend(v for k in _URL_KEYS if isinstance(v := source.get(k), str) and v)
    if full_name is None and not urls:
        raise InvalidRequest("The push payload needs `repository` with `full_name` or `clone_url`")
    return PushEvent(ref=ref, after=after.lower(), full_name=full_name, urls=tuple(dict.fromkeys(urls)))


def event_kind(headers: Mapping[str, str]) -> str:
    """The event a delivery carries ("push" when no forge header names one)."""
    for name in EVENT_HEADERS:
        value = headers.get(name)
        if value:
            return value.strip()
    return "push"


def sign(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value of a body: `sha256=<hex HMAC-SHA256>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, headers: Mapping[str, str]) -> str | None:
    """None when the delivery proves it knows `secret`, else why not. Accepted proofs:
    `X-Hub-Signature-256: sha256=<hex>` (GitHub, Gitea, Forgejo), `X-Gitea-Signature` /
    `X-Gogs-Signature: <hex>`, `X-Gitlab-Token: <secret>`. Comparisons take constant time."""
    expected = sign(secret, body)
    hub = headers.get("x-hub-signature-256")
    if hub is not None:
        ok = hmac.compare_digest(hub.strip().lower().encode(), expected.encode())
        return (
            None
            if ok
            else "X-Hub-Signature-256 does not match the body signed with the project's push secret"
        )
    for name in ("x-gitea-signature", "x-gogs-signature"):
        value = headers.get(name)
        if value is not None:
            ok = hmac.compare_digest(value.strip().lower().encode(), expected[len("sha256=") :].encode())
            return (
                None
                if ok
                else f"{name.title()} does not match the body signed with the project's push secret"
            )
    token = headers.get("x-gitlab-token")
    if token is not None:
        return (
            None
            if hmac.compare_digest(token.encode(), secret.encode())
            else "X-Gitlab-Token is not the push secret"
        )
    return "This project has a push secret: the delivery must be signed (X-Hub-Signature-256)"


def url_key(url: str) -> str:
    """A repository URL reduced to compare equal across forms: host + path, lower case, without
    credentials, port, scheme, `.git` or trailing slashes (`git@host:o/r.git` = `https://host/o/r`)."""
    text = url.strip()
    scp = re.fullmatch(r"(?:[^@/]+@)?([^:/]+):(?!//)(.+)", text)
    if scp and "://" not in text and not text.startswith("/"):
        host, path = scp.group(1), scp.group(2)
    elif "://" in text:
        parts = urlsplit(text)
        host, path = parts.hostname or "", parts.path
    else:  # a local path
        host, path = "", text
    path = path.rstrip("/").removesuffix(".git").rstrip("/")
    return f"{host.lower()}/{path.strip('/').lower()}"


def find_projects(projects: Iterable[Project], event: PushEvent) -> list[Project]:
    """The projects a push is for: those whose repo_url is one of the payload's URLs; when none
    is, those named `<username>/<reponame>` like the payload's full_name (case-insensitive)."""
    every = list(projects)
    keys = {url_key(u) for u in event.urls}
    by_url = [p for p in every if url_key(p.repo_url) in keys]
    if by_url or not event.full_name:
        return by_url
    name = event.full_name.lower()
    return [p for p in every if f"{p.username}/{p.reponame}".lower() == name]


def describe(event: PushEvent) -> str:
    """The repository as the payload names it, for messages."""
    return event.full_name or (event.urls[0] if event.urls else "?")
