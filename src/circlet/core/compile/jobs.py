"""Jobs, executors and steps (spec 7.4), and the logic statements of when/unless (7.6)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from circlet.core.compile.orbs import _Orbs
from circlet.core.compile.parameters import EXECUTOR_PARAMETER_TYPES
from circlet.core.compile.state import _Namespace
from circlet.core.compile.template import _same, _TemplateError, _text, _truthy

MAX_LOGIC_DEPTH = 100

_LOGIC_OPS = frozenset(("and", "or", "not", "equal", "matches"))
_BUILTIN_STEPS = frozenset(
    (
        "run", "checkout", "deploy", "save_cache", "restore_cache", "store_artifacts",
        "store_test_results", "persist_to_workspace", "attach_workspace", "add_ssh_keys",
        "setup_remote_docker",
    )
)  # fmt: skip


class _Jobs(_Orbs):
    """Expands one job invocation: its executor, commands and conditional steps."""

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


def _memo_key(definition: str, bound: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """A key for a command expanded with scalar arguments (None when an argument is a list or map)."""
    items = []
    for name, value in bound.items():
        if isinstance(value, dict | list):
            return None
        items.append((name, type(value), value))
    return (definition, *sorted(items, key=lambda item: item[0]))


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
