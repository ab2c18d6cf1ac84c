"""The driver: `compile_config` runs one compilation, `render_config` prints its result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from circlet.core.compile.template import PipelineValues, _Scope
from circlet.core.compile.workflows import _Workflows
from circlet.core.config import Config
from circlet.core.errors import ConfigError

try:  # libyaml's emitter when PyYAML has it: rendering a big config stays fast
    from yaml import CSafeDumper as _DumperBase
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeDumper as _DumperBase  # type: ignore[assignment]


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


class _Compiler(_Workflows):
    """One compilation: state shared by the steps of spec 7.1."""

    def __init__(self, config: Config, pipeline: PipelineValues, given: dict[str, Any], orbs: dict[str, str]):
        self.config, self.pipeline, self.orb_texts = config, pipeline, orbs
        self.problems, self.seen, self.tagged, self.declared, self.expanded = [], set(), {}, {}, {}
        self.pipeline_params = self._pipeline_parameters(given)
        self.top = _Scope(pipeline=pipeline, pipeline_params=self.pipeline_params)
        self.root = self._namespace(config.raw, "", "", True, None, 0)
        self.jobs = {}

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
