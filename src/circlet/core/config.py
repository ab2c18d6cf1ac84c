"""`.circleci/config.yml` text -> `Config`, and one 2.0-shaped job of it -> `JobPlan`.

Pure: strings in, values out (spec config.md sections 1-4). Every problem found in a config or a
job is collected and raised together in one `ConfigError`, each with its key path and line.

Version 2.1 templates (`<< parameters.x >>`, commands, executors, orbs) are not compiled here:
a 2.1 compiler turns `Config.jobs` into 2.0-shaped jobs (for instance returning
`dataclasses.replace(config, jobs=compiled)`), and `plan_job` then plans them as usual. Until it
exists, `plan_job` plans 2.1 jobs that need no compilation.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit

from yaml.nodes import Node

from circlet.core.errors import ConfigError, Problem
from circlet.core.plan import DEFAULT_NO_OUTPUT_TIMEOUT, DEFAULT_WORKING_DIRECTORY, JobPlan, PlannedStep, When
from circlet.core.plan import StepKind as K
from circlet.core.yamlload import line_of, load_yaml

_VERSIONS = {"2": "2", "2.0": "2", "2.1": "2.1"}
_EXECUTORS = ("docker", "machine", "macos", "windows")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECONDS = re.compile(r"\d+(?:\.\d+)?")
_GO_DURATION = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+")
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_WHEN = {w.value: w for w in When}

# Built-in step types other than run/deploy: (kind, default name, required keys, fixed `when`).
_BUILTINS: dict[str, tuple[K, str, tuple[str, ...], When | None]] = {
    "checkout": (K.CHECKOUT, "Checkout code", (), None),
    "store_test_results": (K.STORE_TEST_RESULTS, "Uploading test results", ("path",), When.ALWAYS),
    "store_artifacts": (K.STORE_ARTIFACTS, "Uploading artifacts", ("path",), When.ALWAYS),
    "save_cache": (K.SAVE_CACHE, "Saving Cache", ("key", "paths"), None),
    "restore_cache": (K.RESTORE_CACHE, "Restoring Cache", (), None),
    "persist_to_workspace": (K.PERSIST_TO_WORKSPACE, "Persisting to Workspace", ("root", "paths"), None),
    "attach_workspace": (K.ATTACH_WORKSPACE, "Attaching Workspace", ("at",), None),
    "add_ssh_keys": (K.NOOP, "Add SSH keys", (), None),
    "setup_remote_docker": (K.NOOP, "Setup a remote Docker engine", (), None),
}
_LIST_KEYS = ("paths", "keys", "fingerprints")  # built-in keys that take a list of strings
_STRING_KEYS = ("path", "key", "root", "at", "destination", "prefix")


@dataclass(frozen=True, kw_only=True)
class Config:
    """A loaded config: the document as data, plus what is needed to point at its lines."""

    version: str  # "2" (written 2, 2.0 or "2.0") or "2.1"
    jobs: dict[str, Any]  # raw job mappings by name, merge keys applied
    workflows: dict[str, Any] | None
    raw: dict[str, Any]  # the whole document
    text: str
    filename: str = ".circleci/config.yml"
    node: Node | None = field(default=None, repr=False, compare=False)  # composed tree, for lines

    def job_names(self) -> list[str]:
        """Job names in the order the document gives them."""
        return list(self.jobs)

    def line_of(self, path: str) -> int | None:
        """1-based line of a key path like `jobs.build.steps[1]` (see `yamlload.line_of`)."""
        return line_of(self.node, path)


class _Problems:
    """Collects problems, each with its path and the line the path points at."""

    def __init__(self, filename: str, node: Node | None) -> None:
        self.filename, self.node, self.items = filename, node, list[Problem]()

    def add(self, message: str, path: str = "") -> None:
        line = line_of(self.node, path) if path else None
        self.items.append(Problem(message=message, path=path, line=line, file=self.filename))

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(self.items)


def load_config(text: str, *, filename: str = ".circleci/config.yml") -> Config:
    """Parse config text into a `Config`; raise ConfigError listing every top-level problem.

    Checks YAML syntax, that the document is a mapping, `version`, and the shape of `jobs` and
    `workflows`. Jobs themselves are checked by `plan_job`.
    """
    data, node = load_yaml(text, filename=filename)
    problems = _Problems(filename, node)
    if not isinstance(data, dict):
        problems.add("the config must be a mapping with `version` and `jobs`")
        problems.raise_if_any()
    version = _version(data.get("version"), problems)
    jobs_raw = data.get("jobs")
    jobs: dict[str, Any] = {}
    if isinstance(jobs_raw, dict):
        jobs = {str(name): job for name, job in jobs_raw.items()}
    elif jobs_raw is not None:
        problems.add("`jobs` must be a mapping of job names to jobs", "jobs")
    elif version == "2":
        problems.add("a version 2 config needs `jobs`", "jobs")
    folded: dict[str, str] = {}
    for name in jobs:
        if name.casefold() in folded:
            problems.add(
                f"job names must differ in more than case: {folded[name.casefold()]!r}", f"jobs.{name}"
            )
        folded.setdefault(name.casefold(), name)
    workflows = data.get("workflows")
    if workflows is not None and not isinstance(workflows, dict):
        problems.add("`workflows` must be a mapping", "workflows")
    problems.raise_if_any()
    return Config(
        version=version, jobs=jobs, workflows=workflows, raw=data, text=text, filename=filename, node=node
    )


def _version(value: object, problems: _Problems) -> str:
    if value is None:
        problems.add("`version` is missing: circlet reads 2, 2.0 and 2.1", "version")
        return ""
    version: str | None = None
    if isinstance(value, str):
        version = _VERSIONS.get(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        version = {2: "2", 2.1: "2.1"}.get(value)  # 2.0 == 2 as a key
    if version is None:
        problems.add(f"unsupported `version` {value!r}: circlet reads 2, 2.0 and 2.1", "version")
        return ""
    return version


def plan_job(config: Config, job_name: str) -> JobPlan:
    """Compile one 2.0-shaped job into a `JobPlan`; raise ConfigError listing all its problems."""
    problems = _Problems(config.filename, config.node)
    at = f"jobs.{job_name}"
    job = config.jobs.get(job_name)
    if job_name not in config.jobs:
        problems.add(f"there is no job named {job_name!r}", "jobs")
    elif not isinstance(job, dict):
        problems.add("a job must be a mapping", at)
    problems.raise_if_any()
    assert isinstance(job, dict)
    kind, image, image_env = _executor(job, at, problems)
    environment = {**image_env, **_environment(job.get("environment"), f"{at}.environment", problems)}
    parallelism = job.get("parallelism", 1)
    if isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1:
        problems.add(
            f"`parallelism` must be a whole number of at least 1, not {parallelism!r}", f"{at}.parallelism"
        )
    resource_class = _string(job.get("resource_class", "medium"), f"{at}.resource_class", problems)
    steps: list[PlannedStep] = []
    raw_steps = job.get("steps")
    if raw_steps is None:
        problems.add("a job needs `steps`", f"{at}.steps")
    elif not isinstance(raw_steps, list):
        problems.add("`steps` must be a list", f"{at}.steps")
    else:
        for index, raw in enumerate(raw_steps):
            step = _step(raw, f"{at}.steps[{index}]", config.version, problems)
            if step is not None:
                steps.append(step)
    plan = JobPlan(
        name=job_name,
        steps=tuple(steps),
        environment=environment,
        working_directory=_string(
            job.get("working_directory", DEFAULT_WORKING_DIRECTORY), f"{at}.working_directory", problems
        )
        or DEFAULT_WORKING_DIRECTORY,
        shell=_string(job.get("shell"), f"{at}.shell", problems),
        parallelism=parallelism if isinstance(parallelism, int) else 1,
        executor_kind=kind,
        image=image,
        resource_class=resource_class or "medium",
    )
    problems.raise_if_any()
    return plan


def notify_webhooks(config: Config) -> list[str]:
    """The http(s) URLs of top-level `notify: {webhooks: [{url: ...}]}`, in order, each once.

    Never raises: a malformed `notify` section or entry is skipped (a notification setting must
    never fail a build), as is any URL that is not absolute http or https.
    """
    notify = config.raw.get("notify")
    hooks = notify.get("webhooks") if isinstance(notify, dict) else None
    urls: list[str] = []
    for entry in hooks if isinstance(hooks, list) else ():
        url = entry.get("url") if isinstance(entry, dict) else None
        if not isinstance(url, str):
            continue
        url = url.strip()
        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            continue
        if parts.scheme.lower() in ("http", "https") and parts.netloc and url not in urls:
            urls.append(url)
    return urls


def _executor(job: dict[str, Any], at: str, problems: _Problems) -> tuple[str, str | None, dict[str, str]]:
    """(kind, image, primary image environment) of a job."""
    given = [name for name in _EXECUTORS if name in job]
    if not given:
        hint = " (`executor:` needs 2.1 compilation)" if "executor" in job else ""
        problems.add(f"a job needs an executor: one of docker, machine, macos, windows{hint}", at)
        return "docker", None, {}
    if len(given) > 1:
        problems.add(f"a job takes exactly one executor, not {' and '.join(given)}", f"{at}.{given[1]}")
    kind = given[0]
    value, path = job[kind], f"{at}.{kind}"
    if kind == "docker":
        if not isinstance(value, list) or not value:
            problems.add("`docker` must be a list of images", path)
            return kind, None, {}
        for index, item in enumerate(value):
            if not isinstance(item, dict) or not isinstance(item.get("image"), str):
                problems.add("each `docker` entry needs an `image`", f"{path}[{index}]")
        primary = value[0] if isinstance(value[0], dict) else {}
        image = primary.get("image") if isinstance(primary.get("image"), str) else None
        return kind, image, _environment(primary.get("environment"), f"{path}[0].environment", problems)
    if value is True:
        return kind, None, {}
    if not isinstance(value, dict):
        problems.add(f"`{kind}` must be true or a mapping", path)
        return kind, None, {}
    image = value.get("image", value.get("xcode") if kind == "macos" else None)
    return kind, None if image is None else str(image), {}


def _environment(value: object, path: str, problems: _Problems) -> dict[str, str]:
    """A map, a list of single-key maps, or a list of KEY=VALUE strings -> {name: text}."""
    pairs: list[tuple[object, object, str]] = []  # (name, value, path)
    if value is None:
        return {}
    if isinstance(value, dict):
        pairs = [(k, v, f"{path}.{k}") for k, v in value.items()]
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, dict):
                pairs += [(k, v, f"{path}[{index}]") for k, v in item.items()]
            elif isinstance(item, str) and "=" in item:
                key, _, text = item.partition("=")
                pairs.append((key, text, f"{path}[{index}]"))
            else:
                problems.add(
                    "an environment list item must be a map or a KEY=VALUE string", f"{path}[{index}]"
                )
    else:
        problems.add("`environment` must be a map, a list of maps or a list of KEY=VALUE strings", path)
    env: dict[str, str] = {}
    for var, raw, where in pairs:
        value_text = _env_text(raw)
        if isinstance(var, bool):
            problems.add("YAML reads this name (yes/no/on/off/true/false) as a boolean; quote it", where)
        elif not isinstance(var, str) or not _ENV_NAME.fullmatch(var):
            problems.add(f"invalid environment variable name {var!r}", where)
        elif value_text is None:
            problems.add(f"environment variable {var} must be a string, number or boolean", where)
        else:
            env[var] = value_text
    return env


def _env_text(value: object) -> str | None:
    """Environment values as text, never interpolated; None when the value is not a scalar."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _string(value: object, path: str, problems: _Problems) -> str | None:
    """Strings pass; None stays None; anything else is a problem (and None)."""
    if value is None or isinstance(value, str):
        return value
    problems.add(f"must be a string, not {value!r}", path)
    return None


def _step(raw: object, path: str, version: str, problems: _Problems) -> PlannedStep | None:
    """One step as written -> PlannedStep, or None after recording why it cannot be planned."""
    if isinstance(raw, str):
        if raw in _BUILTINS or raw in ("run", "deploy"):
            raw = {raw: None}  # `- checkout`; others then report what they miss
        else:
            hint = " (2.1 commands need compilation)" if version == "2.1" else ""
            problems.add(f"unknown step {raw!r}{hint}", path)
            return None
    if not isinstance(raw, dict) or len(raw) != 1:
        keys = f", found keys {', '.join(map(str, raw))}" if isinstance(raw, dict) else ""
        problems.add(f"a step must be a step name or a map with a single key, the step type{keys}", path)
        return None
    ((step_type, body),) = raw.items()
    path = f"{path}.{step_type}"
    if step_type in ("run", "deploy"):
        return _run(step_type, body, path, problems)
    if step_type not in _BUILTINS:
        hint = " (2.1 commands need compilation)" if version == "2.1" else ""
        problems.add(f"unknown step {step_type!r}{hint}", path)
        return None
    kind, name, required, fixed_when = _BUILTINS[step_type]
    body = {} if body is None else body
    if not isinstance(body, dict):
        problems.add(f"`{step_type}` takes a mapping of options", path)
        return None
    ok = True
    for key in required:
        if key not in body:
            problems.add(f"`{step_type}` needs `{key}`", f"{path}.{key}")
            ok = False
    if step_type == "restore_cache" and "key" not in body and "keys" not in body:
        problems.add("`restore_cache` needs `key` or `keys`", f"{path}.key")
        ok = False
    args = {key: value for key, value in body.items() if key not in ("name", "when")}
    for key, value in args.items():
        if key in _LIST_KEYS and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            problems.add(f"`{key}` must be a list of strings", f"{path}.{key}")
            ok = False
        elif key in _STRING_KEYS and not isinstance(value, str):
            problems.add(f"`{key}` must be a string", f"{path}.{key}")
            ok = False
    if step_type == "store_artifacts" and "prefix" in args:
        prefix = args.pop("prefix")  # obsolete spelling of destination
        args.setdefault("destination", prefix)
    when = fixed_when or (
        _when(body.get("when"), f"{path}.when", problems) if step_type == "save_cache" else None
    )
    label = _name(body.get("name"), f"{path}.name", problems)
    if not ok:
        return None
    args = copy.deepcopy(args)  # aliases share objects with the raw document and other steps
    return PlannedStep(kind=kind, name=label or name, when=when or When.ON_SUCCESS, args=args)


def _name(value: object, path: str, problems: _Problems) -> str | None:
    """A step's `name`: text, or a number written as text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return _string(value, path, problems)


def _run(step_type: str, body: object, path: str, problems: _Problems) -> PlannedStep | None:
    """`run` / `deploy` (a deploy step is a run step marked with args={"deploy": True})."""
    if body is None or isinstance(body, str):
        body = {"command": body}
    if not isinstance(body, dict):
        problems.add(f"`{step_type}` takes a command string or a mapping with `command`", path)
        return None
    before = len(problems.items)
    command = body.get("command")
    if command is None:
        problems.add(f"`{step_type}` needs a `command`", f"{path}.command")
    elif not isinstance(command, str):
        problems.add("`command` must be a string", f"{path}.command")
    name = _name(body.get("name", command), f"{path}.name", problems)
    background = body.get("background", False)
    if not isinstance(background, bool):
        problems.add(f"`background` must be true or false, not {background!r}", f"{path}.background")
    step = PlannedStep(
        kind=K.RUN,
        name=name or "",
        command=command if isinstance(command, str) else None,
        shell=_string(body.get("shell"), f"{path}.shell", problems),
        environment=_environment(body.get("environment"), f"{path}.environment", problems),
        working_directory=_string(body.get("working_directory"), f"{path}.working_directory", problems),
        no_output_timeout=_timeout(body.get("no_output_timeout"), f"{path}.no_output_timeout", problems),
        background=background is True,
        when=_when(body.get("when"), f"{path}.when", problems) or When.ON_SUCCESS,
        args={"deploy": True} if step_type == "deploy" else {},
    )
    return step if len(problems.items) == before else None


def _when(value: object, path: str, problems: _Problems) -> When | None:
    if value is None:
        return None
    if isinstance(value, str) and value in _WHEN:
        return _WHEN[value]
    problems.add(f"`when` must be on_success, on_fail or always, not {value!r}", path)
    return None


def _timeout(value: object, path: str, problems: _Problems) -> float:
    """`no_output_timeout`: seconds as a number or "90", or "10m", "1.25h", "1h30m" (Go durations)."""
    if value is None:
        return DEFAULT_NO_OUTPUT_TIMEOUT
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if _SECONDS.fullmatch(text):
            seconds = float(text)
        elif _GO_DURATION.fullmatch(text):
            seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _GO_PART.findall(text))
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        problems.add(
            f"invalid `no_output_timeout` {value!r}: use a duration such as 10m, 1.25h, 90s or 1h30m", path
        )
        return DEFAULT_NO_OUTPUT_TIMEOUT
    return seconds


def branch_verdict(config: Config, job_name: str, branch: str) -> str | None:
    """The 2.0 job-level `branches` rule (config.md 5.5, configs without workflows): None when
    the job runs on `branch`, else the build's `dont_build`: `branch-blacklisted` (an `ignore`
    pattern matches) or `branch-not-whitelisted` (no `only` pattern does). When both are given
    only `ignore` counts (trap 3). Patterns as in workflow filters (`/re/` full match, else
    exact). ConfigError (with the key path) for a malformed `branches`."""
    from circlet.core.workflow import branch_rule_lists, branch_rule_verdict

    job = config.jobs.get(job_name)
    if not isinstance(job, dict) or job.get("branches") is None:
        return None
    problems = _Problems(config.filename, config.node)
    lists = branch_rule_lists(job["branches"], f"jobs.{job_name}.branches", problems.add)
    problems.raise_if_any()
    return branch_rule_verdict(lists, branch)
