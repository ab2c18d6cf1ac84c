"""Parameter declarations, arguments and their types (spec 7.3)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from circlet.core.compile.state import _Namespace, _State
from circlet.core.compile.template import _text

PARAMETER_TYPES = ("string", "boolean", "integer", "enum", "executor", "steps", "env_var_name")
PIPELINE_PARAMETER_TYPES = ("string", "boolean", "integer", "enum")
EXECUTOR_PARAMETER_TYPES = ("string", "enum", "boolean")
MAX_PIPELINE_PARAMETERS, MAX_PIPELINE_KEY, MAX_PIPELINE_VALUE = 100, 128, 512

_ELEMENT_NAME = re.compile(r"[A-Za-z][a-z0-9_-]*")
_ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INTEGER = re.compile(r"[+-]?\d+")
_TRUE = frozenset(("y", "yes", "true", "on"))
_FALSE = frozenset(("n", "no", "false", "off"))
_RESERVED = frozenset(("name", "requires", "context", "type", "filters", "matrix", "pre-steps", "post-steps"))


class _Parameters(_State):
    """Declarations checked once per element, arguments bound to them."""

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
