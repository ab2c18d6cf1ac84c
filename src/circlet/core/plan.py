"""What a runner executes: a job compiled from the config, with nothing left to look up.

`circlet.core.config` builds these from config text; runners (local threads, Celery workers)
receive them as plain data (`to_dict`/`from_dict` carry them across a queue).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

DEFAULT_SHELL = "/bin/bash -eo pipefail"
DEFAULT_NO_OUTPUT_TIMEOUT = 600.0  # seconds (10 minutes)
DEFAULT_WORKING_DIRECTORY = "~/project"


class StepKind(StrEnum):
    """What a planned step does."""

    RUN = "run"  # run a command in a shell
    CHECKOUT = "checkout"  # check the build's revision out into the working directory
    STORE_TEST_RESULTS = "store_test_results"  # record JUnit files
    STORE_ARTIFACTS = "store_artifacts"  # keep files
    SAVE_CACHE = "save_cache"  # save paths under a key
    RESTORE_CACHE = "restore_cache"  # restore paths from a key
    PERSIST_TO_WORKSPACE = "persist_to_workspace"  # hand files to later jobs of a workflow
    ATTACH_WORKSPACE = "attach_workspace"  # take files from earlier jobs of a workflow
    NOOP = "noop"  # recorded and succeeds (add_ssh_keys, setup_remote_docker)


class When(StrEnum):
    """When a step runs, given whether the job has failed so far."""

    ON_SUCCESS = "on_success"  # only while nothing failed (the default)
    ON_FAIL = "on_fail"  # only after a failure
    ALWAYS = "always"  # in every case


@dataclass(frozen=True, kw_only=True)
class PlannedStep:
    """One step of a job as the runner will execute it."""

    kind: StepKind
    name: str
    command: str | None = None  # RUN: the script text
    shell: str | None = None  # RUN: the shell (None = the job's)
    environment: dict[str, str] = field(default_factory=dict)
    working_directory: str | None = None  # relative to the job's working directory, or absolute/~
    no_output_timeout: float = DEFAULT_NO_OUTPUT_TIMEOUT
    background: bool = False
    when: When = When.ON_SUCCESS
    type: str = "test"  # the action `type` shown in the API
    source: str = "config"  # the action `source` shown in the API
    parallel: bool = True  # False: node 0 alone runs it, other nodes record nothing (1.0, config.md 12.1)
    args: dict[str, Any] = field(default_factory=dict)  # other kinds' keys, as written


@dataclass(frozen=True, kw_only=True)
class JobPlan:
    """A job ready to run: executor facts, environment and steps."""

    name: str
    steps: tuple[PlannedStep, ...]
    environment: dict[str, str] = field(default_factory=dict)  # job (+ primary image) environment
    working_directory: str = DEFAULT_WORKING_DIRECTORY
    shell: str | None = None  # None = DEFAULT_SHELL
    parallelism: int = 1
    executor_kind: str = "docker"
    image: str | None = None
    resource_class: str = "medium"
    config_version: str = "2.0"  # "1.0": circle.yml or inferred (config.md 12; no_tests applies)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobPlan:
        steps = tuple(
            PlannedStep(**{**s, "kind": StepKind(s["kind"]), "when": When(s["when"])}) for s in data["steps"]
        )
        return cls(**{**data, "steps": steps})
