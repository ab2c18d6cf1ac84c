"""Version 2.1 `Config` -> version 2 `Config` (spec config.md section 7, and 5.7).

Pure: the caller passes the pipeline values, the pipeline parameters from the trigger, and the
text of every registry orb it could read from the operator's orb folder (`orbs`, keyed by
`namespace/name@version`); nothing here reads files or the network.

`compile_config` collects every problem it finds and raises them together in one ConfigError,
each with its key path (and line, where the path is in the config's own text). Only elements
that are used are expanded and checked: a command no job calls is not validated.

DECISIONS beyond the spec:
- A scalar that is exactly one tag keeps the value's type, and a missing pipeline value (such
  as `pipeline.git.base_revision` on the first build) stays null there; inside longer text it
  renders as `<nil>`.
- Expression syntax inside tags (`==`, `and`, `starts-with`, ...) is rejected.
- A string parameter given a number gets the number's text; given null, the empty string.
- When a compiled job name is already used by a different job (the same job invoked with other
  arguments in another workflow), the later one gets the next free `-n` suffix.
- A 2.1 config without `workflows` compiles every job that needs no arguments.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from circlet.core.config import Config
from circlet.core.errors import ConfigError, Problem
from circlet.core.yamlload import load_yaml

try:  # libyaml's emitter when PyYAML has it: rendering a big config stays fast
    from yaml import CSafeDumper as _DumperBase
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeDumper as _DumperBase  # type: ignore[assignment]

UNCLOSED = "Unclosed '<<' tag ('<<' must be escaped as '\\<<')"
PARAMETER_TYPES = ("string", "boolean", "integer", "enum", "executor", "steps", "env_var_name")
PIPELINE_PARAMETER_TYPES = ("string", "boolean", "integer", "enum")
EXECUTOR_PARAMETER_TYPES = ("string", "enum", "boolean")
MAX_PIPELINE_PARAMETERS, MAX_PIPELINE_KEY, MAX_PIPELINE_VALUE = 100, 128, 512
MAX_LOGIC_DEPTH = 100
MAX_ORB_DEPTH = 10

_TOKEN = re.compile(r"\\<<|<<([#^/]?)[ \t]*((?:(?!<<)[^\n])*?)[ \t]*>>|<<")
_WHOLE = re.compile(r"<<\s*([A-Za-z0-9_.\-]+)\s*>>")
_REF = re.compile(r"(parameters|matrix|pipeline)\.([A-Za-z0-9_.\-]+)")
_EXPRESSION = re.compile(r"==|!=|\s(?:and|or)\s|^not\s|starts-with|\(")
_ELEMENT_NAME = re.compile(r"[A-Za-z][a-z0-9_-]*")
_JOB_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")  # uppercase job names: CCI warns, we accept
_ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INTEGER = re.compile(r"[+-]?\d+")
_ORB_REF = re.compile(r"[a-z0-9_-]+/[a-z0-9_-]+@\S+")
_TRUE = frozenset(("y", "yes", "true", "on"))
_FALSE = frozenset(("n", "no", "false", "off"))
_LOGIC_OPS = frozenset(("and", "or", "not", "equal", "matches"))
_RESERVED = frozenset(("name", "requires", "context", "type", "filters", "matrix", "pre-steps", "post-steps"))
_KEPT_OPTIONS = ("requires", "context", "filters", "type")  # invocation keys that stay in workflows
_BUILTIN_STEPS = frozenset(
    (
        "run", "checkout", "deploy", "save_cache", "restore_cache", "store_artifacts",
        "store_test_results", "persist_to_workspace", "attach_workspace", "add_ssh_keys",
        "setup_remote_docker",
    )
)  # fmt: skip
_PIPELINE_FIELDS = {
    "id": "id",
    "number": "number",
    "project.git_url": "project_git_url",
    "project.type": "project_type",
    "git.tag": "git_tag",
    "git.branch": "git_branch",
    "git.branch.is_default": "git_branch_is_default",
    "git.revision": "git_revision",
    "git.base_revision": "git_base_revision",
    "trigger_source": "trigger_source",
    "schedule.name": "schedule_name",
    "schedule.id": "schedule_id",
}


@dataclass(frozen=True, kw_only=True)
class PipelineValues:
    """The `<< pipeline.* >>` values of one pipeline (spec 7.8); None means "absent"."""

    id: str = ""
    number: int = 0
    project_git_url: str = ""
    project_type: str = "github"
    git_tag: str = ""  # "" when the build is not for a tag
    git_branch: str = ""
    git_branch_is_default: bool | None = None
    git_revision: str = ""
    git_base_revision: str | None = None  # absent the first time and for API triggers
    trigger_source: str = "webhook"  # webhook | api | scheduled_pipeline
    schedule_name: str = ""
    schedule_id: str = ""

    def lookup(self, dotted: str) -> Any:
        """The value of `pipeline.<dotted>`, e.g. `lookup("git.branch")`; KeyError for unknown names."""
        return getattr(self, _PIPELINE_FIELDS[dotted])


def compile_config(
    config: Config,
    *,
    pipeline: PipelineValues,
    parameters: Mapping[str, Any] | None = None,
    orbs: Mapping[str, str] | None = None,
) -> Config:
    """Compile a 2.1 config to a version "2" Config; a version "2" config is returned unchanged.

    `parameters` are the pipeline parameters of the trigger; `orbs` maps `namespace/name@version`
    to the YAML text of registry orbs. Raises ConfigError listing every problem found.
    """
    if config.version != "2.1":
        return config
    return _Compiler(config, pipeline, dict(parameters or {}), dict(orbs or {})).run()


class _Dumper(_DumperBase):
    """Writes shared objects (from YAML aliases or reused parameter values) out in full."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_config(config: Config) -> str:
    """The YAML text `circleci config process` would print: `version: 2`, `jobs`, `workflows`."""
    document: dict[str, Any] = {"version": 2, "jobs": config.jobs}
    if config.workflows is not None:
        document["workflows"] = config.workflows
    return yaml.dump(
        document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1 << 16
    )


class _TemplateError(Exception):
    pass


@dataclass(frozen=True)
class _Scope:
    """What `<< ... >>` tags can see: the element's parameters, matrix values, pipeline values."""

    params: Mapping[str, Any] | None = None
    matrix: Mapping[str, Any] | None = None
    pipeline: PipelineValues | None = None  # None inside orbs: they never see pipeline scope
    pipeline_params: Mapping[str, Any] = field(default_factory=dict)

    def value(self, ref: str) -> Any:
        match = _REF.fullmatch(ref)
        if match is None:
            if _EXPRESSION.search(ref):
                raise _TemplateError(f"expressions inside '<< >>' are not supported: '<< {ref} >>'")
            raise _TemplateError(
                f"unknown tag '<< {ref} >>': use parameters.x, pipeline.x or matrix.x"
                " ('<<' must be escaped as '\\<<')"
            )
        head, name = match.groups()
        if head == "parameters":
            if self.params is None or name not in self.params:
                raise _TemplateError(f"Arguments referenced without declared parameters: {name}")
            return self.params[name]
        if head == "matrix":
            if self.matrix is None or name not in self.matrix:
                raise _TemplateError(f"unknown matrix parameter: {name}")
            return self.matrix[name]
        if self.pipeline is None:
            raise _TemplateError(f"orbs cannot use pipeline values: pipeline.{name}")
        if name.startswith("parameters."):
            key = name.removeprefix("parameters.")
            if key not in self.pipeline_params:
                raise _TemplateError(f"unknown pipeline parameter: {key}")
            return self.pipeline_params[key]
        try:
            return self.pipeline.lookup(name)
        except KeyError:
            raise _TemplateError(f"unknown pipeline value: pipeline.{name}") from None


def _render(text: str, scope: _Scope) -> Any:
    """Substitute the tags of one string (spec 7.2)."""
    whole = _WHOLE.fullmatch(text.strip())
    if whole is not None:
        return scope.value(whole.group(1))
    out: list[str] = []
    stack: list[tuple[str, bool]] = []  # open sections: (reference, output active before it)
    active, pos = True, 0
    for match in _TOKEN.finditer(text):
        if active:
            out.append(text[pos : match.start()])
        pos = match.end()
        kind, ref = match.group(1), match.group(2)
        if match.group(0) == "\\<<":
            if active:
                out.append("<<")
        elif ref is None:
            raise _TemplateError(UNCLOSED)
        elif kind in ("#", "^"):
            value = scope.value(ref)
            stack.append((ref, active))
            active = active and _truthy(value) == (kind == "#")
        elif kind == "/":
            if not stack or stack[-1][0] != ref:
                raise _TemplateError(f"'<</ {ref} >>' closes no open section")
            active = stack.pop()[1]
        else:
            value = scope.value(ref)
            if active:
                out.append(_text(value, ref))
    if stack:
        raise _TemplateError(f"section '<<# {stack[-1][0]} >>' is never closed with '<</ {stack[-1][0]} >>'")
    if active:
        out.append(text[pos:])
    return "".join(out)


def _text(value: Any, ref: str = "") -> str:
    """A value spliced into text: booleans true/false, decimal numbers, `<nil>` for absent."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str | int | float):
        return str(value)
    raise _TemplateError(f"'<< {ref} >>' is a list or map and cannot be used inside text")


def _truthy(value: Any) -> bool:
    """Spec 7.6: false, null, 0, NaN and "" are falsy; everything else is truthy."""
    if value is None or value is False or value == "":
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return not (value == 0 or math.isnan(value))
    return True


def _same(a: Any, b: Any) -> bool:
    """Equality that does not take true for 1."""
    return isinstance(a, bool) == isinstance(b, bool) and bool(a == b)


@dataclass
class _Namespace:
    """The config itself or one orb: its elements, its own orbs, and where it lives."""

    prefix: str  # "" for the config, "alias/" for an orb
    path: str  # key path prefix: "" or "orbs.alias."
    pipeline: bool  # whether its templates may use pipeline values
    parent: _Namespace | None = None
    commands: dict[str, Any] = field(default_factory=dict)
    executors: dict[str, Any] = field(default_factory=dict)
    jobs: dict[str, Any] = field(default_factory=dict)
    orbs: dict[str, _Namespace] = field(default_factory=dict)


class _Compiler:
    """One compilation: state shared by the steps of spec 7.1."""

    def __init__(self, config: Config, pipeline: PipelineValues, given: dict[str, Any], orbs: dict[str, str]):
        self.config, self.pipeline, self.orb_texts = config, pipeline, orbs
        self.problems: list[Problem] = []
        self.seen: set[tuple[str, str]] = set()
        self.tagged: dict[int, tuple[Any, bool]] = {}
        self.declared: dict[str, dict[str, dict[str, Any]]] = {}
        self.expanded: dict[tuple[Any, ...], list[Any]] = {}  # (command, arguments) -> its steps
        self.pipeline_params = self._pipeline_parameters(given)
        self.top = _Scope(pipeline=pipeline, pipeline_params=self.pipeline_params)
        self.root = self._namespace(config.raw, "", "", True, None, 0)
        self.jobs: dict[str, Any] = {}

    # -- problems and scopes ------------------------------------------------------------------

    def add(self, message: str, path: str = "") -> None:
        if (message, path) in self.seen:
            return
        self.seen.add((message, path))
        line = self.config.line_of(path) if path else None
        self.problems.append(Problem(message=message, path=path, line=line, file=self.config.filename))

    def scope(self, ns: _Namespace, params: Mapping[str, Any]) -> _Scope:
        return _Scope(
            params=params,
            pipeline=self.pipeline if ns.pipeline else None,
            pipeline_params=self.pipeline_params,
        )

    def has_tags(self, value: Any) -> bool:
        """Whether any string in `value` contains `<<`; memoised, as definitions are expanded often."""
        if isinstance(value, str):
            return "<<" in value
        if not isinstance(value, dict | list):
            return False
        known = self.tagged.get(id(value))
        if known is None:
            items = itertools.chain(value.keys(), value.values()) if isinstance(value, dict) else value
            known = (value, any(self.has_tags(item) for item in items))  # holding value keeps its id
            self.tagged[id(value)] = known
        return known[1]

    def subst(self, value: Any, scope: _Scope, path: str) -> Any:
        """`value` with the tags of every string (keys too) substituted; never changes `value`.

        Parts without tags are shared with `value`, not copied: treat the result as read-only
        below its top level.
        """
        if not self.has_tags(value):
            return value
        if isinstance(value, str):
            if "<<" not in value:
                return value
            try:
                return _render(value, scope)
            except _TemplateError as exc:
                self.add(str(exc), path)
                return value
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if isinstance(key, str) and "<<" in key:
                    key = self.subst(key, scope, f"{path}.{key}")
                    key = key if isinstance(key, str) else _text(key)
                out[key] = self.subst(item, scope, f"{path}.{key}")
            return out
        if isinstance(value, list):
            return [self.subst(item, scope, f"{path}[{i}]") for i, item in enumerate(value)]
        return value

    # -- the whole run ------------------------------------------------------------------------

    def run(self) -> Config:
        workflows = self.config.workflows
        compiled: dict[str, Any] | None = None
        if workflows is None:
            for name, body in self.root.jobs.items():
                decls = body.get("parameters") if isinstance(body, dict) else None
                if isinstance(decls, dict) and any(
                    isinstance(d, dict) and "default" not in d for d in decls.values()
                ):
                    continue  # needs arguments only a workflow can give
                job = self.job(name, {}, None, None, f"jobs.{name}")
                if job is not None:
                    self.jobs[name] = job
        else:
            compiled = {"version": 2}
            for name, body in workflows.items():
                if name != "version":
                    workflow = self.workflow(str(name), body)
                    if workflow is not None:
                        compiled[str(name)] = workflow
        if self.problems:
            raise ConfigError(self.problems)
        raw: dict[str, Any] = {"version": 2, "jobs": self.jobs}
        if compiled is not None:
            raw["workflows"] = compiled
        if "notify" in self.config.raw:
            raw["notify"] = self.config.raw["notify"]
        # `text` stays empty: rendering costs as much as compiling; `render_config` gives it.
        return Config(
            version="2", jobs=self.jobs, workflows=compiled, raw=raw, text="", filename=self.config.filename
        )

    # -- parameters (spec 7.3) ----------------------------------------------------------------

    def _pipeline_parameters(self, given: dict[str, Any]) -> dict[str, Any]:
        decls = self.declarations(self.config.raw.get("parameters"), "parameters", PIPELINE_PARAMETER_TYPES)
        if len(decls) > MAX_PIPELINE_PARAMETERS or len(given) > MAX_PIPELINE_PARAMETERS:
            self.add(f"at most {MAX_PIPELINE_PARAMETERS} pipeline parameters are allowed", "parameters")
        for key, value in given.items():
            if len(str(key)) > MAX_PIPELINE_KEY:
                self.add(
                    f"pipeline parameter name longer than {MAX_PIPELINE_KEY} characters: {str(key)[:40]}…"
                )
            if isinstance(value, str) and len(value) > MAX_PIPELINE_VALUE:
                self.add(f"pipeline parameter {key}: value longer than {MAX_PIPELINE_VALUE} characters")
        return self.bind(decls, given, "parameters", None)

    def declarations(
        self, decls: Any, path: str, types: tuple[str, ...] = PARAMETER_TYPES, *, job: bool = False
    ) -> dict[str, dict[str, Any]]:
        """The valid parameter declarations of an element; problems for the others (memoised by path)."""
        if decls is None:
            return {}
        if path not in self.declared:
            self.declared[path] = self._declarations(decls, path, types, job=job)
        return self.declared[path]

    def _declarations(
        self, decls: Any, path: str, types: tuple[str, ...], *, job: bool
    ) -> dict[str, dict[str, Any]]:
        if not isinstance(decls, dict):
            self.add("`parameters` must be a mapping of names to declarations", path)
            return {}
        out: dict[str, dict[str, Any]] = {}
        for name, decl in decls.items():
            at = f"{path}.{name}"
            if not isinstance(name, str) or not _ELEMENT_NAME.fullmatch(name):
                self.add(
                    f"invalid parameter name {name!r}: a letter, then lowercase letters, digits, _ or -", at
                )
                continue
            if job and name in _RESERVED:
                self.add(f"`{name}` is reserved and cannot be a job parameter", at)
                continue
            if not isinstance(decl, dict):
                self.add(f"parameter {name}: a declaration must be a mapping with `type`", at)
                continue
            kind = decl.get("type")
            if kind not in types:
                self.add(
                    f"parameter {name}: `type` must be one of {', '.join(types)}, not {kind!r}", f"{at}.type"
                )
                continue
            if kind == "enum":
                values = decl.get("enum")
                if not isinstance(values, list) or not values:
                    self.add(f"parameter {name}: an enum needs a non-empty `enum` list", f"{at}.enum")
                    continue
            if "default" in decl:
                _, error = _coerce(decl, decl["default"])
                if error:
                    self.add(f"parameter {name}: default {error}", f"{at}.default")
                    continue
            out[name] = decl
        return out

    def bind(
        self, decls: dict[str, dict[str, Any]], args: Mapping[str, Any], path: str, ns: _Namespace | None
    ) -> dict[str, Any]:
        """Arguments + defaults -> parameter values, checked against the declarations."""
        unexpected = [str(k) for k in args if k not in decls]
        if unexpected:
            self.add(f"Unexpected argument(s): {', '.join(unexpected)}", path)
        missing = [name for name, decl in decls.items() if name not in args and "default" not in decl]
        if missing:
            self.add(f"Missing required argument(s): {', '.join(missing)}", path)
        bound: dict[str, Any] = {}
        for name, decl in decls.items():
            if name in args:
                value = args[name]
            elif "default" in decl:
                value = decl["default"]
                if ns is not None and isinstance(value, str) and "<<" in value:  # pipeline values only
                    value = self.subst(value, self.scope(ns, {}), f"{path}.{name}")
            else:
                continue
            value, error = _coerce(decl, value)
            if error:
                self.add(f"argument {name}: {error}", path)
            bound[name] = value
        return bound

    # -- namespaces and orbs (spec 7.5) -------------------------------------------------------

    def _namespace(
        self,
        body: dict[str, Any],
        prefix: str,
        path: str,
        pipeline: bool,
        parent: _Namespace | None,
        depth: int,
    ) -> _Namespace:
        ns = _Namespace(prefix=prefix, path=path, pipeline=pipeline, parent=parent)
        for section in ("commands", "executors", "jobs"):
            elements = body.get(section)
            if elements is None:
                continue
            if not isinstance(elements, dict):
                self.add(f"`{section}` must be a mapping of names to definitions", f"{path}{section}")
                continue
            pattern = _JOB_NAME if section == "jobs" else _ELEMENT_NAME
            for name, element in elements.items():
                if not isinstance(name, str) or not pattern.fullmatch(name):
                    what = section.removesuffix("s")
                    self.add(
                        f"invalid {what} name {name!r}: a letter, then lowercase letters, digits, _ or -",
                        f"{path}{section}.{name}",
                    )
                getattr(ns, section)[str(name)] = element
        declared = body.get("orbs")
        if declared is None:
            return ns
        if not isinstance(declared, dict):
            self.add("`orbs` must be a mapping of aliases to orbs", f"{path}orbs")
            return ns
        for alias, orb in declared.items():
            at = f"{path}orbs.{alias}"
            if depth >= MAX_ORB_DEPTH:
                self.add(f"orbs nested deeper than {MAX_ORB_DEPTH}", at)
                break
            if isinstance(orb, str) and pipeline:
                orb = self.subst(orb, self.top, at)
            if isinstance(orb, str):
                orb = self._registry_orb(orb, at)
            elif not isinstance(orb, dict):
                self.add("an orb is a `namespace/name@version` string or an inline orb mapping", at)
                continue
            if orb is not None:
                ns.orbs[str(alias)] = self._namespace(
                    orb, f"{prefix}{alias}/", f"{at}.", False, ns, depth + 1
                )
        return ns

    def _registry_orb(self, ref: str, path: str) -> dict[str, Any] | None:
        if not _ORB_REF.fullmatch(ref):
            self.add(f"invalid orb reference {ref!r}: expected namespace/name@version", path)
            return None
        text = self.orb_texts.get(ref)
        if text is None:
            self.add(f"Cannot find orb {ref}", path)
            return None
        try:
            data, _ = load_yaml(text, filename=ref)
        except ConfigError as exc:
            for problem in exc.problems:
                self.add(f"orb {ref}: {problem.message}", path)
            return None
        if not isinstance(data, dict):
            self.add(f"orb {ref} must be a mapping", path)
            return None
        return data

    def resolve(self, ns: _Namespace, section: str, name: str) -> tuple[_Namespace, Any, str] | None:
        """`name` or `alias/name` -> (owning namespace, definition, key path); own orb first."""
        if "/" in name:
            alias, _, rest = name.partition("/")
            scope: _Namespace | None = ns
            while scope is not None:
                if alias in scope.orbs:
                    return self.resolve_in(scope.orbs[alias], section, rest)
                scope = scope.parent
            return None
        scope = ns
        while scope is not None:
            found = self.resolve_in(scope, section, name)
            if found is not None:
                return found
            scope = scope.parent
        return None

    def resolve_in(self, ns: _Namespace, section: str, name: str) -> tuple[_Namespace, Any, str] | None:
        if "/" in name:
            return self.resolve(ns, section, name) if name.partition("/")[0] in ns.orbs else None
        elements: dict[str, Any] = getattr(ns, section)
        if name in elements:
            return ns, elements[name], f"{ns.path}{section}.{name}"
        return None

    # -- jobs, executors, steps (spec 7.4) ----------------------------------------------------

    def job(self, ref: str, args: Mapping[str, Any], pre: Any, post: Any, path: str) -> dict[str, Any] | None:
        """One invocation of job `ref` -> a 2.0-shaped job (None after recording a problem)."""
        found = self.resolve(self.root, "jobs", ref)
        if found is None:
            self.add(f"job {ref!r} is not defined", path)
            return None
        ns, body, at = found
        if not isinstance(body, dict):
            self.add("a job must be a mapping", at)
            return None
        decls = self.declarations(body.get("parameters"), f"{at}.parameters", job=True)
        bound = self.bind(decls, args, path, ns)
        job = dict(
            self.subst(
                {k: v for k, v in body.items() if k not in ("parameters", "description")},
                self.scope(ns, bound),
                at,
            )
        )
        if "executor" in job:
            executor = self.executor(ns, job.pop("executor"), f"{at}.executor")
            environment = job.get("environment")
            job = {**executor, **job}
            if isinstance(executor.get("environment"), dict | list) and isinstance(environment, dict | list):
                job["environment"] = {**_env_map(executor["environment"]), **_env_map(environment)}
        steps = self.steps(job.get("steps"), ns, f"{at}.steps", ())
        if pre is not None or post is not None:
            steps = (
                self.steps(pre, self.root, f"{path}.pre-steps", ())
                + steps
                + self.steps(post, self.root, f"{path}.post-steps", ())
            )
        if "steps" in job or pre is not None or post is not None:
            job["steps"] = steps
        return job

    def executor(self, ns: _Namespace, value: Any, path: str) -> dict[str, Any]:
        if isinstance(value, str):
            name, args = value, {}
        elif isinstance(value, dict) and isinstance(value.get("name"), str):
            name, args = value["name"], {k: v for k, v in value.items() if k != "name"}
        else:
            self.add("`executor` must be an executor name or a mapping with `name`", path)
            return {}
        found = self.resolve(ns, "executors", name)
        if found is None:
            self.add(f"executor {name!r} is not defined", path)
            return {}
        owner, body, at = found
        if not isinstance(body, dict):
            self.add("an executor must be a mapping", at)
            return {}
        decls = self.declarations(body.get("parameters"), f"{at}.parameters", EXECUTOR_PARAMETER_TYPES)
        bound = self.bind(decls, args, path, owner)
        definition = {k: v for k, v in body.items() if k not in ("parameters", "description")}
        return dict(self.subst(definition, self.scope(owner, bound), at))

    def steps(self, steps: Any, ns: _Namespace, path: str, stack: tuple[str, ...]) -> list[Any]:
        """Expand commands, `steps` splices and when/unless steps; `stack` = commands being expanded."""
        if steps is None:
            return []
        if not isinstance(steps, list):
            self.add("`steps` must be a list of steps", path)
            return []
        out: list[Any] = []
        for index, step in enumerate(steps):
            at = f"{path}[{index}]"
            if isinstance(step, str):
                name, args = step, None
            elif isinstance(step, dict) and len(step) == 1:
                ((name, args),) = step.items()
            else:
                out.append(step)  # malformed: plan_job says why
                continue
            if name == "steps":
                out += self.steps(args, ns, f"{at}.steps", stack)
                continue
            if name in ("when", "unless"):
                if not isinstance(args, dict) or "condition" not in args:
                    self.add(f"a `{name}` step needs `condition` and `steps`", f"{at}.{name}")
                    continue
                if self.logic(args["condition"], f"{at}.{name}.condition") == (name == "when"):
                    out += self.steps(args.get("steps"), ns, f"{at}.{name}.steps", stack)
                continue
            found = self.resolve(ns, "commands", name) if isinstance(name, str) else None
            if found is None:
                if name in _BUILTIN_STEPS:
                    out.append(step)
                else:
                    self.add(f"unknown step or command {name!r}", at)
                continue
            owner, body, definition = found
            if definition in stack:
                chain = " -> ".join(p.rpartition("commands.")[2] for p in (*stack, definition))
                self.add(f"command recursion: {chain}", at)
                continue
            if args is None:
                args = {}
            if not isinstance(args, dict) or not isinstance(body, dict):
                self.add(f"command {name!r} takes a mapping of arguments and must define `steps`", at)
                continue
            decls = self.declarations(body.get("parameters"), f"{definition}.parameters")
            bound = self.bind(decls, args, at, owner)
            if "steps" not in body:
                self.add("a command needs `steps`", definition)
                continue
            key = _memo_key(definition, bound)
            if key is not None and key in self.expanded:
                out += self.expanded[key]
                continue
            expanded = self.subst(body["steps"], self.scope(owner, bound), f"{definition}.steps")
            result = self.steps(expanded, owner, f"{definition}.steps", (*stack, definition))
            if key is not None:
                self.expanded[key] = result
            out += result
        return out

    # -- logic statements (spec 7.6) ----------------------------------------------------------

    def logic(self, statement: Any, path: str, depth: int = 0) -> bool:
        return _truthy(self.evaluate(statement, path, depth))

    def evaluate(self, statement: Any, path: str, depth: int) -> Any:
        if depth > MAX_LOGIC_DEPTH:
            self.add(f"logic statement nested deeper than {MAX_LOGIC_DEPTH}", path)
            return False
        if isinstance(statement, list) and not statement:
            self.add("a logic statement cannot be an empty list", path)
            return False
        if not isinstance(statement, dict) or not _LOGIC_OPS.intersection(statement):
            return statement
        if len(statement) != 1:
            self.add("a logic statement takes exactly one of and, or, not, equal, matches", path)
            return False
        ((op, arg),) = statement.items()
        at = f"{path}.{op}"
        if arg is None:
            return False  # a statement with no arguments is falsy
        if op == "not":
            return not self.logic(arg, at, depth + 1)
        if op == "matches":
            if not isinstance(arg, dict) or not isinstance(arg.get("pattern"), str) or "value" not in arg:
                self.add("`matches` takes `pattern` (a string) and `value`", at)
                return False
            try:
                return (
                    re.fullmatch(arg["pattern"], _text(self.evaluate(arg["value"], at, depth + 1)))
                    is not None
                )
            except (re.error, _TemplateError) as exc:
                self.add(f"`matches`: {exc}", at)
                return False
        if not isinstance(arg, list):
            self.add(f"`{op}` takes a list of statements", at)
            return False
        if not arg:
            self.add(f"`{op}` takes a list of statements, not an empty list", at)
            return False
        if op == "equal":
            values = [self.evaluate(item, f"{at}[{i}]", depth + 1) for i, item in enumerate(arg)]
            return all(_same(values[0], value) for value in values[1:])
        results = [self.logic(item, f"{at}[{i}]", depth + 1) for i, item in enumerate(arg)]
        return all(results) if op == "and" else any(results)

    # -- workflows and matrix (spec 5.7, 7.7) -------------------------------------------------

    def workflow(self, name: str, body: Any) -> dict[str, Any] | None:
        at = f"workflows.{name}"
        if not isinstance(body, dict):
            self.add("a workflow must be a mapping with `jobs`", at)
            return None
        for key, keep_if in (("when", True), ("unless", False)):
            if (
                key in body
                and self.logic(self.subst(body[key], self.top, f"{at}.{key}"), f"{at}.{key}") != keep_if
            ):
                return None
        entries = body.get("jobs")
        if not isinstance(entries, list):
            self.add("a workflow needs a list of `jobs`", f"{at}.jobs")
            return None
        invocations: list[tuple[str, dict[str, Any], str]] = []  # (final name, options, path)
        targets: dict[str, list[str]] = {}  # requirable name -> final names
        plain: dict[str, int] = {}  # job invoked without name or matrix -> how often
        used: set[str] = set()
        for index, entry in enumerate(entries):
            parsed = self._entry(entry, f"{at}.jobs[{index}]")
            if parsed is None:
                continue
            ref, options, path = parsed
            matrix = options.get("matrix")
            combos: list[dict[str, Any] | None] = [None]
            if matrix is not None:
                combos = list(self._matrix(self.subst(matrix, self.top, f"{path}.matrix"), f"{path}.matrix"))
            alias = matrix.get("alias", ref) if isinstance(matrix, dict) else None
            for combo in combos:
                scope = _Scope(matrix=combo, pipeline=self.pipeline, pipeline_params=self.pipeline_params)
                given = self.subst({k: v for k, v in options.items() if k != "matrix"}, scope, path)
                args = {**{k: v for k, v in given.items() if k not in _RESERVED}, **(combo or {})}
                job = None
                if given.get("type") != "approval":
                    job = self.job(ref, args, given.get("pre-steps"), given.get("post-steps"), path)
                    if job is None:
                        continue
                explicit = given.get("name")
                if explicit is not None and _text(explicit) in used:
                    self.add(f"workflow {name} has two jobs named {_text(explicit)!r}", f"{path}.name")
                    continue
                if explicit is not None:
                    base = _text(explicit)
                elif combo:
                    base = "-".join([ref, *(_text(combo[k]) for k in sorted(combo))])
                else:
                    base = ref
                    plain[ref] = plain.get(ref, 0) + 1
                final = self._allocate(base, job, used)
                used.add(final)
                if job is not None:
                    self.jobs[final] = job
                targets.setdefault(final, []).append(final)
                if alias is not None and alias != final:
                    targets.setdefault(str(alias), []).append(final)
                if explicit is not None and base != final:
                    targets.setdefault(base, []).append(final)
                invocations.append((final, given, path))
        ambiguous = {ref for ref, count in plain.items() if count > 1}
        jobs: list[Any] = []
        for final, given, path in invocations:
            options = {k: given[k] for k in _KEPT_OPTIONS if k in given}
            if "requires" in options:
                options["requires"] = self._requires(options["requires"], targets, ambiguous, name, path)
            jobs.append({final: options} if options else final)
        workflow = {k: v for k, v in body.items() if k not in ("jobs", "when", "unless")}
        workflow["jobs"] = jobs
        return workflow

    def _entry(self, entry: Any, path: str) -> tuple[str, dict[str, Any], str] | None:
        if isinstance(entry, str):
            return entry, {}, path
        if not isinstance(entry, dict) or not entry or not isinstance(next(iter(entry)), str):
            self.add("a workflow job is a job name or a mapping of one job name to its options", path)
            return None
        ref = next(iter(entry))
        options = entry[ref]
        if options is not None and not isinstance(options, dict):
            self.add(f"the options of {ref!r} must be a mapping", f"{path}.{ref}")
            return None
        # spec 5.1: extra sibling keys (mis-indentation) are the job's options
        siblings = {k: v for k, v in entry.items() if k != ref}
        return ref, {**siblings, **(options or {})}, f"{path}.{ref}"

    def _matrix(self, matrix: Any, path: str) -> list[dict[str, Any]]:
        if (
            not isinstance(matrix, dict)
            or not isinstance(matrix.get("parameters"), dict)
            or not matrix["parameters"]
        ):
            self.add("`matrix` needs `parameters`: a mapping of parameter names to lists of values", path)
            return []
        params: dict[str, Any] = matrix["parameters"]
        for key, values in params.items():
            if not isinstance(values, list) or not values:
                self.add(
                    f"matrix parameter {key} must be a non-empty list of values", f"{path}.parameters.{key}"
                )
                return []
        excludes = matrix.get("exclude") or []
        if not isinstance(excludes, list) or not all(isinstance(e, dict) for e in excludes):
            self.add("`exclude` must be a list of parameter mappings", f"{path}.exclude")
            excludes = []
        combos = []
        for values in itertools.product(*params.values()):
            combo = dict(zip(params, values, strict=True))
            if not any(_same_map(combo, excluded) for excluded in excludes):
                combos.append(combo)
        return combos

    def _allocate(self, base: str, job: dict[str, Any] | None, used: set[str]) -> str:
        """`base`, `base-1`, `base-2`, ...: the first free in this workflow and not another job's."""
        for n in itertools.count():
            name = base if n == 0 else f"{base}-{n}"
            if name not in used and (job is None or name not in self.jobs or self.jobs[name] == job):
                return name
        raise AssertionError("unreachable")  # pragma: no cover

    def _requires(
        self, requires: Any, targets: dict[str, list[str]], ambiguous: set[str], workflow: str, path: str
    ) -> list[Any]:
        if not isinstance(requires, list):
            self.add("`requires` must be a list of job names", f"{path}.requires")
            return []
        out: list[Any] = []
        for required in requires:
            if not isinstance(required, str):
                out.append(required)
            elif required in ambiguous:
                self.add(
                    f"job {required!r} is invoked more than once in workflow {workflow}; "
                    "give the required invocation a `name:`",
                    f"{path}.requires",
                )
            elif required not in targets:
                self.add(
                    f"`requires` names {required!r}, which is not a job of workflow {workflow}",
                    f"{path}.requires",
                )
            else:
                out += [name for name in targets[required] if name not in out]
        return out


def _memo_key(definition: str, bound: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """A key for a command expanded with scalar arguments (None when an argument is a list or map)."""
    items = []
    for name, value in bound.items():
        if isinstance(value, dict | list):
            return None
        items.append((name, type(value), value))
    return (definition, *sorted(items, key=lambda item: item[0]))


def _same_map(combo: dict[str, Any], excluded: dict[str, Any]) -> bool:
    return combo.keys() == excluded.keys() and all(_same(combo[k], excluded[k]) for k in combo)


def _coerce(decl: Mapping[str, Any], value: Any) -> tuple[Any, str | None]:
    """A value checked against a parameter declaration: (value as typed, error or None)."""
    kind = decl["type"]
    if kind == "string":
        if isinstance(value, bool):
            return value, f"must be a string, not {_text(value)} (quote it)"
        if value is None:
            return "", None
        if isinstance(value, int | float):
            return _text(value), None
        return (value, None) if isinstance(value, str) else (value, f"must be a string, not {value!r}")
    if kind == "boolean":
        if isinstance(value, bool):
            return value, None
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE, None
        return value, f"must be a boolean, not {value!r}"
    if kind == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value, None
        if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            return int(value), None
        return value, f"must be an integer, not {value!r}"
    if kind == "enum":
        allowed = [_text(v) for v in decl.get("enum") or [] if not isinstance(v, dict | list)]
        text = _text(value) if isinstance(value, str | int | float | bool) else None
        if text not in allowed:
            return value, f"must be one of {', '.join(allowed)}, not {value!r}"
        return text, None
    if kind == "executor":
        if isinstance(value, str) or (isinstance(value, dict) and isinstance(value.get("name"), str)):
            return value, None
        return value, f"must be an executor name or a mapping with `name`, not {value!r}"
    if kind == "steps":
        if value is None:
            return [], None
        return (value, None) if isinstance(value, list) else (value, "must be a list of steps")
    if isinstance(value, str) and _ENV_VAR_NAME.fullmatch(value):  # env_var_name
        return value, None
    return value, f"must be an environment variable name, not {value!r}"


def _env_map(environment: Any) -> dict[Any, Any]:
    """An environment in any of its forms as one mapping (for the executor merge)."""
    if isinstance(environment, dict):
        return dict(environment)
    out: dict[Any, Any] = {}
    for item in environment:
        if isinstance(item, dict):
            out.update(item)
        elif isinstance(item, str) and "=" in item:
            key, _, value = item.partition("=")
            out[key] = value
    return out
