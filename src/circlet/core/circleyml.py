"""CircleCI 1.0 `circle.yml` -> JobPlan (config.md 12.1), inference filling phases without `override`.

Pure. Supported: the phases `machine` (`environment`, `pre`, `post`), `checkout` (`post`),
`dependencies`, `database`, `compile`, `test` (`pre`, `override`, `post`), `deployment` (the
first section whose `branch`/`tag` matches), `general.build_dir`. Commands are strings or
single-key maps with the modifiers `timeout`, `pwd`, `environment`, `background` (`parallel`
is accepted: every command runs on every node here). Recorded but not acted on, with a warning:
`files`, `dependencies.cache_directories`, `general.branches`, `general.artifacts`, `notify`,
other `machine` settings (language versions, services). Every problem is collected and
reported together with its key path, as for .circleci/config.yml.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from circlet.core.errors import ConfigError, Problem
from circlet.core.infer import (
    Command,
    Inference,
    Inferred,
    Phase,
    checkout_step,
    command_step,
    infer,
    plan_1_0,
)
from circlet.core.plan import DEFAULT_NO_OUTPUT_TIMEOUT, PlannedStep
from circlet.core.yamlload import line_of, load_yaml

PATH = "circle.yml"
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
    "dependencies.cache_directories": "cache_directories (dependency caching of 1.0 builds)",
    "general.branches": "general.branches (circlet builds every branch it is asked to)",
    "general.artifacts": "general.artifacts",
    "notify": "notify",
}
_MODIFIERS = ("timeout", "pwd", "environment", "parallel", "files", "background")


class _Problems:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.items: list[Problem] = []
        self.warnings: list[str] = []

    def add(self, message: str, path: str) -> None:
        self.items.append(Problem(message=message, path=path, line=line_of(self.root, path), file=PATH))


def plan_circle_yml(
    text: str,
    entries: Collection[str],
    texts: Mapping[str, str | None],
    *,
    reponame: str,
    branch: str | None = None,
    tag: str | None = None,
    job_name: str = "build",
) -> Inference:
    """The plan of a commit whose config is `circle.yml` (ConfigError listing every problem).

    `entries`/`texts` are what inference reads (infer.files_to_read); `branch`/`tag` choose the
    deployment section."""
    data, root = load_yaml(text, filename=PATH)
    data = {} if data is None else data
    problems = _Problems(root)
    if not isinstance(data, dict):
        raise ConfigError([Problem(message="circle.yml must be a mapping of phases", file=PATH)])
    inferred = infer(entries, texts)
    environment = _machine_environment(data.get("machine"), problems)
    build_dir = _general(data.get("general"), problems)
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
            steps.append(checkout_step())
        for section in sections:
            if section == "override" and "override" not in body:
                commands = _inferred_for(phase, inferred)
                tests_inferred = tests_inferred or (phase is Phase.TEST and bool(commands))
                steps.extend(command_step(c, phase) for c in commands)
                continue
            path = f"{phase.value}.{section}"
            steps.extend(_commands(body.get(section), path, phase, problems))
    steps.extend(_deployment(data.get("deployment"), branch, tag, problems))
    if "notify" in data:
        problems.warnings.append(f"circle.yml: {_IGNORED['notify']} is ignored")
    if problems.items:
        raise ConfigError(problems.items)
    plan = plan_1_0(job_name, tuple(steps), reponame=reponame, environment=environment, build_dir=build_dir)
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


def _check_keys(phase: Phase, body: dict[str, Any], sections: tuple[str, ...], problems: _Problems) -> None:
    for key in body:
        where = f"{phase.value}.{key}"
        if key in sections or (phase is Phase.MACHINE and key == "environment"):
            continue
        if where in _IGNORED:
            problems.warnings.append(f"circle.yml: {_IGNORED[where]} is ignored")
        elif phase is Phase.MACHINE:
            problems.warnings.append(f"circle.yml: {_IGNORED['machine']} are ignored ({where})")
        else:
            problems.add(f"unknown key `{key}` (`{phase.value}` takes {', '.join(sections)})", where)


def _inferred_for(phase: Phase, inferred: Inferred) -> tuple[Command, ...]:
    if phase is Phase.DEPENDENCIES:
        return inferred.dependencies
    if phase is Phase.TEST:
        return inferred.test
    return ()


def _machine_environment(machine: object, problems: _Problems) -> dict[str, str]:
    if not isinstance(machine, dict) or machine.get("environment") is None:
        return {}
    return _env(machine["environment"], "machine.environment", problems)


def _env(value: object, path: str, problems: _Problems) -> dict[str, str]:
    if not isinstance(value, dict):
        problems.add("`environment` must be a mapping of names to values", path)
        return {}
    out: dict[str, str] = {}
    for name, raw in value.items():
        if isinstance(raw, (dict, list)) or raw is None:
            problems.add("an environment value must be a string or a number", f"{path}.{name}")
        else:
            out[str(name)] = str(raw).lower() if isinstance(raw, bool) else str(raw)
    return out


def _general(general: object, problems: _Problems) -> str | None:
    if general is None:
        return None
    if not isinstance(general, dict):
        problems.add("`general` must be a mapping", "general")
        return None
    for key in general:
        if f"general.{key}" in _IGNORED:
            problems.warnings.append(f"circle.yml: {_IGNORED[f'general.{key}']} is ignored")
        elif key != "build_dir":
            problems.add(f"unknown key `{key}` (`general` takes build_dir, branches, artifacts)", "general")
    build_dir = general.get("build_dir")
    if build_dir is not None and (
        not isinstance(build_dir, str) or build_dir.startswith("/") or ".." in build_dir
    ):
        problems.add("`build_dir` must be a relative path inside the repository", "general.build_dir")
        return None
    return build_dir


def _commands(value: object, path: str, phase: Phase, problems: _Problems) -> list[PlannedStep]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add("must be a list of commands", path)
        return []
    steps = []
    for i, raw in enumerate(value):
        step = _command(raw, f"{path}[{i}]", phase, problems)
        if step is not None:
            steps.append(step)
    return steps


def _command(raw: object, path: str, phase: Phase, problems: _Problems) -> PlannedStep | None:
    home = "~" if phase in (Phase.MACHINE, Phase.CHECKOUT) else None
    if isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
        return command_step(Command(command=str(raw)), phase, source="config", working_directory=home)
    if not isinstance(raw, dict) or len(raw) != 1:
        problems.add("a command is a string or a map of one command to its modifiers", path)
        return None
    ((text, mods),) = raw.items()
    mods = {} if mods is None else mods
    if not isinstance(mods, dict):
        problems.add("a command's modifiers must be a mapping", f"{path}.{text}")
        return None
    for key in mods:
        if key not in _MODIFIERS:
            problems.add(f"unknown modifier `{key}` (known: {', '.join(_MODIFIERS)})", f"{path}.{text}.{key}")
    if "files" in mods:
        problems.warnings.append(f"circle.yml ({path}): the `files` modifier is ignored")
    timeout = mods.get("timeout", DEFAULT_NO_OUTPUT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        problems.add("`timeout` must be a positive number of seconds", f"{path}.{text}.timeout")
        timeout = DEFAULT_NO_OUTPUT_TIMEOUT
    pwd = mods.get("pwd", home)
    if pwd is not None and not isinstance(pwd, str):
        problems.add("`pwd` must be a path", f"{path}.{text}.pwd")
        pwd = home
    env = _env(mods["environment"], f"{path}.{text}.environment", problems) if "environment" in mods else {}
    return command_step(
        Command(command=str(text)),
        phase,
        source="config",
        environment=env,
        working_directory=pwd,
        no_output_timeout=float(timeout),
        background=bool(mods.get("background", False)),
    )


def _matches(spec: object, value: str | None) -> bool:
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


def _deployment(value: object, branch: str | None, tag: str | None, problems: _Problems) -> list[PlannedStep]:
    """The commands of the first deployment section (file order) matching the branch or tag."""
    if value is None:
        return []
    if not isinstance(value, dict):
        problems.add("`deployment` must be a mapping of named sections", "deployment")
        return []
    for name, section in value.items():
        path = f"deployment.{name}"
        if not isinstance(section, dict):
            problems.add("a deployment section must be a mapping (branch or tag, commands)", path)
            continue
        if "heroku" in section:
            problems.warnings.append(f"circle.yml ({path}): heroku deployments are not run by circlet")
        if _matches(section.get("branch"), branch) or _matches(section.get("tag"), tag):
            return _commands(section.get("commands"), f"{path}.commands", Phase.DEPLOYMENT, problems)
    return []
