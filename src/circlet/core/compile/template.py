"""Template substitution of `<< ... >>` tags (spec 7.2) and the values tags can see (7.8)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

UNCLOSED = "Unclosed '<<' tag ('<<' must be escaped as '\\<<')"

_TOKEN = re.compile(r"\\<<|<<([#^/]?)[ \t]*((?:(?!<<)[^\n])*?)[ \t]*>>|<<")
_WHOLE = re.compile(r"<<\s*([A-Za-z0-9_.\-]+)\s*>>")
_REF = re.compile(r"(parameters|matrix|pipeline)\.([A-Za-z0-9_.\-]+)")
_EXPRESSION = re.compile(r"==|!=|\s(?:and|or)\s|^not\s|starts-with|\(")
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
