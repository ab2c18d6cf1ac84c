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

from circlet.core.compile.compiler import compile_config, render_config
from circlet.core.compile.jobs import MAX_LOGIC_DEPTH
from circlet.core.compile.orbs import MAX_ORB_DEPTH
from circlet.core.compile.parameters import (
    EXECUTOR_PARAMETER_TYPES,
    MAX_PIPELINE_KEY,
    MAX_PIPELINE_PARAMETERS,
    MAX_PIPELINE_VALUE,
    PARAMETER_TYPES,
    PIPELINE_PARAMETER_TYPES,
)
from circlet.core.compile.template import UNCLOSED, PipelineValues

__all__ = [
    "EXECUTOR_PARAMETER_TYPES",
    "MAX_LOGIC_DEPTH",
    "MAX_ORB_DEPTH",
    "MAX_PIPELINE_KEY",
    "MAX_PIPELINE_PARAMETERS",
    "MAX_PIPELINE_VALUE",
    "PARAMETER_TYPES",
    "PIPELINE_PARAMETER_TYPES",
    "UNCLOSED",
    "PipelineValues",
    "compile_config",
    "render_config",
]
