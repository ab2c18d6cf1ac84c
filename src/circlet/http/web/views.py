"""View models: what the templates show, computed from domain values (no I/O here).

Templates get plain values (strings, numbers, flags), never the service, so every page is
rendered from data gathered in one place by the routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from circlet.core.model import (
    Action,
    ActionStatus,
    Build,
    BuildView,
    Lifecycle,
    Outcome,
    Project,
    User,
    group_steps,
)

UNFINISHED = frozenset({"not_running", "queued", "scheduled", "running"})


class Tone(StrEnum):
    """The colour family of a status (the word is always shown beside the colour)."""

    OK = "ok"  # success, fixed
    BAD = "bad"  # failed, timedout, infrastructure_fail, no_tests
    RUN = "run"  # running
    WAIT = "wait"  # not_running, queued, scheduled
    HOLD = "hold"  # on_hold (an approval waits)
    OFF = "off"  # canceled, not_run, retried, anything else


_TONES: dict[str, Tone] = {
    "success": Tone.OK,
    "fixed": Tone.OK,
    "failed": Tone.BAD,
    "timedout": Tone.BAD,
    "infrastructure_fail": Tone.BAD,
    "no_tests": Tone.BAD,
    "running": Tone.RUN,
    "not_running": Tone.WAIT,
    "queued": Tone.WAIT,
    "scheduled": Tone.WAIT,
    "on_hold": Tone.HOLD,
    "blocked": Tone.WAIT,  # a workflow job waiting for its requirements
    "failing": Tone.BAD,  # a workflow with a failed job and others still running
    "error": Tone.BAD,  # a workflow that could not run; a test that errored
    "failure": Tone.BAD,  # a test that failed
}


def tone(status: str) -> str:
    return _TONES.get(status, Tone.OFF).value


def label(status: str) -> str:
    """The status word as people read it: `not_running` -> `not running`."""
    return status.replace("_", " ")


# The dashboard's status filter: word -> (lifecycles, outcomes) of a BuildQuery.
STATUS_FILTERS: dict[str, tuple[tuple[Lifecycle, ...] | None, tuple[Outcome, ...] | None]] = {
    "running": ((Lifecycle.RUNNING,), None),
    "queued": ((Lifecycle.NOT_RUNNING, Lifecycle.QUEUED, Lifecycle.SCHEDULED), None),
    "success": (None, (Outcome.SUCCESS,)),
    "failed": (None, (Outcome.FAILED,)),
    "timedout": (None, (Outcome.TIMEDOUT,)),
    "infrastructure_fail": (None, (Outcome.INFRASTRUCTURE_FAIL,)),
    "canceled": (None, (Outcome.CANCELED,)),
    "not_run": ((Lifecycle.NOT_RUN,), None),
    "no_tests": (None, (Outcome.NO_TESTS,)),
}


def duration(millis: int | None) -> str:
    """`850ms`, `12s`, `3m 05s`, `1h 02m`; empty when unknown."""
    if millis is None:
        return ""
    if millis < 1000:
        return f"{millis}ms"
    seconds = millis // 1000
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def since(moment: datetime | None, now: datetime) -> str:
    """`just now`, `5 min ago`, `3 h ago`, `2 days ago`, or the date."""
    if moment is None:
        return ""
    seconds = (now - moment).total_seconds()
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        return f"{round(seconds / 60)} min ago"
    if seconds < 86400:
        return f"{round(seconds / 3600)} h ago"
    if seconds < 7 * 86400:
        return f"{round(seconds / 86400)} days ago"
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def iso(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment else ""


def elapsed(build: Build, now: datetime) -> int | None:
    """The build's run time so far (finished: its build time)."""
    if build.build_time_millis is not None:
        return build.build_time_millis
    if build.start_time is not None and not build.finished:
        return max(0, int((now - build.start_time).total_seconds() * 1000))
    return None


def web_path(project: Project, build_num: int | None = None) -> str:
    base = f"/{project.slug}"
    return base if build_num is None else f"{base}/{build_num}"


def workflow_path(project: Project, workflow_id: str) -> str:
    """The workflow page: `/:vcs/:user/:project/workflows/:id` (never a build number)."""
    return f"{web_path(project)}/workflows/{workflow_id}"


# `why` as people read it (seed: why); anything else shows its code with spaces.
WHY_WORDS: dict[str, str] = {
    "github": "push",  # Why.PUSH / Why.GITHUB
    "bitbucket": "push",
    "api": "API trigger",
    "trigger": "manual trigger",  # the page's Trigger button
    "retry": "retry",
    "ssh": "retry with SSH",
    "auto-retry": "automatic retry",
    "edit": "settings change",
    "first-build": "first build",
    "local": "local build",
    "scheduled_pipeline": "schedule",
}


def why_word(why: str) -> str:
    """`scheduled_pipeline` -> `schedule`, `first-build` -> `first build`, `github` -> `push`."""
    return WHY_WORDS.get(why) or why.replace("_", " ").replace("-", " ")


@dataclass(frozen=True, kw_only=True)
class WorkflowLink:
    """The workflow a build's job ran in (from its v1.1 `workflows` object)."""

    name: str
    job: str
    url: str  # the workflow page


def workflow_link(project: Project, build: Build) -> WorkflowLink | None:
    """None for a build outside workflows (or whose `workflows` object is malformed)."""
    info = build.extra.get("workflows")
    if not isinstance(info, dict):
        return None
    workflow_id, name = info.get("workflow_id"), info.get("workflow_name")
    if not isinstance(workflow_id, str) or not workflow_id or not isinstance(name, str):
        return None
    job = info.get("job_name")
    return WorkflowLink(
        name=name,
        job=job if isinstance(job, str) else (build.job_name or ""),
        url=workflow_path(project, workflow_id),
    )


@dataclass(frozen=True, kw_only=True)
class BuildRow:
    """One line of a build list."""

    url: str
    project: str
    project_url: str
    build_num: int
    status: str
    tone: str
    label: str
    branch: str
    subject: str
    short_sha: str
    who: str
    why: str  # a human word (why_word)
    why_code: str  # the v1.1 value
    workflow: WorkflowLink | None
    when: str
    when_iso: str
    duration: str
    unfinished: bool


def build_row(view: BuildView, now: datetime) -> BuildRow:
    build, project = view.build, view.project
    return BuildRow(
        url=web_path(project, build.build_num),
        project=project.slug,
        project_url=web_path(project),
        build_num=build.build_num,
        status=view.status,
        tone=tone(view.status),
        label=label(view.status),
        branch=build.branch or (f"tag {build.vcs_tag}" if build.vcs_tag else ""),
        subject=build.commit.subject if build.commit else "",
        short_sha=(build.vcs_revision or "")[:7],
        who=_who(view.user, build),
        why=why_word(build.why.value),
        why_code=build.why.value,
        workflow=workflow_link(project, build),
        when=since(build.start_time or build.usage_queued_at, now),
        when_iso=iso(build.start_time or build.usage_queued_at),
        duration=duration(elapsed(build, now)),
        unfinished=view.status in UNFINISHED,
    )


def _who(user: User | None, build: Build) -> str:
    if user is not None:
        return user.login
    if build.commit is not None:
        return build.commit.author_name
    return ""


@dataclass(frozen=True, kw_only=True)
class ActionView:
    """One container's run of a step."""

    step: int
    index: int
    key: str  # "101-0": the action's id on the page
    status: str
    tone: str
    duration: str
    exit_code: int | None
    running: bool
    has_output: bool
    messages: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class StepView:
    """A step with its containers; `open` when a container failed or runs now."""

    number: int
    name: str
    status: str
    tone: str
    duration: str
    open: bool
    command: str
    actions: tuple[ActionView, ...]
    selected: str  # the key of the container shown first: the first that failed, else the first


_BAD_ACTIONS = frozenset(
    {ActionStatus.FAILED, ActionStatus.TIMEDOUT, ActionStatus.INFRASTRUCTURE_FAIL, ActionStatus.CANCELED}
)
# Worst first: the status a step shows for its containers.
_ACTION_ORDER = (
    ActionStatus.INFRASTRUCTURE_FAIL,
    ActionStatus.TIMEDOUT,
    ActionStatus.FAILED,
    ActionStatus.CANCELED,
    ActionStatus.RUNNING,
    ActionStatus.SUCCESS,
)


def action_view(action: Action, now: datetime, ended: str | None = None) -> ActionView:
    """`ended`: the status of a build that finished while this action still says running (its
    runner died or was stopped): shown instead of `running`."""
    millis = action.run_time_millis
    running = action.status is ActionStatus.RUNNING and ended is None
    if millis is None and action.start_time is not None and running:
        millis = max(0, int((now - action.start_time).total_seconds() * 1000))
    status = ended if action.status is ActionStatus.RUNNING and ended is not None else action.status.value
    return ActionView(
        step=action.step,
        index=action.index,
        key=f"{action.step}-{action.index}",
        status=status,
        tone=tone(status),
        duration=duration(millis),
        exit_code=action.exit_code,
        running=running,
        has_output=action.has_output,
        messages=action.messages,
    )


def step_views(actions: tuple[Action, ...], now: datetime, *, ended: str | None) -> list[StepView]:
    """The steps of a build; `ended` is the build's status once it finished (None before)."""
    views = []
    for step in group_steps(actions):
        shown = tuple(action_view(a, now, ended) for a in step.actions)
        statuses = {a.status for a in step.actions}
        worst = next(s for s in _ACTION_ORDER if s in statuses)
        status = ended if worst is ActionStatus.RUNNING and ended is not None else worst.value
        runs = [a.run_time_millis for a in step.actions if a.run_time_millis is not None]
        views.append(
            StepView(
                number=step.actions[0].step,
                name=step.name,
                status=status,
                tone=tone(status),
                duration=duration(max(runs)) if runs else "",
                open=bool(statuses & _BAD_ACTIONS) or any(a.running for a in shown) or tone(status) == "bad",
                command=step.actions[0].bash_command or "",
                actions=shown,
                selected=next((a.key for a in shown if a.tone == "bad"), shown[0].key),
            )
        )
    return views


@dataclass(frozen=True, kw_only=True)
class TestCase:
    """A test result line; failures sort first."""

    name: str
    classname: str
    file: str
    result: str
    tone: str
    message: str
    run_time: str


_FAILED_RESULTS = ("failure", "error", "failed")


def test_cases(found: list[dict[str, Any]]) -> list[TestCase]:
    cases = [
        TestCase(
            name=str(t.get("name") or ""),
            classname=str(t.get("classname") or ""),
            file=str(t.get("file") or ""),
            result=str(t.get("result") or ""),
            tone="bad"
            if t.get("result") in _FAILED_RESULTS
            else ("ok" if t.get("result") == "success" else "off"),
            message=str(t.get("message") or ""),
            run_time=_seconds(t.get("run_time")),
        )
        for t in found
    ]
    return sorted(cases, key=lambda c: 0 if c.tone == "bad" else 1)


def _seconds(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return duration(int(value * 1000))
    return ""
