"""Push webhooks: `POST /api/v1.1/hooks/push` takes a forge's push event and builds the push.

GitHub, Gitea/Forgejo, Gogs and GitLab payloads are understood (core/push.py). The projects
built are those whose repository URL the payload names (else whose `user/repo` is the payload's
`full_name`); `?project=gh/acme/widget` narrows that to one. A project with a push secret (its
variable CIRCLET_PUSH_SECRET, else the server's CIRCLET_PUSH_SECRET) takes only deliveries
signed with it. No Circle-Token is needed: a delivery can only make circlet build what the
project's own repository holds. docs/push-triggers.md is the user's view.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from circlet.core.errors import InvalidRequest, NotFound, PermissionDenied
from circlet.core.model import Build, Project
from circlet.core.push import (
    PING_EVENTS,
    PUSH_EVENTS,
    describe,
    event_kind,
    find_projects,
    parse_push,
    verify,
)
from circlet.http.deps import services
from circlet.http.responses import json_response
from circlet.http.schemas import answers
from circlet.wire import Links

router = APIRouter()

MAX_BODY = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB


async def _body(request: Request) -> bytes:
    """The request's body, read no further than MAX_BODY (a larger one is refused, not buffered)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise InvalidRequest("The push payload is larger than 25 MB")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > MAX_BODY:
            raise InvalidRequest("The push payload is larger than 25 MB")
    return bytes(body)


def _payload(body: bytes, content_type: str) -> Any:
    text = body.decode("utf-8", errors="replace")
    if "x-www-form-urlencoded" in content_type:  # GitHub's "form" content type
        text = dict(parse_qsl(text)).get("payload", "")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidRequest("The push payload is not valid JSON") from None


def _summary(project: Project, build: Build | None, links: Links) -> dict[str, Any]:
    """One project's result: the first build made (None when the push matched no job)."""
    return {
        "project": project.slug,
        "build_num": build.build_num if build is not None else None,
        "url": links.api_build(project, build.build_num) if build is not None else None,
        "lifecycle": build.lifecycle.value if build is not None else None,
        "dont_build": build.dont_build if build is not None else None,
    }


@router.post(
    "/hooks/push",
    summary="Build a push (forge webhook)",
    responses=answers(200, None, "The push was handled (or the event ignored).", 400, 403, 404),
)
async def push_hook(request: Request) -> Response:
    """A forge's push delivery -> builds, as a push builds (config.md 6: `[ci skip]` honoured)."""
    kind = event_kind({k.lower(): v for k, v in request.headers.items()})
    if kind in PING_EVENTS:
        return json_response(request, {"message": "pong"})
    if kind not in PUSH_EVENTS:
        return json_response(request, {"message": f"circlet builds push events; {kind!r} ignored"}, 202)
    body = await _body(request)
    event = parse_push(_payload(body, request.headers.get("content-type", "")))
    svc = services(request)
    pushes = svc.pushes
    if pushes is None:
        raise NotFound("Push webhooks are not served here")
    projects = find_projects(await run_in_threadpool(svc.circlet.list_projects), event)
    wanted = request.query_params.get("project")
    if wanted:
        projects = [p for p in projects if p.slug == wanted]
    if not projects:
        also = f" as {wanted}" if wanted else ""
        raise NotFound(f"No circlet project builds {describe(event)}{also}")
    headers = {k.lower(): v for k, v in request.headers.items()}
    for project in projects:
        secret = await run_in_threadpool(pushes.secret_for, project)
        problem = verify(secret, body, headers) if secret else None
        if problem:
            raise PermissionDenied(f"{project.slug}: {problem}")
    if event.deleted:
        return json_response(request, {"message": f"{event.ref} was deleted: nothing to build", "builds": []})
    results = []
    for project in projects:
        build = await run_in_threadpool(pushes.push, project, event)
        results.append(_summary(project, build, svc.links))
    made = sum(1 for r in results if r["build_num"] is not None)
    message = f"{made} build(s) created for {event.ref} at {event.after[:12]}"
    return json_response(request, {"message": message, "builds": results}, 201 if made else 200)
