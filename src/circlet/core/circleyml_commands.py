"""circle.yml's commands (config.md 12.1): a command and its modifiers -> a PlannedStep, and how
problems are collected. Pure; circleyml.py plans the phases with them.

A command is a string or a single-key map `command: {modifiers}`: `timeout` (seconds without
output, a positive finite number or such a number as a string), `pwd`, `environment` (names
checked as 2.0's), `parallel` and `background` (booleans); `files` is accepted and ignored with
a warning. An empty command is dropped with a warning.
"""

from __future__ import annotations

import math
import re
from typing import Any

from circlet.core.config import _ENV_NAME as ENV_NAME
from circlet.core.errors import Problem
from circlet.core.phases import Command, Phase, command_step
from circlet.core.plan import DEFAULT_NO_OUTPUT_TIMEOUT, PlannedStep
from circlet.core.yamlload import line_of

PATH = "circle.yml"
_MODIFIERS = ("timeout", "pwd", "environment", "parallel", "files", "background")
_NUMBER = re.compile(r"\s*\d+(?:\.\d+)?\s*")  # `timeout: "1200"`, as 2.0's no_output_timeout


class Problems:
    """A circle.yml's problems (with their key path and line) and warnings, collected together."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.items: list[Problem] = []
        self.warnings: list[str] = []

    def add(self, message: str, path: str) -> None:
        self.items.append(Problem(message=message, path=path, line=line_of(self.root, path), file=PATH))


def env_of(value: object, path: str, problems: Problems) -> dict[str, str]:
    if not isinstance(value, dict):
        problems.add("`environment` must be a mapping of names to values", path)
        return {}
    out: dict[str, str] = {}
    for name, raw in value.items():
        where = f"{path}.{name}"
        if isinstance(name, bool):
            problems.add("YAML reads this name (yes/no/on/off/true/false) as a boolean; quote it", where)
        elif not isinstance(name, str) or not ENV_NAME.fullmatch(name):
            problems.add(f"invalid environment variable name {name!r}", where)
        elif isinstance(raw, (dict, list)) or raw is None:
            problems.add("an environment value must be a string or a number", where)
        else:
            text = str(raw).lower() if isinstance(raw, bool) else str(raw)
            if "\0" in text:
                problems.add("an environment value cannot contain a NUL character", where)
            else:
                out[name] = text
    return out


def commands(value: object, path: str, phase: Phase, problems: Problems) -> list[PlannedStep]:
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


def _on_every_node(phase: Phase, parallel: bool) -> bool:
    """config.md 12.1: test commands need `parallel: true` to run on every node, deployment never
    does; the other phases always do (DECISION: compile too, as tests on other nodes need it)."""
    if phase is Phase.TEST:
        return parallel
    return phase is not Phase.DEPLOYMENT


def _command(raw: object, path: str, phase: Phase, problems: Problems) -> PlannedStep | None:
    """One command as a step; None for a bad one (a problem) or an empty one (a warning: an
    empty command is no command, so it is dropped and cannot count as a test command)."""
    home = "~" if phase in (Phase.MACHINE, Phase.CHECKOUT) else None
    if isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
        if _empty(raw, path, problems):
            return None
        return command_step(
            Command(command=str(raw)),
            phase,
            source="config",
            working_directory=home,
            parallel=_on_every_node(phase, False),
        )
    if not isinstance(raw, dict) or len(raw) != 1:
        problems.add("a command is a string or a map of one command to its modifiers", path)
        return None
    ((text, mods),) = raw.items()
    if not isinstance(text, str):
        problems.add(f"a command must be a string, not {text!r} (quote it)", path)
        return None
    if _empty(text, path, problems):
        return None
    mods = {} if mods is None else mods
    if not isinstance(mods, dict):
        problems.add("a command's modifiers must be a mapping", f"{path}.{text}")
        return None
    for key in mods:
        if key not in _MODIFIERS:
            problems.add(f"unknown modifier `{key}` (known: {', '.join(_MODIFIERS)})", f"{path}.{text}.{key}")
    if "files" in mods:
        problems.warnings.append(f"circle.yml ({path}): the `files` modifier is ignored")
    timeout = _timeout(mods.get("timeout", DEFAULT_NO_OUTPUT_TIMEOUT))
    if timeout is None:
        problems.add("`timeout` must be a positive number of seconds", f"{path}.{text}.timeout")
        timeout = DEFAULT_NO_OUTPUT_TIMEOUT
    pwd = mods.get("pwd", home)
    if pwd is not None and not isinstance(pwd, str):
        problems.add("`pwd` must be a path", f"{path}.{text}.pwd")
        pwd = home
    env = env_of(mods["environment"], f"{path}.{text}.environment", problems) if "environment" in mods else {}
    parallel = mods.get("parallel", False)
    if not isinstance(parallel, bool):
        problems.add("`parallel` must be true or false", f"{path}.{text}.parallel")
    background = mods.get("background", False)
    if not isinstance(background, bool):
        problems.add("`background` must be true or false", f"{path}.{text}.background")
    return command_step(
        Command(command=str(text)),
        phase,
        source="config",
        environment=env,
        working_directory=pwd,
        no_output_timeout=float(timeout),
        background=background is True,
        parallel=_on_every_node(phase, parallel is True),
    )


def _empty(text: object, path: str, problems: Problems) -> bool:
    if str(text).strip():
        return False
    problems.warnings.append(f"circle.yml ({path}): an empty command is ignored")
    return True


def _timeout(value: object) -> float | None:
    """A modifier's `timeout` in seconds: a positive finite number, or such a number as a
    string ("1200"); None otherwise (`.inf`, `.nan`, 0, negative, other text)."""
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    seconds = float(value)
    return seconds if math.isfinite(seconds) and seconds > 0 else None
