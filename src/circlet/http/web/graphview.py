"""The workflow graph as the page draws it: jobs as boxes in columns by dependency depth.

Pure (no I/O): `workflow_view` turns a `WorkflowGraph` (core/workflow.py) into plain values
for templates/_workflow.html, shown on the workflow page and on the build pages of its jobs.
A job's depth is 0 when it requires nothing, else one more than the deepest job it requires;
column N holds the jobs of depth N in the config's order, so every arrow points right.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from circlet.core.model import Project
from circlet.core.workflow import ACTIVE, JobState, JobType, WorkflowGraph
from circlet.http.web.views import duration, iso, label, since, tone, web_path, workflow_path

# Job states that will still change: the page keeps refreshing the graph while one is shown.
_MOVING = frozenset({JobState.BLOCKED, JobState.ON_HOLD, JobState.RUNNING})


@dataclass(frozen=True, kw_only=True)
class GraphJob:
    """One job box."""

    name: str
    type: str  # "build" or "approval"
    status: str
    tone: str
    label: str
    requires: tuple[str, ...]
    depth: int
    build_num: int | None
    url: str | None  # its build page; None for approvals and jobs never run
    current: bool  # the build page showing the graph is this job's
    approvable: bool  # an approval job on hold


@dataclass(frozen=True, kw_only=True)
class WorkflowView:
    """A workflow with its jobs laid out in columns (`columns[depth]`)."""

    id: str
    name: str
    status: str
    tone: str
    url: str  # the workflow page
    active: bool  # not finished: something runs, waits or is on hold
    on_hold: bool  # an approval job waits
    pipeline_number: int
    created: str  # ISO 8601, empty when unknown
    created_ago: str  # `5 min ago`
    took: str  # so far, while active
    jobs: tuple[GraphJob, ...]
    columns: tuple[tuple[GraphJob, ...], ...]
    sig: str  # changes whenever what the graph shows changes


def depths(requires: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """Each job's dependency depth. Requirements naming no job of the workflow are ignored; a
    cycle (the config check refuses them, but a page must not hang) counts as depth 0."""
    found: dict[str, int] = {}

    def depth(name: str, path: frozenset[str]) -> int:
        if name in found:
            return found[name]
        above = [r for r in requires.get(name, ()) if r in requires and r not in path]
        value = 1 + max(depth(r, path | {r}) for r in above) if above else 0
        found[name] = value
        return value

    for name in requires:
        depth(name, frozenset({name}))
    return found


def workflow_view(
    graph: WorkflowGraph, project: Project, now: datetime, *, current_build: int | None = None
) -> WorkflowView:
    """The view of `graph`; `current_build` marks the job whose build page shows it."""
    levels = depths({j.name: j.requires for j in graph.jobs})
    jobs = tuple(
        GraphJob(
            name=j.name,
            type=j.type.value,
            status=j.state.value,
            tone=tone(j.state.value),
            label=label(j.state.value),
            requires=j.requires,
            depth=levels.get(j.name, 0),
            build_num=j.build_num,
            url=web_path(project, j.build_num) if j.build_num is not None else None,
            current=current_build is not None and j.build_num == current_build,
            approvable=j.type is JobType.APPROVAL and j.state is JobState.ON_HOLD,
        )
        for j in graph.jobs
    )
    width = max((j.depth for j in jobs), default=-1) + 1
    columns = tuple(tuple(j for j in jobs if j.depth == n) for n in range(width))
    moving = graph.status in ACTIVE or any(j.state in _MOVING for j in graph.jobs)
    end = graph.stopped_at or now
    took = (
        duration(max(0, int((end - graph.created_at).total_seconds() * 1000)))
        if graph.created_at is not None
        else ""
    )
    text = "|".join([graph.status.value] + [f"{j.name}:{j.status}:{j.build_num}" for j in jobs])
    return WorkflowView(
        id=graph.workflow_id,
        name=graph.name,
        status=graph.status.value,
        tone=tone(graph.status.value),
        url=workflow_path(project, graph.workflow_id),
        active=moving,
        on_hold=any(j.approvable for j in jobs),
        pipeline_number=graph.pipeline_number,
        created=iso(graph.created_at),
        created_ago=since(graph.created_at, now),
        took=took,
        jobs=jobs,
        columns=columns,
        sig=hashlib.sha256(text.encode()).hexdigest()[:16],
    )
