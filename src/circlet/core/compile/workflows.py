"""Workflows: invocations, matrix expansion, job names and `requires` (spec 5.7, 7.7)."""

from __future__ import annotations

import itertools
from typing import Any

from circlet.core.compile.jobs import _Jobs
from circlet.core.compile.parameters import _RESERVED
from circlet.core.compile.template import _same, _Scope, _text

_KEPT_OPTIONS = ("requires", "context", "filters", "type")  # invocation keys that stay in workflows


class _Workflows(_Jobs):
    """Compiles each workflow, naming every job it invokes."""

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


def _same_map(combo: dict[str, Any], excluded: dict[str, Any]) -> bool:
    return combo.keys() == excluded.keys() and all(_same(combo[k], excluded[k]) for k in combo)
