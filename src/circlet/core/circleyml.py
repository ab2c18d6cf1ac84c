"""CircleCI 1.0 `circle.yml` -> JobPlan (config.md 12.1), inference filling phases without `override`.

Pure. Supported: the phases `machine` (`environment`, `pre`, `post`), `checkout` (`post`),
`dependencies` (with `cache_directories`), `database`, `compile`, `test` (`pre`, `override`,
`post`), `deployment` (the first section whose `branch`/`tag` matches and whose `owner`, if any,
is the project's username; every section is checked), `general` (`build_dir`: where commands
run and inference looks, inside the whole checkout at `~/<reponame>`; `artifacts`, `branches`).
Commands are strings or single-key maps with the modifiers `timeout`, `pwd`, `environment`,
`background`, `parallel`; an empty command is dropped with a warning.

Parallel builds (config.md 12.1): machine, checkout, dependencies, database and compile commands
run on every node; test commands on node 0 alone unless `parallel: true` or inferred; deployment
on node 0 alone (PlannedStep.parallel). `cache_directories` are restored before the dependencies
phase and saved after it (on node 0) under `circle-1.0-cache-<branch>:<build>-<epoch>`; the
restore takes the newest cache of the branch, else of the default branch (DECISION: the `:`
cannot be part of a git branch name, so `main` never takes `main-x`'s cache). Every plan ends
with the teardown of phases.teardown_steps ($CIRCLE_TEST_REPORTS, $CIRCLE_ARTIFACTS,
`general.artifacts`). `general.branches` and tag pushes are rules of pushes, not of the plan:
the trigger asks core/circleyml_push.py (pipeline_trigger.py). The steps' shapes (commands,
cache_directories, the teardown) are core/phases.py's; a command and its modifiers become a
step in core/circleyml_commands.py.

Recorded but not acted on, with a warning: the `files` modifier, `notify`, other `machine`
settings (language versions, services). Every problem is collected and reported together with
its key path, as for .circleci/config.yml.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from circlet.core.circleyml_commands import PATH as PATH
from circlet.core.circleyml_commands import Problems as Problems
from circlet.core.circleyml_commands import commands, env_of
from circlet.core.errors import ConfigError, Problem
from circlet.core.infer import Inference, Inferred, infer
from circlet.core.phases import (
    Command,
    Phase,
    build_dir_problem,
    checkout_step,
    clean_build_dir,
    command_step,
    plan_1_0,
    restore_cache_step,
    save_cache_step,
)
from circlet.core.plan import PlannedStep
from circlet.core.workflow import branch_rule_lists
from circlet.core.yamlload import load_yaml

# Which sections each phase takes (config.md 12.1); `override` makes inference step aside.
SECTIONS: dict[Phase, tuple[str, ...]] = {
    Phase.MACHINE: ("pre", "post"),
    Phase.CHECKOUT: ("post",),
    Phase.DEPENDENCIES: ("pre", "override", "post"),
    Phase.DATABASE: ("pre", "override", "post"),
    Phase.COMPILE: ("pre", "override", "post"),
    Phase.TEST: ("pre", "override", "post"),
}
# Keys accepted and ignored with a warning (circlet has no equivalent on a host shell).
_IGNORED = {
    "machine": "machine settings other than environment/pre/post (language versions, services)",
    "notify": "notify",
}
_GENERAL = ("build_dir", "branches", "artifacts")
_DEPLOYMENT = ("branch", "tag", "owner", "commands", "heroku")


@dataclass(frozen=True, kw_only=True)
class _General:
    build_dir: str | None = None
    artifacts: tuple[str, ...] = ()


def plan_circle_yml(
    text: str,
    entries: Collection[str],
    texts: Mapping[str, str | None],
    *,
    reponame: str,
    username: str | None = None,
    branch: str | None = None,
    tag: str | None = None,
    default_branch: str | None = None,
    job_name: str = "build",
) -> Inference:
    """The plan of a commit whose config is `circle.yml` (ConfigError listing every problem).

    `entries`/`texts` are what inference reads in the build directory (build_dir_of says which;
    infer.files_to_read); `branch`/`tag` choose the deployment section, among those whose
    `owner` (if any) is `username`, the project's (case-insensitive); the cache of
    `default_branch` is the fallback of the other branches'."""
    data, root = load(text)
    problems = Problems(root)
    inferred = infer(entries, texts)
    environment = _machine_environment(data.get("machine"), problems)
    general = _general(data.get("general"), problems)
    cached = _cache_directories(data.get("dependencies"), problems)
    steps: list[PlannedStep] = []
    tests_inferred = False
    for phase, sections in SECTIONS.items():
        body = data.get(phase.value)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            problems.add(f"`{phase.value}` must be a mapping of {', '.join(sections)}", phase.value)
            continue
        _check_keys(phase, body, sections, problems)
        if phase is Phase.CHECKOUT:
            steps.append(checkout_step(reponame))
        if phase is Phase.DEPENDENCIES and cached:
            steps.append(restore_cache_step(default_branch))
        for section in sections:
            if section == "override" and "override" not in body:
                found = _inferred_for(phase, inferred)
                tests_inferred = tests_inferred or (phase is Phase.TEST and bool(found))
                steps.extend(command_step(c, phase) for c in found)
                continue
            path = f"{phase.value}.{section}"
            steps.extend(commands(body.get(section), path, phase, problems))
        if phase is Phase.DEPENDENCIES and cached:
            steps.append(save_cache_step(cached))
    steps.extend(_deployment(data.get("deployment"), branch, tag, username, problems))
    if "notify" in data:
        problems.warnings.append(f"circle.yml: {_IGNORED['notify']} is ignored")
    if problems.items:
        raise ConfigError(problems.items)
    plan = plan_1_0(
        job_name,
        tuple(steps),
        reponame=reponame,
        environment=environment,
        build_dir=general.build_dir,
        artifacts=general.artifacts,
    )
    used = Inferred(
        dependencies=inferred.dependencies if "override" not in (data.get("dependencies") or {}) else (),
        test=inferred.test if tests_inferred else (),
        found=inferred.found,
        notes=(*inferred.notes, *problems.warnings),
    )
    message = None
    if not any(s.type == Phase.TEST and s.command for s in plan.steps):
        message = "circle.yml runs no test command and circlet inferred none, so the build ends no_tests."
    return Inference(plan=plan, inferred=used, message=message)


def load(text: str) -> tuple[dict[str, Any], Any]:
    """circle.yml's text as (mapping of phases, YAML node tree for lines); ConfigError otherwise."""
    data, root = load_yaml(text, filename=PATH)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError([Problem(message="circle.yml must be a mapping of phases", file=PATH)])
    return data, root


def build_dir_of(text: str) -> str:
    """circle.yml's `general.build_dir` (where inference looks, config.md 12.2) as a relative
    path inside the repository, "" for the top level (none given, or a bad one, which
    plan_circle_yml reports)."""
    try:
        data, _root = load(text)
    except ConfigError:
        return ""
    general = data.get("general")
    build_dir = general.get("build_dir") if isinstance(general, dict) else None
    if build_dir is None or build_dir_problem(build_dir) is not None:
        return ""
    return clean_build_dir(str(build_dir))


def _check_keys(phase: Phase, body: dict[str, Any], sections: tuple[str, ...], problems: Problems) -> None:
    for key in body:
        where = f"{phase.value}.{key}"
        if key in sections or (phase is Phase.MACHINE and key == "environment"):
            continue
        takes = (*sections, "cache_directories") if phase is Phase.DEPENDENCIES else sections
        if key in takes:
            continue
        if phase is Phase.MACHINE:
            problems.warnings.append(f"circle.yml: {_IGNORED['machine']} are ignored ({where})")
        else:
            problems.add(f"unknown key `{key}` (`{phase.value}` takes {', '.join(takes)})", where)


def _inferred_for(phase: Phase, inferred: Inferred) -> tuple[Command, ...]:
    if phase is Phase.DEPENDENCIES:
        return inferred.dependencies
    if phase is Phase.TEST:
        return inferred.test
    return ()


def _machine_environment(machine: object, problems: Problems) -> dict[str, str]:
    if not isinstance(machine, dict) or machine.get("environment") is None:
        return {}
    return env_of(machine["environment"], "machine.environment", problems)


def _general(general: object, problems: Problems) -> _General:
    if general is None:
        return _General()
    if not isinstance(general, dict):
        problems.add("`general` must be a mapping", "general")
        return _General()
    for key in general:
        if key not in _GENERAL:
            problems.add(f"unknown key `{key}` (`general` takes build_dir, branches, artifacts)", "general")
    branch_lists(general.get("branches"), problems)
    artifacts = _paths(general.get("artifacts"), "general.artifacts", problems)
    build_dir = general.get("build_dir")
    problem = None if build_dir is None else build_dir_problem(build_dir)
    if problem is not None:
        problems.add(problem, "general.build_dir")
        build_dir = None
    return _General(build_dir=build_dir, artifacts=artifacts)


def _paths(value: object, path: str, problems: Problems) -> tuple[str, ...]:
    """A list of paths (relative to the build dir, `~` allowed; a lone string counts as one)."""
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    found: list[str] = []
    for i, item in enumerate(items):
        if isinstance(item, str) and item.strip():
            found.append(item.strip())
        else:
            where = f"{path}[{i}]" if isinstance(value, list) else path
            problems.add("must be a path or a list of paths", where)
    return tuple(dict.fromkeys(found))


def branch_lists(raw: object, problems: Problems) -> dict[str, list[str]]:
    """`general.branches` as {"only"|"ignore": patterns} (names, or /regex/ full match)."""
    if raw is None:
        return {}
    return branch_rule_lists(raw, "general.branches", problems.add)


def _cache_directories(dependencies: object, problems: Problems) -> tuple[str, ...]:
    if not isinstance(dependencies, dict):
        return ()
    return _paths(dependencies.get("cache_directories"), "dependencies.cache_directories", problems)


def matches_spec(spec: object, value: str | None) -> bool:
    """Whether a deployment's `branch`/`tag` (a name, a /regex/ full match, or a list) takes `value`."""
    if value is None or spec is None:
        return False
    for item in spec if isinstance(spec, list) else [spec]:
        text = str(item)
        if len(text) > 1 and text.startswith("/") and text.endswith("/"):
            try:
                if re.fullmatch(text[1:-1], value):
                    return True
            except re.error:
                continue
        elif text == value:
            return True
    return False


def _deployment(
    value: object, branch: str | None, tag: str | None, username: str | None, problems: Problems
) -> list[PlannedStep]:
    """The commands of the first deployment section (file order) matching the branch or tag
    (and the project's `username` when the section names an `owner`). Every section is checked,
    whichever matches, so that a circle.yml's validity does not depend on the branch."""
    if value is None:
        return []
    if not isinstance(value, dict):
        problems.add("`deployment` must be a mapping of named sections", "deployment")
        return []
    chosen: list[PlannedStep] | None = None
    for name, section in value.items():
        path = f"deployment.{name}"
        if not isinstance(section, dict):
            problems.add("a deployment section must be a mapping (branch or tag, commands)", path)
            continue
        before = len(problems.items)
        _check_section(section, path, problems)
        if "heroku" in section:
            problems.warnings.append(f"circle.yml ({path}): heroku deployments are not run by circlet")
        steps = commands(section.get("commands"), f"{path}.commands", Phase.DEPLOYMENT, problems)
        if (
            chosen is None
            and len(problems.items) == before
            and section_matches(section, branch, tag, username)
        ):
            chosen = steps
    return chosen or []


def _check_section(section: dict[Any, Any], path: str, problems: Problems) -> None:
    for key in section:
        if key not in _DEPLOYMENT:
            problems.add(
                f"unknown key `{key}` (a deployment section takes {', '.join(_DEPLOYMENT)})", f"{path}.{key}"
            )
    if section.get("branch") is None and section.get("tag") is None:
        problems.add("a deployment section needs a `branch` or a `tag`", path)
    for key in ("branch", "tag"):
        spec = section.get(key)
        if spec is None:
            continue
        items = spec if isinstance(spec, list) else [spec]
        for i, item in enumerate(items):
            where = f"{path}.{key}[{i}]" if isinstance(spec, list) else f"{path}.{key}"
            if not isinstance(item, str) or not item:
                problems.add(f"`{key}` must be a name, a /regex/ or a list of them", where)
            elif len(item) > 1 and item.startswith("/") and item.endswith("/"):
                try:
                    re.compile(item[1:-1])
                except re.error as exc:
                    problems.add(f"invalid regular expression {item}: {exc}", where)
    owner = section.get("owner")
    if owner is not None and (not isinstance(owner, str) or not owner):
        problems.add("`owner` must be a user or organization name", f"{path}.owner")


def section_matches(
    section: Mapping[Any, Any], branch: str | None, tag: str | None, username: str | None
) -> bool:
    """Whether a deployment section applies to a build of `branch`/`tag` of the project of
    `username`: its `branch` or `tag` matches (matches_spec), and its `owner`, when given, is
    `username` (case-insensitive; never when the username is unknown)."""
    owner = section.get("owner")
    if owner is not None and (username is None or str(owner).lower() != username.lower()):
        return False
    return matches_spec(section.get("branch"), branch) or matches_spec(section.get("tag"), tag)
