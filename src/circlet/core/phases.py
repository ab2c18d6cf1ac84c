"""A CircleCI 1.0 JobPlan (config.md 12.1): its phases, the steps circle.yml and inference plan
(commands, checkout, cache_directories, the teardown) and the rules the runner applies to it.

Pure. Shared by core/infer.py (repositories without a config) and core/circleyml.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import PurePosixPath

from circlet.core.plan import DEFAULT_NO_OUTPUT_TIMEOUT, JobPlan, PlannedStep, StepKind, When

SHELL_1_0 = "/bin/bash"  # config.md 12.1: a new non-login shell per command, no -e
CHECKOUT_NAME = "Checkout code"
# The directories every 1.0 build gets (config.md 4) and collects after its last phase (12.1).
ARTIFACTS_ENV = "CIRCLE_ARTIFACTS"
TEST_REPORTS_ENV = "CIRCLE_TEST_REPORTS"
TEST_METADATA_NAME = "Collect test metadata"
ARTIFACTS_NAME = "Collect artifacts"
_LEADING_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
# dependencies.cache_directories (config.md 12.1): render with runner/cache.py's templates.
CACHE_PREFIX = "circle-1.0-cache-"
RESTORE_CACHE_NAME = "Restore cache"
SAVE_CACHE_NAME = "Save cache"


class Phase(StrEnum):
    """A CircleCI 1.0 phase (config.md 12.1); a step's action `type` is its phase."""

    MACHINE = "machine"  # machine set-up and environment
    CHECKOUT = "checkout"  # the code is checked out
    DEPENDENCIES = "dependencies"  # install what the code needs
    DATABASE = "database"  # set databases up
    COMPILE = "compile"  # build the code
    TEST = "test"  # run the tests (every command runs, even after a failure)
    DEPLOYMENT = "deployment"  # deploy, only when everything before passed


@dataclass(frozen=True, kw_only=True)
class Command:
    """One 1.0 command (from circle.yml or inferred): what runs and the name its step shows."""

    command: str
    name: str = ""  # empty: the command itself

    @property
    def label(self) -> str:
        return self.name or self.command


def checkout_step(reponame: str) -> PlannedStep:
    """The clone of the whole repository into `~/<reponame>` (config.md 12.1), wherever the
    commands then run (`general.build_dir`: plan_1_0)."""
    return PlannedStep(
        kind=StepKind.CHECKOUT,
        name=CHECKOUT_NAME,
        type=Phase.CHECKOUT,
        source="template",
        args={"path": checkout_dir(reponame)},
    )


def checkout_dir(reponame: str) -> str:
    return f"~/{reponame}"


def build_dir_problem(build_dir: object) -> str | None:
    """Why `general.build_dir` cannot be used (None when it can): it must be a relative path
    inside the checkout, so not absolute, not `~...`, and without a `..` component."""
    if not isinstance(build_dir, str) or "\0" in build_dir:
        return "`build_dir` must be a path relative to the repository's top level"
    if build_dir.startswith(("/", "~")) or ".." in PurePosixPath(build_dir).parts:
        return "`build_dir` must be a relative path inside the repository (not absolute, no `~`, no `..`)"
    return None


def clean_build_dir(build_dir: str | None) -> str:
    """`general.build_dir` as a relative path without `.` parts ("" for the top level)."""
    if not build_dir:
        return ""
    parts = [p for p in PurePosixPath(build_dir).parts if p != "."]
    return "/".join(parts)


def command_step(
    command: Command,
    phase: Phase,
    *,
    source: str = "inference",
    environment: Mapping[str, str] | None = None,
    working_directory: str | None = None,
    no_output_timeout: float = DEFAULT_NO_OUTPUT_TIMEOUT,
    background: bool = False,
    parallel: bool = True,
) -> PlannedStep:
    """A 1.0 command as a run step: one shell per command, test commands run after failures;
    `parallel=False`: node 0 alone runs it."""
    return PlannedStep(
        kind=StepKind.RUN,
        name=command.label,
        command=command.command,
        shell=SHELL_1_0,
        type=phase.value,
        source=source,
        when=When.ALWAYS if phase is Phase.TEST else When.ON_SUCCESS,
        environment=dict(environment or {}),
        working_directory=working_directory,
        no_output_timeout=no_output_timeout,
        background=background,
        parallel=parallel,
    )


def teardown_steps(artifacts: tuple[str, ...] = ()) -> tuple[PlannedStep, ...]:
    """What a 1.0 build does after its last phase (config.md 12.1, 12.3), on every node and even
    after a failure (store steps always run, config.md 3.2): read the JUnit reports in
    $CIRCLE_TEST_REPORTS, then store $CIRCLE_ARTIFACTS (named `$CIRCLE_ARTIFACTS/<path inside>`,
    CircleCI 1.0's `pretty_path`) and each `general.artifacts` path (relative to the build dir,
    `~` allowed). The runner puts the directories' paths in (expand_step_paths)."""
    steps = [
        PlannedStep(
            kind=StepKind.STORE_TEST_RESULTS,
            name=TEST_METADATA_NAME,
            type="teardown",
            source="template",
            when=When.ALWAYS,
            args={"path": f"${TEST_REPORTS_ENV}"},
        ),
        PlannedStep(
            kind=StepKind.STORE_ARTIFACTS,
            name=ARTIFACTS_NAME,
            type="teardown",
            source="template",
            when=When.ALWAYS,
            args={"path": f"${ARTIFACTS_ENV}", "destination": f"${ARTIFACTS_ENV}"},
        ),
    ]
    steps.extend(
        PlannedStep(
            kind=StepKind.STORE_ARTIFACTS,
            name=f"{ARTIFACTS_NAME}: {path}",
            type="teardown",
            source="config",
            when=When.ALWAYS,
            args={"path": path},
        )
        for path in artifacts
    )
    return tuple(steps)


def restore_cache_step(default_branch: str | None) -> PlannedStep:
    """circle.yml's `cache_directories`, before the dependencies phase: the newest cache of the
    branch, else of the default branch (circleyml.py says why the key ends with `:`)."""
    keys = [CACHE_PREFIX + "{{ .Branch }}:"]
    if default_branch and "{{" not in default_branch and "}}" not in default_branch:
        keys.append(f"{CACHE_PREFIX}{default_branch}:")
    return PlannedStep(
        kind=StepKind.RESTORE_CACHE,
        name=RESTORE_CACHE_NAME,
        type=Phase.DEPENDENCIES.value,
        source="cache",
        args={"keys": keys, "optional": True},  # a cache that cannot be restored is a warning
    )


def save_cache_step(paths: tuple[str, ...]) -> PlannedStep:
    """After the dependencies phase, from node 0: a new cache every build (CircleCI 1.0 re-saved
    it); the branch's older ones are deleted but the previous one."""
    return PlannedStep(
        kind=StepKind.SAVE_CACHE,
        name=SAVE_CACHE_NAME,
        type=Phase.DEPENDENCIES.value,
        source="cache",
        args={
            "key": CACHE_PREFIX + "{{ .Branch }}:{{ .BuildNum }}-{{ epoch }}",
            "paths": list(paths),
            "supersedes": CACHE_PREFIX + "{{ .Branch }}:",  # older ones of the branch go (cache.py)
        },
        parallel=False,
    )


def expand_step_paths(plan: JobPlan, step: PlannedStep, env: Mapping[str, str]) -> PlannedStep:
    """The step with a leading `$NAME`/`${NAME}` of its `path` replaced by the node's value, in a
    1.0 plan only (its teardown names $CIRCLE_ARTIFACTS, whose folder each node has); any other
    step, or a variable the node does not set, is returned as it is (2.x paths are never
    interpolated, config.md 13 trap 9). Called by the runner before the step's handler."""
    raw = step.args.get("path")
    if plan.config_version != "1.0" or not isinstance(raw, str):
        return step
    found = _LEADING_VAR.match(raw)
    name = found and (found.group(1) or found.group(2))
    if not found or not name or name not in env:
        return step
    return replace(step, args={**step.args, "path": env[name] + raw[found.end() :]})


def plan_1_0(
    job_name: str,
    steps: tuple[PlannedStep, ...],
    *,
    reponame: str,
    environment: Mapping[str, str] | None = None,
    build_dir: str | None = None,
    parallelism: int = 1,
    artifacts: tuple[str, ...] = (),
) -> JobPlan:
    """A 1.0 JobPlan: bash without -e, `steps` then the teardown (teardown_steps, with
    `artifacts` = `general.artifacts`).

    The job's working directory is the checkout, `~/<reponame>` (the checkout step clones the
    whole repository there, and the runner makes the job's directory before the checkout, so it
    must not be a subdirectory of the clone); with a `general.build_dir` every step that would
    use the job's directory uses the build directory instead: commands without `pwd`, relative
    `pwd`s, `cache_directories` and artifact paths are taken inside it (build_dir_problem says
    which build dirs are refused)."""
    inside = clean_build_dir(build_dir)
    return JobPlan(
        name=job_name,
        steps=tuple(_in_build_dir(s, inside) for s in (*steps, *teardown_steps(artifacts))),
        environment=dict(environment or {}),
        working_directory=checkout_dir(reponame),
        shell=SHELL_1_0,
        parallelism=parallelism,
        config_version="1.0",
        image=None,
    )


def _relative_to(path: str, inside: str) -> str:
    """`path` (relative to the build dir) as relative to the checkout; `~`, `$VAR` and absolute
    paths stay as they are."""
    if path.startswith(("/", "~", "$")):
        return path
    return inside if path in ("", ".") else f"{inside}/{path}"


def _in_build_dir(step: PlannedStep, inside: str) -> PlannedStep:
    if not inside or step.kind is StepKind.CHECKOUT:
        return step
    if step.kind is StepKind.RUN:
        return replace(step, working_directory=_relative_to(step.working_directory or "", inside))
    args = dict(step.args)
    if isinstance(args.get("path"), str):
        args["path"] = _relative_to(args["path"], inside)
    if isinstance(args.get("paths"), list):
        args["paths"] = [_relative_to(p, inside) if isinstance(p, str) else p for p in args["paths"]]
    return replace(step, args=args)


# ---------------------------------------------------------------- rules the runner applies


def no_tests(plan: JobPlan) -> bool:
    """config.md 11 rule 5: a 1.0 plan (circle.yml or inferred) with no test command ends
    `no_tests` when nothing else decides its outcome. Never true for 2.x plans."""
    return plan.config_version == "1.0" and not any(
        step.kind is StepKind.RUN and step.type == Phase.TEST for step in plan.steps
    )


def halts_on_failure(plan: JobPlan, step: PlannedStep) -> bool:
    """config.md 12.1: in a 1.0 plan a failed command outside the test phase stops the build
    (test commands all run; they are planned `when: always`)."""
    return plan.config_version == "1.0" and step.type != Phase.TEST
