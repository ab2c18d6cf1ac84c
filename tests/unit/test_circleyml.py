"""circle.yml rules beyond the phases (core/circleyml.py, core/infer.py): general.branches, tag
pushes, parallel defaults, cache_directories, artifacts and test reports. Table-driven."""

from __future__ import annotations

from textwrap import dedent

import pytest
import yaml

from circlet.core import circleyml, circleyml_push
from circlet.core.config import load_config, plan_job
from circlet.core.errors import ConfigError
from circlet.core.infer import infer_plan
from circlet.core.phases import expand_step_paths, no_tests
from circlet.core.plan import JobPlan, PlannedStep, StepKind, When

PKG_TEST = '{"name": "w", "scripts": {"test": "jest"}}'


def plan_of(text: str, **kw: str) -> JobPlan:
    entries = kw.pop("entries", "")
    texts = {"package.json": PKG_TEST} if "package.json" in entries else {}
    return circleyml.plan_circle_yml(
        dedent(text), entries.split(), texts, reponame="w", username="ada", **kw
    ).plan


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
    assert circleyml_push.builds_tag(text, tag, "ada") is builds
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
    assert restore.args == {"keys": keys, "optional": True}  # a failed restore is a warning
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


# ------------------------------------------------------------------ general.build_dir

BUILD_DIR = """\
general:
  build_dir: {build_dir}
  artifacts: [out, ~/logs]
dependencies:
  cache_directories: [node_modules, ~/.npm]
machine:
  pre: [echo m]
test:
  override:
    - make
    - make sub:
        pwd: sub
    - make home:
        pwd: ~/x
"""


@pytest.mark.parametrize(
    ("build_dir", "inside"),
    [
        pytest.param("app", "app", id="dir"),
        pytest.param("./app/web/", "app/web", id="cleaned"),
        pytest.param("a..b", "a..b", id="dots-in-a-name"),
        pytest.param("'.'", "", id="top-level"),
    ],
)
def test_build_dir_is_where_commands_run_inside_the_whole_checkout(build_dir: str, inside: str) -> None:
    plan = plan_of(BUILD_DIR.format(build_dir=build_dir))
    at = (lambda p: f"{inside}/{p}") if inside else (lambda p: p)
    by_name = {s.name: s for s in plan.steps}
    assert plan.working_directory == "~/w"
    assert by_name["Checkout code"].args == {"path": "~/w"}  # the whole repository, at ~/<reponame>
    assert by_name["echo m"].working_directory == "~"  # machine commands: $HOME
    assert by_name["make"].working_directory == (inside or None)
    assert by_name["make sub"].working_directory == at("sub")
    assert by_name["make home"].working_directory == "~/x"
    assert by_name["Save cache"].args["paths"] == [at("node_modules"), "~/.npm"]
    assert by_name["Collect artifacts: out"].args == {"path": at("out")}
    assert by_name["Collect artifacts: ~/logs"].args == {"path": "~/logs"}
    assert by_name["Collect artifacts"].args["path"] == "$CIRCLE_ARTIFACTS"
    assert circleyml.build_dir_of(BUILD_DIR.format(build_dir=build_dir)) == inside


@pytest.mark.parametrize(
    "build_dir",
    [
        pytest.param("/abs", id="absolute"),
        pytest.param("'~/x'", id="home"),
        pytest.param("'~x'", id="tilde-user"),
        pytest.param("../up", id="up"),
        pytest.param("a/../../b", id="up-inside"),
        pytest.param("5", id="number"),
        pytest.param("[a]", id="list"),
    ],
)
def test_a_build_dir_outside_the_repository_is_a_problem(build_dir: str) -> None:
    text = f"general:\n  build_dir: {build_dir}\n"
    with pytest.raises(ConfigError) as info:
        plan_of(text)
    assert [p.path for p in info.value.problems] == ["general.build_dir"]
    assert str(info.value.problems[0]).startswith("circle.yml:2 (general.build_dir): `build_dir` must")
    assert circleyml.build_dir_of(text) == ""  # inference then looks at the top level


# ------------------------------------------------------------------ deployment owner

OWNED = """\
deployment:
  fork:
    branch: main
    owner: someone-else
    commands: [./deploy fork]
  ours:
    branch: main
    owner: Ada
    commands: [./deploy ours]
  release:
    tag: /v.*/
    owner: someone-else
    commands: [./deploy release]
"""


@pytest.mark.parametrize(
    ("username", "branch", "tag", "deploys", "tag_builds"),
    [
        pytest.param("ada", "main", None, "./deploy ours", None, id="owner-case-insensitive"),
        pytest.param("someone-else", "main", None, "./deploy fork", None, id="first-owned-section"),
        pytest.param("bob", "main", None, None, None, id="not-the-owner"),
        pytest.param(None, "main", None, None, None, id="unknown-username"),
        pytest.param("ada", None, "v1", None, False, id="tag-of-another-owner"),
        pytest.param("Someone-Else", None, "v1", "./deploy release", True, id="tag-of-the-owner"),
    ],
)
def test_a_deployment_owner_must_be_the_projects_username(
    username: str | None, branch: str | None, tag: str | None, deploys: str | None, tag_builds: bool | None
) -> None:
    plan = circleyml.plan_circle_yml(
        OWNED, [], {}, reponame="w", username=username, branch=branch, tag=tag
    ).plan
    assert [s.name for s in plan.steps if s.type == "deployment"] == ([deploys] if deploys else [])
    if tag is not None:
        assert circleyml_push.builds_tag(OWNED, tag, username) is tag_builds


# ------------------------------------------------------------------ command modifiers


@pytest.mark.parametrize(
    ("timeout", "seconds"),
    [
        pytest.param("30", 30.0, id="int"),
        pytest.param("2.5", 2.5, id="float"),
        pytest.param('"1200"', 1200.0, id="numeric-string"),
        pytest.param("' 90 '", 90.0, id="numeric-string-spaces"),
        pytest.param(".inf", None, id="inf"),
        pytest.param("-.inf", None, id="minus-inf"),
        pytest.param(".nan", None, id="nan"),
        pytest.param("0", None, id="zero"),
        pytest.param("-5", None, id="negative"),
        pytest.param('"-5"', None, id="negative-string"),
        pytest.param('"10m"', None, id="duration-string"),
        pytest.param("true", None, id="bool"),
    ],
)
def test_timeout_must_be_a_positive_finite_number(timeout: str, seconds: float | None) -> None:
    text = f"test:\n  override:\n    - make:\n        timeout: {timeout}\n"
    if seconds is None:
        with pytest.raises(ConfigError) as info:
            plan_of(text)
        assert str(info.value.problems[0]).startswith(
            "circle.yml:4 (test.override[0].make.timeout): `timeout` must be a positive number"
        )
    else:
        assert plan_of(text).steps[1].no_output_timeout == seconds


@pytest.mark.parametrize(
    ("timeout", "seconds"),
    [
        pytest.param("90", 90.0, id="seconds"),
        pytest.param('"90"', 90.0, id="seconds-string"),
        pytest.param(".inf", None, id="inf"),
        pytest.param(".nan", None, id="nan"),
        pytest.param("-.inf", None, id="minus-inf"),
        pytest.param("1.0e+400", None, id="overflow-to-inf"),
    ],
)
def test_20_no_output_timeout_must_be_finite(timeout: str, seconds: float | None) -> None:
    run = f"{{command: a, no_output_timeout: {timeout}}}"
    text = f"version: 2\njobs:\n  build:\n    docker: [{{image: x}}]\n    steps:\n      - run: {run}\n"
    if seconds is not None:
        assert plan_job(load_config(text), "build").steps[0].no_output_timeout == seconds
        return
    with pytest.raises(ConfigError) as info:
        plan_job(load_config(text), "build")
    assert info.value.problems[0].path == "jobs.build.steps[0].run.no_output_timeout"
    assert "invalid `no_output_timeout`" in info.value.problems[0].message


@pytest.mark.parametrize(
    ("value", "background"),
    [
        pytest.param("true", True, id="true"),
        pytest.param("false", False, id="false"),
        pytest.param("'false'", None, id="string-false"),
        pytest.param("'true'", None, id="string-true"),
        pytest.param("1", None, id="number"),
    ],
)
def test_background_must_be_a_boolean(value: str, background: bool | None) -> None:
    text = f"test:\n  override:\n    - ./server:\n        background: {value}\n"
    if background is None:
        with pytest.raises(ConfigError) as info:
            plan_of(text)
        assert str(info.value.problems[0]).startswith(
            "circle.yml:4 (test.override[0]../server.background): `background` must be true or false"
        )
    else:
        assert plan_of(text).steps[1].background is background


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        pytest.param("{A_1: x, _B: 2, C: true}", None, id="good"),
        pytest.param("{'A=B': x}", "invalid environment variable name 'A=B'", id="equals"),
        pytest.param("{1A: x}", "invalid environment variable name '1A'", id="digit-first"),
        pytest.param("{'A B': x}", "invalid environment variable name 'A B'", id="space"),
        pytest.param("{5: x}", "invalid environment variable name 5", id="number"),
        pytest.param("{yes: x}", "YAML reads this name", id="bool"),
        pytest.param('{A: "a\\0b"}', "an environment value cannot contain a NUL character", id="nul"),
        pytest.param("{A: [x]}", "an environment value must be a string or a number", id="list"),
    ],
)
def test_environment_names_and_values(env: str, problem: str | None) -> None:
    texts = {
        "machine.environment": f"machine:\n  environment: {env}\n",
        "test.override[0].make.environment": f"test:\n  override:\n    - make:\n        environment: {env}\n",
    }
    for where, text in texts.items():
        if problem is None:
            plan = plan_of(text)
            env_of = plan.environment if where.startswith("machine") else plan.steps[1].environment
            assert env_of == {"A_1": "x", "_B": "2", "C": "true"}
            continue
        with pytest.raises(ConfigError) as info:
            plan_of(text)
        assert len(info.value.problems) == 1
        assert info.value.problems[0].path.startswith(where + ".")
        assert problem in info.value.problems[0].message


# ------------------------------------------------------------------ commands that are not commands


@pytest.mark.parametrize(
    ("override", "tests"),
    [
        pytest.param("['']", [], id="empty"),
        pytest.param("['   ']", [], id="blank"),
        pytest.param("['', make]", ["make"], id="empty-then-make"),
        pytest.param("[{'': {timeout: 5}}]", [], id="empty-with-modifiers"),
    ],
)
def test_an_empty_command_is_dropped_with_a_warning(override: str, tests: list[str]) -> None:
    inference = circleyml.plan_circle_yml(f"test:\n  override: {override}\n", [], {}, reponame="w")
    assert [s.command for s in inference.plan.steps if s.type == "test"] == tests
    assert any("an empty command is ignored" in n for n in inference.inferred.notes)
    # The build's message and the runner's rule agree on whether the build ends no_tests.
    assert no_tests(inference.plan) is (not tests)
    assert (inference.message is not None) is (not tests)


@pytest.mark.parametrize(
    ("command", "where"),
    [
        pytest.param("- 5: {timeout: 3}", "test.override[0]", id="number-key"),
        pytest.param("- ? null\n      : {timeout: 3}", "test.override[0]", id="null-key"),
        pytest.param("- true: {}", "test.override[0]", id="bool-key"),
        pytest.param("- [a, b]", "test.override[0]", id="list"),
    ],
)
def test_a_command_key_must_be_a_string(command: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        plan_of(f"test:\n  override:\n    {command}\n")
    assert [p.path for p in info.value.problems] == [where]
    assert "a command" in info.value.problems[0].message


# ------------------------------------------------------------------ deployment sections, all checked

SECTIONS = """\
deployment:
  prod:
    branch: main
    commands: [./deploy prod]
  staging:
{staging}
"""


@pytest.mark.parametrize(
    ("staging", "where", "message"),
    [
        pytest.param(
            "    branches: [dev]\n    commands: [x]",
            ["deployment.staging.branches", "deployment.staging"],
            "unknown key `branches`",
            id="unknown-key",
        ),
        pytest.param(
            "    branch: '/[/'\n    commands: [x]",
            ["deployment.staging.branch"],
            "invalid regular expression /[/",
            id="bad-regex",
        ),
        pytest.param(
            "    tag: [v1, 3]\n    commands: [x]",
            ["deployment.staging.tag[1]"],
            "`tag` must be a name",
            id="tag-number",
        ),
        pytest.param(
            "    branch: dev\n    commands: [{x: {timeout: .nan}}]",
            ["deployment.staging.commands[0].x.timeout"],
            "`timeout` must be",
            id="bad-command",
        ),
        pytest.param(
            "    branch: dev\n    owner: [a]\n    commands: [x]",
            ["deployment.staging.owner"],
            "`owner` must be",
            id="owner-list",
        ),
        pytest.param(
            "    commands: [x]", ["deployment.staging"], "needs a `branch` or a `tag`", id="no-branch"
        ),
    ],
)
@pytest.mark.parametrize("branch", ["main", "dev", "other"])
def test_every_deployment_section_is_checked_whatever_the_branch(
    staging: str, where: list[str], message: str, branch: str
) -> None:
    with pytest.raises(ConfigError) as info:
        plan_of(SECTIONS.format(staging=staging), branch=branch)
    assert [p.path for p in info.value.problems] == where
    assert message in info.value.problems[0].message
