"""The `workflows` of a 2.0-shaped config -> `WorkflowSpec`s (spec config.md 5.1-5.4, 5.8).

Pure. 2.0 configs as written, 2.1 ones after `compile_config`. Every problem (a malformed entry,
an unknown job or requirement, a bad filter or regular expression, a bad `context` or `type`, a
cycle) is collected and raised in one ConfigError, each with the key path (and line) of the bad
key. Types and decisions live in core/workflow.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from circlet.core import cron
from circlet.core.config import Config
from circlet.core.errors import ConfigError, Problem
from circlet.core.workflow import (
    CONDITIONS,
    Filters,
    JobSpec,
    JobState,
    JobType,
    Patterns,
    Requirement,
    Schedule,
    WorkflowSpec,
    is_regex,
)

_Add = Callable[[str, str], None]  # records a problem: message, key path


def parse_workflows(config: Config) -> tuple[WorkflowSpec, ...]:
    """The workflows of a 2.0-shaped config in document order; () when it has none.

    Raises ConfigError listing every problem: a malformed entry, an unknown job or requirement,
    a bad filter or regular expression, a bad `context` or `type`, a cycle.
    """
    problems: list[Problem] = []

    def add(message: str, path: str) -> None:
        problems.append(Problem(message=message, path=path, line=config.line_of(path), file=config.filename))

    specs: list[WorkflowSpec] = []
    for raw_name, body in (config.workflows or {}).items():
        name = str(raw_name)
        if name == "version":
            continue
        at = f"workflows.{name}"
        if not isinstance(body, dict):
            add("a workflow must be a mapping with `jobs`", at)
            continue
        entries = body.get("jobs")
        if not isinstance(entries, list) or not entries:
            add("a workflow needs a non-empty list of `jobs`", f"{at}.jobs")
            continue
        jobs: list[JobSpec] = []
        paths: dict[str, str] = {}
        for index, entry in enumerate(entries):
            parsed = _entry(entry, f"{at}.jobs[{index}]", config, add)
            if parsed is None:
                continue
            job, path = parsed
            if job.name.casefold() in {j.name.casefold() for j in jobs}:
                add(f"workflow {name} lists job {job.name!r} twice", path)
                continue
            jobs.append(job)
            paths[job.name] = path
        known = {j.name for j in jobs}
        for job in jobs:
            for k, req in enumerate(job.requires):
                if req.job not in known:
                    add(
                        f"`requires` names {req.job!r}, which is not a job of workflow {name}",
                        f"{paths[job.name]}.requires[{k}]",
                    )
        cycle = _cycle(jobs)
        if cycle:
            add(
                f"the jobs of workflow {name} require each other in a cycle: {' -> '.join(cycle)}",
                f"{paths[cycle[0]]}.requires",
            )
        schedules = _triggers(body.get("triggers"), f"{at}.triggers", add) if "triggers" in body else ()
        specs.append(
            WorkflowSpec(name=name, jobs=tuple(jobs), scheduled="triggers" in body, schedules=schedules)
        )
    if problems:
        raise ConfigError(problems)
    return tuple(specs)


def parse_schedules(config: Config) -> dict[str, tuple[Schedule, ...]]:
    """The `triggers` of every workflow that has some, by workflow name (config.md 5.6); only
    the triggers are read, so a 2.1 config works before compilation (its workflow names stay).
    Raises ConfigError listing every bad trigger, cron expression or filter."""
    problems: list[Problem] = []

    def add(message: str, path: str) -> None:
        problems.append(Problem(message=message, path=path, line=config.line_of(path), file=config.filename))

    found: dict[str, tuple[Schedule, ...]] = {}
    for raw_name, body in (config.workflows or {}).items():
        if str(raw_name) != "version" and isinstance(body, dict) and "triggers" in body:
            found[str(raw_name)] = _triggers(body["triggers"], f"workflows.{raw_name}.triggers", add)
    if problems:
        raise ConfigError(problems)
    return found


def _triggers(value: Any, path: str, add: _Add) -> tuple[Schedule, ...]:
    """`triggers: [{schedule: {cron: "m h dom mon dow", filters: {branches: {only|ignore}}}}]`."""
    if not isinstance(value, list) or not value:
        add("`triggers` must be a non-empty list of `schedule` entries", path)
        return ()
    out: list[Schedule] = []
    for k, entry in enumerate(value):
        at = f"{path}[{k}]"
        body = entry.get("schedule") if isinstance(entry, dict) and set(entry) == {"schedule"} else None
        if not isinstance(body, dict):
            add("a trigger is `schedule: {cron: ..., filters: {branches: ...}}`", at)
            continue
        at = f"{at}.schedule"
        for key in body:
            if key not in ("cron", "filters"):
                add(f"unknown schedule key {key!r}: use `cron` and `filters`", f"{at}.{key}")
        expr = None
        if "cron" not in body:
            add('a schedule needs `cron`, e.g. "0 3 * * *" (minute hour day month weekday, UTC)', at)
        else:
            try:
                expr = cron.parse(body["cron"], path=f"{at}.cron")
            except ConfigError as exc:
                for problem in exc.problems:
                    add(problem.message, problem.path)
        filters = body.get("filters")
        branches = filters.get("branches") if isinstance(filters, dict) else None
        if not isinstance(filters, dict) or set(filters) != {"branches"} or not isinstance(branches, dict):
            add(
                "a schedule needs `filters: {branches: {only: ...}}` (or `ignore`): the branches it runs on",
                f"{at}.filters",
            )
            continue
        patterns = _patterns(branches, f"{at}.filters.branches", add)
        if patterns.only is None and patterns.ignore is None:
            add("`filters.branches` needs `only` or `ignore`", f"{at}.filters.branches")
        elif expr is not None:
            out.append(Schedule(cron=expr, branches=patterns))
    return tuple(out)


def _entry(entry: Any, path: str, config: Config, add: _Add) -> tuple[JobSpec, str] | None:
    if isinstance(entry, str):
        ref, options = entry, {}
    elif isinstance(entry, dict) and entry and isinstance(next(iter(entry)), str):
        ref = next(iter(entry))
        given = entry[ref]
        if given is not None and not isinstance(given, dict):
            add(f"the options of {ref!r} must be a mapping", f"{path}.{ref}")
            return None
        # config.md 5.1: sibling keys of a mis-indented entry are its options
        options = {**{k: v for k, v in entry.items() if k != ref}, **(given or {})}
        path = f"{path}.{ref}"
    else:
        add("a workflow job is a job name or a mapping of one job name to its options", path)
        return None
    kind = options.get("type")
    if kind is not None and kind != "approval":
        add(f"unknown job `type` {kind!r}: the only type is approval", f"{path}.type")
    job_type = JobType.APPROVAL if kind == "approval" else JobType.BUILD
    if "name" in options and config.version != "2.1":
        add("`name` on a workflow job needs version 2.1", f"{path}.name")
    if job_type is JobType.BUILD and ref not in config.jobs:
        add(f"job {ref!r} is not defined in `jobs`", path)
    requires = _requires(options.get("requires"), f"{path}.requires", add)
    contexts = _strings(options.get("context"), f"{path}.context", "`context`", add)
    filters = _filters(options.get("filters"), f"{path}.filters", add)
    return JobSpec(name=ref, type=job_type, requires=requires, contexts=contexts, filters=filters), path


def _requires(value: Any, path: str, add: _Add) -> tuple[Requirement, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        add("`requires` must be a list of job names", path)
        return ()
    out: list[Requirement] = []
    for k, item in enumerate(value):
        if isinstance(item, str):
            out.append(Requirement(job=item))
        elif isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item)), str):
            job, wanted = next(iter(item.items()))
            names = wanted if isinstance(wanted, list) else [wanted]
            statuses: set[JobState] = set()
            for condition in names:
                if not isinstance(condition, str) or condition not in CONDITIONS:
                    add(
                        f"unknown status {condition!r} for {job!r}: use one of {', '.join(CONDITIONS)}",
                        f"{path}[{k}].{job}",
                    )
                else:
                    statuses |= CONDITIONS[condition]
            if statuses:
                out.append(Requirement(job=job, statuses=frozenset(statuses)))
        else:
            add("a requirement is a job name or a mapping of one job name to statuses", f"{path}[{k}]")
    return tuple(out)


def _strings(value: Any, path: str, what: str, add: _Add) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        add(f"{what} must be a name or a list of names", path)
        return ()
    return tuple(items)


def _filters(value: Any, path: str, add: _Add) -> Filters | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        add("`filters` must be a mapping with `branches` and/or `tags`", path)
        return None
    for key in value:
        if key not in ("branches", "tags"):
            add(f"unknown filter {key!r}: use `branches` or `tags`", f"{path}.{key}")
    return Filters(
        branches=_patterns(value.get("branches"), f"{path}.branches", add) if "branches" in value else None,
        tags=_patterns(value.get("tags"), f"{path}.tags", add) if "tags" in value else None,
    )


def _patterns(value: Any, path: str, add: _Add) -> Patterns:
    if value is None:
        return Patterns()
    if not isinstance(value, dict):
        add("a filter must be a mapping with `only` and/or `ignore`", path)
        return Patterns()
    found: dict[str, tuple[str, ...] | None] = {"only": None, "ignore": None}
    for key, given in value.items():
        if key not in found:
            add(f"unknown filter key {key!r}: use `only` or `ignore`", f"{path}.{key}")
            continue
        items = given if isinstance(given, list) else [given]
        patterns: list[str] = []
        for k, item in enumerate(items):
            at = f"{path}.{key}[{k}]" if isinstance(given, list) else f"{path}.{key}"
            if not isinstance(item, str) or not item:
                add("a filter pattern must be a name or a /regular expression/", at)
            elif is_regex(item):
                try:
                    re.compile(item[1:-1])
                except re.error as exc:
                    add(f"invalid regular expression {item}: {exc}", at)
                else:
                    patterns.append(item)
            else:
                patterns.append(item)
        found[key] = tuple(patterns)
    return Patterns(only=found["only"], ignore=found["ignore"])


def _cycle(jobs: list[JobSpec]) -> list[str]:
    """A cycle of requirements as job names (first repeated at the end), or []."""
    edges = {j.name: [r.job for r in j.requires] for j in jobs}
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str]:
        color[name] = 1
        stack.append(name)
        for nxt in edges.get(name, ()):
            if color.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt in edges and color.get(nxt) is None and (found := visit(nxt)):
                return found
        stack.pop()
        color[name] = 2
        return []

    for job in jobs:
        if color.get(job.name) is None and (found := visit(job.name)):
            return found
    return []
