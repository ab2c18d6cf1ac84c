"""Everything the build page shows, gathered from the service in one place.

- `Circlet.workflow_graph(build)`: the workflow of a workflow job's build, laid out by
  graphview.py and shown by templates/_workflow.html (workflowpages.py serves its refreshes and
  its Approve / Cancel workflow forms);
- `Circlet.blobs` (the blob store, looked up defensively: a server may keep none): the
  build's artifacts, listed as the API lists them, each with its signed download URL.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from circlet.core.blobkeys import artifacts_prefix, parse_artifact_key
from circlet.core.model import Build, BuildView, Project
from circlet.http.artifacts import artifact_url
from circlet.http.deps import services
from circlet.http.web import logview
from circlet.http.web.common import rights
from circlet.http.web.graphview import WorkflowView, workflow_view
from circlet.http.web.session import Session
from circlet.http.web.views import (
    UNFINISHED,
    StepView,
    duration,
    elapsed,
    iso,
    label,
    since,
    step_views,
    test_cases,
    tone,
    web_path,
    why_word,
    workflow_link,
)
from circlet.service import Circlet


@dataclass(frozen=True, kw_only=True)
class ArtifactLink:
    path: str
    url: str
    node_index: int


def workflow_of(circlet: Circlet, project: Project, build: Build) -> WorkflowView | None:
    """The build's workflow laid out for the page, or None (no workflow, or no engine)."""
    graph = circlet.workflow_graph(build)
    if graph is None:
        return None
    return workflow_view(graph, project, circlet.clock(), current_build=build.build_num)


def artifacts(request: Request, project: Project, build: Build) -> list[ArtifactLink] | None:
    """The build's artifacts with signed download links; None when this server keeps none."""
    svc = services(request)
    blobs = getattr(svc.circlet, "blobs", None)
    if blobs is None or build.id is None:
        return None
    found = sorted(
        p for p in (parse_artifact_key(i.key) for i in blobs.list(artifacts_prefix(build.id))) if p
    )
    base, secret = svc.links.base_url, svc.links.secret
    return [
        ArtifactLink(
            path=path,
            url=artifact_url(base, secret, project, build.build_num, node, path),
            node_index=node,
        )
        for node, path in found
    ]


def header(view: BuildView, circlet: Circlet) -> dict[str, Any]:
    build, project = view.build, view.project
    now = circlet.clock()
    commit = build.commit
    return {
        "status": view.status,
        "tone": tone(view.status),
        "label": label(view.status),
        "unfinished": view.status in UNFINISHED,
        "branch": build.branch or "",
        "tag": build.vcs_tag or "",
        "revision": build.vcs_revision or "",
        "short_sha": (build.vcs_revision or "")[:7],
        "subject": commit.subject if commit else "",
        "body": commit.body if commit else "",
        "author": f"{commit.author_name} <{commit.author_email}>" if commit else "",
        "why": why_word(build.why.value),
        "why_code": build.why.value,
        "workflow": workflow_link(project, build),
        "user": view.user.login if view.user else "",
        "canceler": view.canceler.login if view.canceler else "",
        "job": build.job_name or "build",
        "queued": iso(build.usage_queued_at),
        "started": iso(build.start_time),
        "stopped": iso(build.stop_time),
        "started_ago": since(build.start_time, now),
        "duration": duration(elapsed(build, now)),
        "retry_of": web_path(project, build.retry_of) if build.retry_of else "",
        "retry_of_num": build.retry_of,
        "retries": [(n, web_path(project, n)) for n in view.retries],
        "previous": (
            view.previous.build_num,
            web_path(project, view.previous.build_num),
            view.previous_status or "",
        )
        if view.previous
        else None,
        "messages": [(m.type, m.message, m.reason or "") for m in build.messages],
        "parallel": build.parallel,
        "ssh_users": build.ssh_users,
        "dont_build": build.dont_build or "",
    }


def _signature(view: BuildView, steps: list[StepView]) -> str:
    text = "|".join(
        [view.status, str(view.build.stop_time)] + [f"{a.key}:{a.status}" for s in steps for a in s.actions]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def signature(request: Request, project: Project, build: Build) -> str:
    """What gather() would put in `sig`, for less: a poll that changes nothing stops here."""
    circlet = services(request).circlet
    view = circlet.view(project, build)
    steps = step_views(
        view.actions, circlet.clock(), ended=None if view.status in UNFINISHED else view.status
    )
    return _signature(view, steps)


def gather(request: Request, session: Session, project: Project, build: Build) -> dict[str, Any]:
    """The build page's context."""
    circlet = services(request).circlet
    view = circlet.view(project, build)
    now = circlet.clock()
    head = header(view, circlet)
    steps = step_views(view.actions, now, ended=None if head["unfinished"] else view.status)
    tails: dict[str, logview.LogWindow] = {}
    for step in steps:
        if step.open:  # only the container shown first: the page fetches others when asked
            action = next(a for a in step.actions if a.key == step.selected)
            tails[action.key] = logview.tail(circlet, build, action.step, action.index)
    tests, problems = circlet.tests_of(build)
    workflow = workflow_of(circlet, project, build)
    allowed = rights(request, session, project)
    base = web_path(project, build.build_num)
    return {
        "project": project,
        "project_url": web_path(project),
        "build": build,
        "base": base,
        "head": head,
        "steps": steps,
        "tails": tails,
        "tests": test_cases(tests),
        "test_problems": problems,
        "failed_tests": sum(1 for t in test_cases(tests) if t.tone == "bad"),
        "workflow": workflow,
        "artifacts": artifacts(request, project, build),
        "rights": allowed,
        "can_cancel": allowed.trigger and head["unfinished"],
        "can_act": allowed.trigger,
        "back": base,
        "sig": _signature(view, steps),
        "containers": max([build.parallel, *[len(s.actions) for s in steps]]),
    }
