"""Workflows of a 2.0-shaped config: which jobs run, in what order, and how a workflow stands.

Pure (spec config.md 5.1-5.4, 5.8, 11). `parse_workflows` turns the `workflows` of a config
(2.0 as written, or 2.1 after `compile_config`, which already evaluated `when`/`unless`, expanded
matrices and turned matrix aliases in string `requires` into every expansion) into
`WorkflowSpec`s (core/workflow_config.py), collecting every problem in one ConfigError with
the path of the bad key.
`select_jobs` applies the filters of one trigger; `next_moves` says which jobs start and which
will never run given the jobs' states; `workflow_status` sums a workflow up.

DECISIONS:
- A job whose requirements were all filtered out is dropped from the run (not recorded), and so,
  in turn, are the jobs that required only it (5.4, trap 5).
- A job that can no longer run (a requirement ended in a state its condition does not accept)
  is `not_run`; this cascades.
- `name:` on a workflow job needs version 2.1 (compilation resolves it); a 2.0 config gets an error.
- Requires written as maps (`{build: failed}`) must name jobs as they are after compilation: a
  matrix alias there is not expanded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from circlet.core.cron import CronExpr
from circlet.core.model import Outcome


class JobType(StrEnum):
    """What a workflow job is."""

    BUILD = "build"  # runs a job of the config as a build
    APPROVAL = "approval"  # runs nothing; holds its dependants until someone approves it


class JobState(StrEnum):
    """Where a workflow job stands."""

    BLOCKED = "blocked"  # waiting for the jobs it requires
    ON_HOLD = "on_hold"  # an approval job that may now be approved
    RUNNING = "running"  # its build exists and has not finished (or is being created)
    SUCCESS = "success"  # its build succeeded, or it was approved
    FAILED = "failed"  # its build failed, timed out, or could not run
    CANCELED = "canceled"  # its build (or its approval) was canceled
    NOT_RUN = "not_run"  # a requirement ended in a way its condition does not accept


TERMINAL: frozenset[JobState] = frozenset(
    {JobState.SUCCESS, JobState.FAILED, JobState.CANCELED, JobState.NOT_RUN}
)


class WorkflowStatus(StrEnum):
    """How a workflow stands, derived from its jobs (config.md 11)."""

    RUNNING = "running"  # jobs still run or wait, none failed
    FAILING = "failing"  # a job failed while others still run or wait
    FAILED = "failed"  # everything ended and a job failed
    SUCCESS = "success"  # everything ended and no job failed or was canceled
    ON_HOLD = "on_hold"  # nothing runs; an approval job waits
    CANCELED = "canceled"  # everything ended, a job was canceled, none failed
    NOT_RUN = "not_run"  # nothing of it ran
    ERROR = "error"  # it could not be run at all (recorded by the engine, never derived)


ACTIVE: frozenset[WorkflowStatus] = frozenset(
    {WorkflowStatus.RUNNING, WorkflowStatus.FAILING, WorkflowStatus.ON_HOLD}
)

CONDITIONS: dict[str, frozenset[JobState]] = {
    "success": frozenset({JobState.SUCCESS}),
    "failed": frozenset({JobState.FAILED}),
    "canceled": frozenset({JobState.CANCELED}),
    "not_run": frozenset({JobState.NOT_RUN}),
    "terminal": TERMINAL,
}
_FAILED_OUTCOMES = frozenset(
    {Outcome.FAILED, Outcome.TIMEDOUT, Outcome.INFRASTRUCTURE_FAIL, Outcome.NO_TESTS}
)


@dataclass(frozen=True, kw_only=True)
class Requirement:
    """One entry of `requires`: the job, and the end states it must reach for ours to start."""

    job: str
    statuses: frozenset[JobState] = frozenset({JobState.SUCCESS})

    def to_data(self) -> dict[str, Any]:
        return {"job": self.job, "statuses": sorted(s.value for s in self.statuses)}

    @staticmethod
    def from_data(data: Mapping[str, Any]) -> Requirement:
        return Requirement(job=str(data["job"]), statuses=frozenset(JobState(s) for s in data["statuses"]))


@dataclass(frozen=True, kw_only=True)
class Patterns:
    """`only` / `ignore` of one filter: exact names, or `/regex/` matched against the whole name."""

    only: tuple[str, ...] | None = None
    ignore: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class Filters:
    """A workflow job's `filters`."""

    branches: Patterns | None = None
    tags: Patterns | None = None


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """One job of a workflow as the config says it."""

    name: str  # also the config job it runs (2.1 compilation made names unique)
    type: JobType = JobType.BUILD
    requires: tuple[Requirement, ...] = ()
    contexts: tuple[str, ...] = ()
    filters: Filters | None = None


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """One `triggers: [{schedule: {cron, filters}}]` entry of a workflow (config.md 5.6)."""

    cron: CronExpr
    branches: Patterns  # which branches it runs on (`only` beats `ignore`, as in 5.3)

    def runs_on(self, branch: str) -> bool:
        return runs_for(Filters(branches=self.branches), branch=branch, tag=None)


@dataclass(frozen=True, kw_only=True)
class WorkflowSpec:
    """One workflow of a config."""

    name: str
    jobs: tuple[JobSpec, ...]
    scheduled: bool = False  # has `triggers`: never runs on a push or an API trigger (5.2, 5.6)
    schedules: tuple[Schedule, ...] = ()  # its `triggers` (scheduler.py runs them)


@dataclass(frozen=True, kw_only=True)
class GraphJob:
    """A job of a workflow as the web page draws it."""

    name: str
    type: JobType
    requires: tuple[str, ...]
    state: JobState
    build_num: int | None  # None for approvals and jobs that never got a build
    job_id: str = ""


@dataclass(frozen=True, kw_only=True)
class WorkflowGraph:
    """A workflow and its jobs, in the config's order (Circlet.workflow_graph)."""

    workflow_id: str
    name: str
    status: WorkflowStatus
    jobs: tuple[GraphJob, ...]
    pipeline_id: str = ""
    pipeline_number: int = 0
    created_at: datetime | None = None
    stopped_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class WorkflowBrief:
    """The newest run of a workflow on a branch (/projects `latest_workflows`)."""

    name: str
    status: WorkflowStatus
    created_at: datetime | None
    id: str


@dataclass(frozen=True, kw_only=True)
class Moves:
    """What `next_moves` decided: jobs to start now, jobs that will never run."""

    start: tuple[str, ...] = ()
    not_run: tuple[str, ...] = ()


# ---------------------------------------------------------------- decisions


def is_regex(pattern: str) -> bool:
    """A filter pattern written `/.../`."""
    return len(pattern) >= 2 and pattern.startswith("/") and pattern.endswith("/")


def matches(pattern: str, name: str) -> bool:
    """`/re/` must match the whole name; anything else must equal it."""
    if is_regex(pattern):
        return re.fullmatch(pattern[1:-1], name) is not None
    return pattern == name


def branch_rule_lists(raw: object, at: str, add: Callable[[str, str], None]) -> dict[str, list[str]]:
    """A `branches: {only, ignore}` rule (2.0 job-level, circle.yml `general.branches`) as
    {"only"|"ignore": patterns}; each valid key is present, possibly empty. Problems go to
    `add(message, key path)`; `at` is the rule's path."""
    lists: dict[str, list[str]] = {}
    if not isinstance(raw, dict) or not raw:
        add("`branches` must be a mapping with `only` and/or `ignore`", at)
        return lists
    for key, value in raw.items():
        if key not in ("only", "ignore"):
            add(f"unknown `branches` key {key!r}: use `only` or `ignore`", f"{at}.{key}")
            continue
        lists[key] = []
        items = value if isinstance(value, list) else [value]
        for k, item in enumerate(items):
            where = f"{at}.{key}[{k}]" if isinstance(value, list) else f"{at}.{key}"
            if not isinstance(item, str) or not item:
                add("a branch pattern must be a name or a /regular expression/", where)
                continue
            if is_regex(item):
                try:
                    re.compile(item[1:-1])
                except re.error as exc:
                    add(f"invalid regular expression {item}: {exc}", where)
                    continue
            lists[key].append(item)
    return lists


def branch_rule_verdict(lists: Mapping[str, list[str]], branch: str) -> str | None:
    """None when a `branches` rule lets `branch` build, else the build's `dont_build`:
    `branch-blacklisted` (an `ignore` pattern matches) or `branch-not-whitelisted` (no `only`
    pattern does). With `ignore` given only `ignore` counts (config.md trap 3)."""
    if "ignore" in lists:
        return "branch-blacklisted" if any(matches(p, branch) for p in lists["ignore"]) else None
    if any(matches(p, branch) for p in lists.get("only", ())):
        return None
    return "branch-not-whitelisted"


def runs_for(filters: Filters | None, *, branch: str | None, tag: str | None) -> bool:
    """Whether a job with these filters runs for a branch build or a tag build (config.md 5.3)."""
    if tag is not None:
        patterns = filters.tags if filters else None
        if patterns is None:
            return False
        name = tag
    else:
        patterns = filters.branches if filters else None
        if patterns is None:
            return True
        name = branch or ""
    if patterns.only is not None:
        return any(matches(p, name) for p in patterns.only)
    if patterns.ignore is not None:
        return not any(matches(p, name) for p in patterns.ignore)
    return True


def select_jobs(workflow: WorkflowSpec, *, branch: str | None, tag: str | None) -> tuple[JobSpec, ...]:
    """The jobs of the workflow that take part in a run of this branch or tag, in order, with
    requirements on filtered-out jobs removed; a job all of whose requirements were filtered out
    is dropped too (5.4). () for a scheduled workflow."""
    if workflow.scheduled:
        return ()
    by_name = {j.name: j for j in workflow.jobs}
    kept: dict[str, JobSpec] = {}
    for name in _topological(workflow.jobs):
        job = by_name[name]
        if not runs_for(job.filters, branch=branch, tag=tag):
            continue
        requires = tuple(r for r in job.requires if r.job in kept)
        if job.requires and not requires:
            continue
        kept[name] = replace(job, requires=requires)
    return tuple(kept[j.name] for j in workflow.jobs if j.name in kept)


def _topological(jobs: Iterable[JobSpec]) -> list[str]:
    order: list[str] = []
    seen: set[str] = set()
    by_name = {j.name: j for j in jobs}

    def visit(name: str) -> None:
        if name in seen or name not in by_name:
            return
        seen.add(name)
        for req in by_name[name].requires:
            visit(req.job)
        order.append(name)

    for name in by_name:
        visit(name)
    return order


def state_of_outcome(outcome: Outcome | None) -> JobState:
    """The end state of a job whose build ended so (None: the build was not run)."""
    if outcome is None:
        return JobState.NOT_RUN
    if outcome is Outcome.SUCCESS:
        return JobState.SUCCESS
    if outcome is Outcome.CANCELED:
        return JobState.CANCELED
    assert outcome in _FAILED_OUTCOMES
    return JobState.FAILED


def next_moves(jobs: Iterable[JobSpec], states: Mapping[str, JobState]) -> Moves:
    """Which BLOCKED jobs start now (all requirements ended in an accepted state) and which can
    never run (a requirement ended in a state its condition does not accept; cascades)."""
    specs = list(jobs)
    current = dict(states)
    start: list[str] = []
    not_run: list[str] = []
    changed = True
    while changed:
        changed = False
        for job in specs:
            if current.get(job.name) is not JobState.BLOCKED or job.name in start:
                continue
            ended = [(r, current.get(r.job, JobState.NOT_RUN)) for r in job.requires]
            if any(state in TERMINAL and state not in r.statuses for r, state in ended):
                current[job.name] = JobState.NOT_RUN
                not_run.append(job.name)
                changed = True
            elif all(state in r.statuses for r, state in ended):
                start.append(job.name)
    return Moves(start=tuple(start), not_run=tuple(not_run))


def workflow_status(states: Iterable[JobState]) -> WorkflowStatus:
    """The status of a workflow whose jobs are in these states (config.md 11)."""
    seen = list(states)
    if not seen or all(s is JobState.NOT_RUN for s in seen):
        return WorkflowStatus.NOT_RUN
    failed = JobState.FAILED in seen
    if any(s not in TERMINAL for s in seen):
        if failed:
            return WorkflowStatus.FAILING
        if JobState.ON_HOLD in seen and JobState.RUNNING not in seen:
            return WorkflowStatus.ON_HOLD  # what waits, waits for an approval
        return WorkflowStatus.RUNNING
    if failed:
        return WorkflowStatus.FAILED
    if JobState.CANCELED in seen:
        return WorkflowStatus.CANCELED
    return WorkflowStatus.SUCCESS


def upstream_of(jobs: Iterable[JobSpec], name: str) -> tuple[str, ...]:
    """Every job `name` requires, directly or not, in an order where requirements come first."""
    by_name = {j.name: j for j in jobs}
    order: list[str] = []

    def visit(current: str) -> None:
        for req in by_name[current].requires if current in by_name else ():
            if req.job not in order:
                visit(req.job)
                if req.job not in order:
                    order.append(req.job)

    visit(name)
    return tuple(order)


def downstream_of(jobs: Iterable[JobSpec], name: str) -> tuple[str, ...]:
    """Every job that requires `name`, directly or not, in the config's order."""
    specs = list(jobs)
    below = {name}
    changed = True
    while changed:
        changed = False
        for job in specs:
            if job.name not in below and any(r.job in below for r in job.requires):
                below.add(job.name)
                changed = True
    return tuple(j.name for j in specs if j.name in below and j.name != name)


SKIP_MARKERS = ("[ci skip]", "[skip ci]")
SKIP_WINDOW = 250  # characters of the commit message searched (config.md 6)


def ci_skip(subject: str, body: str) -> bool:
    """Whether a head commit's message asks not to build: `[ci skip]` or `[skip ci]`, exactly
    (case-sensitive), within the first 250 characters of subject + body."""
    message = subject + ("\n\n" + body if body else "")
    return any(marker in message[:SKIP_WINDOW] for marker in SKIP_MARKERS)
