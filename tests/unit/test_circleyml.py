"""circle.yml rules beyond the phases (core/circleyml.py, core/infer.py): general.branches, tag
pushes, parallel defaults, cache_directories, artifacts and test reports. Table-driven."""

from __future__ import annotations

from textwrap import dedent

import pytest
import yaml

from circlet.core import circleyml, circleyml_push
from circlet.core.errors import ConfigError
from circlet.core.infer import infer_plan
from circlet.core.phases import expand_step_paths
from circlet.core.plan import JobPlan, PlannedStep, StepKind, When

PKG_TEST = '{"name": "w", "scripts": {"test": "jest"}}'


def plan_of(text: str, **kw: str) -> JobPlan:
    entries = kw.pop("entries", "")
    texts = {"package.json": PKG_TEST} if "package.json" in entries else {}
    return circleyml.plan_circle_yml(dedent(text), entries.split(), texts, reponame="w", **kw).plan


# ------------------------------------------------------------------ general.branches


@pytest.mark.parametrize(
    ("branches", "branch", "verdict"),
    [
        pytest.param(None, "any", None, id="no-branches"),
        pytest.param({"only": ["main"]}, "main", None, id="only-name"),
        pytest.param({"only": ["main"]}, "main2", "branch-not-whitelisted", id="only-exact"),
        pytest.param({"only": "/rel-.*/"}, "rel-1", None, id="only-regex"),
        pytest.param({"only": ["/rel-.*/"]}, "xrel-1", "branch-not-whitelisted", id="regex-full-match"),
        pytest.param({"ignore": ["/wip.*/", "gh-pages"]}, "wip-x", "branch-blacklisted", id="ignore-regex"),
        pytest.param({"ignore": ["gh-pages"]}, "main", None, id="ignore-other"),
        # With both, only `ignore` counts (2.0's job-level rule, config.md 13 trap 3).
        pytest.param({"only": ["main"], "ignore": ["x"]}, "topic", None, id="both-ignore-wins"),
        pytest.param({"only": ["main"], "ignore": ["main"]}, "main", "branch-blacklisted", id="both-ignored"),
    ],
)
def test_branch_verdict(branches: object, branch: str, verdict: str | None) -> None:
    general = {"general": {"branches": branches}} if branches is not None else {}
    text = yaml.safe_dump({**general, "test": {"override": ["true"]}})
    assert circleyml_push.branch_verdict(text, branch) == verdict


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "general:\n  branches: main\n", "circle.yml:2 (general.branches): `branches` must", id="str"
        ),
        pytest.param(
            "general:\n  branches:\n    allow: [main]\n",
            "circle.yml:3 (general.branches.allow): unknown `branches` key 'allow'",
            id="key",
        ),
        pytest.param(
            "general:\n  branches:\n    only: ['/[/']\n",
            "circle.yml:3 (general.branches.only[0]): invalid regular expression /[/",
            id="regex",
        ),
    ],
)
def test_a_malformed_branches_is_a_problem_of_the_push_and_of_the_plan(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as push:
        circleyml_push.branch_verdict(text, "main")
    with pytest.raises(ConfigError) as plan:
        plan_of(text)
    assert str(push.value.problems[0]).startswith(message)
    assert str(plan.value.problems[0]).startswith(message)


# ------------------------------------------------------------------ tag pushes

DEPLOY = """\
deployment:
  prod:
    branch: main
    commands: [./deploy prod]
  release:
    tag: /v[0-9]+(\\.[0-9]+)*/
    commands: [./deploy release]
  named:
    tag: [nightly]
    commands: [./deploy nightly]
"""


@pytest.mark.parametrize(
    ("text", "tag", "builds", "deploys"),
    [
        pytest.param(DEPLOY, "v1.2", True, "./deploy release", id="regex"),
        pytest.param(DEPLOY, "nightly", True, "./deploy nightly", id="list"),
        pytest.param(DEPLOY, "v1.2-rc", False, None, id="regex-full-match"),
        pytest.param(DEPLOY, "main", False, None, id="branch-sections-do-not-count"),
        pytest.param("test:\n  override: [make]\n", "v1", False, None, id="no-deployment"),
    ],
)
def test_tag_pushes_build_only_for_a_deployment_tag(
    text: str, tag: str, builds: bool, deploys: str | None
) -> None:
    assert circleyml_push.builds_tag(text, tag) is builds
    deployment = [s.name for s in plan_of(text, tag=tag).steps if s.type == "deployment"]
    assert deployment == ([deploys] if deploys else [])


# ------------------------------------------------------------------ parallel defaults

PHASES = """\
machine:
  pre: [echo m]
checkout:
  post: [echo c]
dependencies:
  override: [echo d]
database:
  override: [echo db]
compile:
  override: [echo build]
test:
  pre: [echo tp]
  override:
    - echo t1
    - echo t2:
        parallel: true
    - echo t3:
        parallel: false
deployment:
  all:
    branch: /.*/
    commands:
      - echo ship:
          parallel: true
"""


def test_which_steps_run_on_every_node() -> None:
    plan = plan_of(PHASES, branch="main")
    assert [(s.name, s.parallel) for s in plan.steps] == [
        ("echo m", True),
        ("Checkout code", True),
        ("echo c", True),
        ("echo d", True),
        ("echo db", True),
        ("echo build", True),
        ("echo tp", False),  # test commands: node 0 alone unless `parallel: true`
        ("echo t1", False),
        ("echo t2", True),
        ("echo t3", False),
        ("echo ship", False),  # deployment: node 0 alone, whatever it says
        ("Collect test metadata", True),
        ("Collect artifacts", True),
    ]


def test_inferred_test_commands_run_on_every_node() -> None:
    plan = plan_of("dependencies:\n  pre: [echo d]\n", entries="package.json")
    assert [(s.name, s.parallel) for s in plan.steps if s.type == "test"] == [("npm test", True)]
    assert all(
        s.parallel for s in infer_plan(["package.json"], {"package.json": PKG_TEST}, reponame="w").plan.steps
    )


def test_parallel_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError) as info:
        plan_of("test:\n  override:\n    - make:\n        parallel: yes please\n")
    assert str(info.value.problems[0]).startswith("circle.yml:4 (test.override[0].make.parallel): `parallel`")


# ------------------------------------------------------------------ cache_directories

CACHED = """\
dependencies:
  cache_directories:
    - vendor/bundle
    - ~/.npm
  pre: [echo pre]
  override: [echo install]
  post: [echo post]
test:
  override: [echo test]
"""


@pytest.mark.parametrize(
    ("default_branch", "keys"),
    [
        pytest.param("main", ["circle-1.0-cache-{{ .Branch }}:", "circle-1.0-cache-main:"], id="fallback"),
        pytest.param(None, ["circle-1.0-cache-{{ .Branch }}:"], id="no-default"),
        pytest.param("{{x}}", ["circle-1.0-cache-{{ .Branch }}:"], id="unsafe-default-left-out"),
    ],
)
def test_cache_directories_are_restored_before_and_saved_after_the_dependencies(
    default_branch: str | None, keys: list[str]
) -> None:
    kw = {"default_branch": default_branch} if default_branch else {}
    plan = plan_of(CACHED, branch="topic", **kw)
    shape = [(s.kind, s.name, s.type, s.source, s.parallel) for s in plan.steps]
    assert shape[1:6] == [
        (StepKind.RESTORE_CACHE, "Restore cache", "dependencies", "cache", True),
        (StepKind.RUN, "echo pre", "dependencies", "config", True),
        (StepKind.RUN, "echo install", "dependencies", "config", True),
        (StepKind.RUN, "echo post", "dependencies", "config", True),
        (StepKind.SAVE_CACHE, "Save cache", "dependencies", "cache", False),  # node 0 saves
    ]
    restore, save = plan.steps[1], plan.steps[5]
    assert restore.args == {"keys": keys}
    # A new cache every build (CircleCI 1.0 re-saved it); the restore's prefix takes the newest.
    assert save.args == {
        "key": "circle-1.0-cache-{{ .Branch }}:{{ .BuildNum }}-{{ epoch }}",
        "paths": ["vendor/bundle", "~/.npm"],
        "supersedes": "circle-1.0-cache-{{ .Branch }}:",  # ... and the branch's older ones go
    }
    assert save.args["key"].startswith(keys[0]) and save.args["supersedes"] == keys[0]
    assert (restore.when, save.when) == (When.ON_SUCCESS, When.ON_SUCCESS)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "dependencies:\n  cache_directories: [a, 3]\n",
            "circle.yml:2 (dependencies.cache_directories[1]): must be a path or a list of paths",
            id="cache-number",
        ),
        pytest.param(
            "general:\n  artifacts:\n    - {a: b}\n",
            "circle.yml:3 (general.artifacts[0]): must be a path or a list of paths",
            id="artifact-map",
        ),
        pytest.param(
            "general:\n  artifactz: [a]\n",
            "circle.yml:1 (general): unknown key `artifactz`",
            id="general-typo",
        ),
    ],
)
def test_path_problems(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        plan_of(text)
    assert str(info.value.problems[0]).startswith(message)


def test_no_cache_directories_no_cache_steps() -> None:
    plan = plan_of("dependencies:\n  override: [echo x]\n")
    assert not any(s.kind in (StepKind.RESTORE_CACHE, StepKind.SAVE_CACHE) for s in plan.steps)


# ------------------------------------------------------------------ artifacts and test reports


def test_the_teardown_collects_reports_and_artifacts() -> None:
    plan = plan_of("general:\n  artifacts:\n    - out/report.html\n    - ~/logs\ntest:\n  override: [make]\n")
    teardown = [s for s in plan.steps if s.type == "teardown"]
    assert [(s.kind, s.name, s.source, s.args, s.when) for s in teardown] == [
        (
            StepKind.STORE_TEST_RESULTS,
            "Collect test metadata",
            "template",
            {"path": "$CIRCLE_TEST_REPORTS"},
            When.ALWAYS,
        ),
        (
            StepKind.STORE_ARTIFACTS,
            "Collect artifacts",
            "template",
            {"path": "$CIRCLE_ARTIFACTS", "destination": "$CIRCLE_ARTIFACTS"},
            When.ALWAYS,
        ),
        (
            StepKind.STORE_ARTIFACTS,
            "Collect artifacts: out/report.html",
            "config",
            {"path": "out/report.html"},
            When.ALWAYS,
        ),
        (StepKind.STORE_ARTIFACTS, "Collect artifacts: ~/logs", "config", {"path": "~/logs"}, When.ALWAYS),
    ]
    assert plan.steps[-4:] == tuple(teardown)  # after the last phase
    assert JobPlan.from_dict(plan.to_dict()) == plan


ENV = {"CIRCLE_ARTIFACTS": "/w/node0/circle-artifacts", "HOME": "/w/node0/home"}


@pytest.mark.parametrize(
    ("version", "path", "expanded"),
    [
        pytest.param("1.0", "$CIRCLE_ARTIFACTS", "/w/node0/circle-artifacts", id="bare"),
        pytest.param("1.0", "${CIRCLE_ARTIFACTS}/sub", "/w/node0/circle-artifacts/sub", id="braced"),
        pytest.param("1.0", "$CIRCLE_ARTIFACTSX", "$CIRCLE_ARTIFACTSX", id="unset-kept"),
        pytest.param("1.0", "out/$HOME", "out/$HOME", id="leading-only"),
        pytest.param("2.0", "$CIRCLE_ARTIFACTS", "$CIRCLE_ARTIFACTS", id="2.0-never"),
    ],
)
def test_expand_step_paths(version: str, path: str, expanded: str) -> None:
    step = PlannedStep(kind=StepKind.STORE_ARTIFACTS, name="a", args={"path": path, "destination": "d"})
    plan = JobPlan(name="build", steps=(step,), config_version=version)
    assert expand_step_paths(plan, step, ENV).args == {"path": expanded, "destination": "d"}
