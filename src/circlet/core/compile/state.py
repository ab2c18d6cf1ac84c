"""The state one compilation shares, its problems and its substitution of whole values."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from circlet.core.compile.template import PipelineValues, _render, _Scope, _TemplateError, _text
from circlet.core.config import Config
from circlet.core.errors import Problem


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


class _State:
    """What the steps of one compilation share (set by `_Compiler.__init__`): problems and scopes."""

    config: Config
    pipeline: PipelineValues
    orb_texts: dict[str, str]
    problems: list[Problem]
    seen: set[tuple[str, str]]
    tagged: dict[int, tuple[Any, bool]]
    declared: dict[str, dict[str, dict[str, Any]]]
    expanded: dict[tuple[Any, ...], list[Any]]  # (command, arguments) -> its steps
    pipeline_params: dict[str, Any]
    top: _Scope
    root: _Namespace
    jobs: dict[str, Any]

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
