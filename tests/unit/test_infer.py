"""CircleCI 1.0 inference and circle.yml (core/infer.py, core/circleyml.py), table-driven."""

from __future__ import annotations

import json
from textwrap import dedent

import pytest

from circlet.core import circleyml
from circlet.core.errors import ConfigError
from circlet.core.infer import (
    VENV_NAME,
    files_to_read,
    has_make_target,
    infer,
    infer_plan,
)
from circlet.core.model import ActionStatus, Lifecycle, Outcome
from circlet.core.phases import halts_on_failure, no_tests
from circlet.core.plan import JobPlan, StepKind, When
from circlet.core.status import derive_status, outcome_from_actions

PKG_TEST = json.dumps({"name": "w", "scripts": {"test": "jest"}})
PKG_NO_TEST = json.dumps({"name": "w", "scripts": {"build": "tsc"}})
PKG_PLACEHOLDER = json.dumps({"scripts": {"test": 'echo "Error: no test specified" && exit 1'}})
MAKE_TEST = ".PHONY: test\nCC := gcc\nall: build\nlint test: deps\n\t./run-tests\n"

# (root entries, texts) -> (dependency commands, test commands); the venv step shows as VENV.
CASES = [
    pytest.param(["README.md"], {}, [], [], id="nothing"),
    pytest.param(["package.json"], {"package.json": PKG_TEST}, ["npm install"], ["npm test"], id="npm"),
    pytest.param(
        ["package.json", "package-lock.json"],
        {"package.json": PKG_TEST},
        ["npm ci"],
        ["npm test"],
        id="npm-ci",
    ),
    pytest.param(
        ["package.json"], {"package.json": PKG_NO_TEST}, ["npm install"], [], id="npm-no-test-script"
    ),
    pytest.param(
        ["package.json"], {"package.json": PKG_PLACEHOLDER}, ["npm install"], [], id="npm-placeholder"
    ),
    pytest.param(
        ["requirements.txt", "tests/"],
        {},
        ["VENV", "pip install -r requirements.txt", "pip install pytest"],
        ["pytest"],
        id="requirements-and-tests-dir",
    ),
    pytest.param(
        ["requirements.txt"], {}, ["VENV", "pip install -r requirements.txt"], [], id="requirements-only"
    ),
    pytest.param(
        ["requirements.txt", "setup.py", "tox.ini"],
        {"setup.py": "setup(name='w')"},
        ["VENV", "pip install -r requirements.txt", "pip install .", "pip install tox"],
        ["tox"],
        id="tox-preferred",
    ),
    pytest.param(
        ["setup.py"],
        {"setup.py": "setup(name='w', test_suite='tests')"},
        ["VENV", "pip install .", "pip install pytest"],
        ["pytest"],
        id="setup-py-test-suite",
    ),
    pytest.param(
        ["pyproject.toml"],
        {"pyproject.toml": "[project]\nname='w'\n[tool.pytest.ini_options]\n"},
        ["VENV", "pip install .", "pip install pytest"],
        ["pytest"],
        id="pyproject-pytest",
    ),
    pytest.param(
        ["pyproject.toml"],
        {"pyproject.toml": "[tool.black]\n"},
        ["VENV"],
        [],
        id="pyproject-tool-config-only",
    ),
    pytest.param(
        ["manage.py", "requirements.txt"],
        {},
        ["VENV", "pip install -r requirements.txt"],
        ["python manage.py test"],
        id="django",
    ),
    pytest.param(["test_app.py"], {}, ["VENV", "pip install pytest"], ["pytest"], id="loose-test-file"),
    pytest.param(
        ["Gemfile", "spec/", "features/"],
        {},
        ["bundle check || bundle install"],
        ["bundle exec rspec", "bundle exec cucumber"],
        id="ruby",
    ),
    pytest.param(
        ["project.clj"],
        {"project.clj": '(defproject w :profiles {:dev {:dependencies [[midje "1.9"]]}})'},
        ["lein deps"],
        ["lein trampoline midje"],
        id="clojure-midje",
    ),
    pytest.param(
        ["project.clj"], {"project.clj": "(defproject w)"}, ["lein deps"], ["lein test"], id="clojure"
    ),
    pytest.param(["pom.xml"], {}, ["mvn dependency:resolve"], ["mvn integration-test"], id="maven"),
    pytest.param(
        ["build.gradle", "gradlew"], {}, ["./gradlew dependencies"], ["./gradlew test"], id="gradlew"
    ),
    pytest.param(["build.gradle.kts"], {}, ["gradle dependencies"], ["gradle test"], id="gradle"),
    pytest.param(["build.xml"], {}, [], ["ant"], id="ant"),
    pytest.param(["build.sbt"], {}, ["sbt test:compile"], ["sbt test:test"], id="sbt"),
    pytest.param(["composer.json", "phpunit.xml"], {}, ["composer install"], ["phpunit"], id="php"),
    pytest.param(
        ["w.cabal"], {}, ["cabal install --only-dependencies"], ["cabal build", "cabal test"], id="cabal"
    ),
    pytest.param(["go.mod", "main.go"], {}, ["go mod download"], ["go test -v -race ./..."], id="go-modules"),
    pytest.param(["main.go"], {}, ["go get -t -d -v ./..."], ["go test -v -race ./..."], id="go-gopath"),
    pytest.param(["Makefile"], {"Makefile": MAKE_TEST}, [], ["make test"], id="make"),
    pytest.param(["Makefile"], {"Makefile": "all:\n\tcc x.c\n"}, [], [], id="make-without-test-target"),
    pytest.param(
        ["package.json", "Makefile"],
        {"package.json": PKG_NO_TEST, "Makefile": MAKE_TEST},
        ["npm install"],
        ["make test"],
        id="node-with-make-test",
    ),
    pytest.param(
        ["package.json", "Makefile"],
        {"package.json": PKG_TEST, "Makefile": MAKE_TEST},
        ["npm install"],
        ["npm test"],
        id="make-only-when-nothing-else-tests",
    ),
    pytest.param(
        ["package.json", "requirements.txt", "test/"],
        {"package.json": PKG_TEST},
        ["npm install", "VENV", "pip install -r requirements.txt", "pip install pytest"],
        ["npm test", "pytest"],
        id="several-languages-in-row-order",
    ),
]


@pytest.mark.parametrize(("entries", "texts", "deps", "tests"), CASES)
def test_infer(entries: list[str], texts: dict[str, str], deps: list[str], tests: list[str]) -> None:
    found = infer(entries, texts)
    assert ["VENV" if c.name == VENV_NAME else c.command for c in found.dependencies] == deps
    assert [c.command for c in found.test] == tests


def test_an_unreadable_package_json_is_noted() -> None:
    found = infer(["package.json"], {"package.json": "{nope"})
    assert [c.command for c in found.dependencies] == ["npm install"]
    assert found.test == ()
    assert "package.json is not valid JSON" in found.notes[0]


@pytest.mark.parametrize(
    ("entries", "wanted"),
    [
        pytest.param(["a.txt", "src/"], (), id="none"),
        pytest.param(
            ["Makefile", "package.json", "setup.py", "x.py"],
            ("package.json", "Makefile", "setup.py"),
            id="some",
        ),
    ],
)
def test_files_to_read(entries: list[str], wanted: tuple[str, ...]) -> None:
    assert files_to_read(entries) == wanted


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("test:\n\tgo test\n", True, id="plain"),
        pytest.param("lint test: deps\n", True, id="one-of-several"),
        pytest.param("test::\n", True, id="double-colon"),
        pytest.param(".PHONY: test\n", False, id="phony-only"),
        pytest.param("test := 1\n", False, id="assignment"),
        pytest.param("\ttest: x\n", False, id="recipe-line"),
        pytest.param("tests:\n", False, id="other-target"),
        pytest.param("# test:\n", False, id="comment"),
    ],
)
def test_has_make_target(text: str, expected: bool) -> None:
    assert has_make_target(text) is expected


def test_the_inferred_plan() -> None:
    inference = infer_plan(["project.clj"], {"project.clj": "midje"}, reponame="widget")
    plan = inference.plan
    assert (plan.config_version, plan.working_directory, plan.shell) == ("1.0", "~/widget", "/bin/bash")
    assert [(s.kind, s.name, s.type, s.source, s.when) for s in plan.steps] == [
        (StepKind.CHECKOUT, "Checkout code", "checkout", "template", When.ON_SUCCESS),
        (StepKind.RUN, "lein deps", "dependencies", "inference", When.ON_SUCCESS),
        (StepKind.RUN, "lein trampoline midje", "test", "inference", When.ALWAYS),
        (StepKind.STORE_TEST_RESULTS, "Collect test metadata", "teardown", "template", When.ALWAYS),
        (StepKind.STORE_ARTIFACTS, "Collect artifacts", "teardown", "template", When.ALWAYS),
    ]
    assert all(s.parallel for s in plan.steps)  # inferred test commands run on every node
    assert inference.message is None
    assert JobPlan.from_dict(plan.to_dict()) == plan  # crosses queues and is kept in build.extra


def test_nothing_to_infer_says_what_circlet_looked_for() -> None:
    inference = infer_plan(["README.md", "docs/"], {}, reponame="widget")
    assert [s.kind for s in inference.plan.steps] == [
        StepKind.CHECKOUT,
        StepKind.STORE_TEST_RESULTS,
        StepKind.STORE_ARTIFACTS,
    ]
    assert no_tests(inference.plan)
    assert inference.message is not None
    for name in ("package.json", "requirements.txt", "project.clj", "Makefile", ".circleci/config.yml"):
        assert name in inference.message


def test_dependencies_without_tests_say_so() -> None:
    inference = infer_plan(["requirements.txt"], {}, reponame="w")
    assert no_tests(inference.plan)
    assert inference.message is not None and "from Python" in inference.message


# ------------------------------------------------------------------ rules: no_tests, halting


def _plan(version: str, *types: str) -> JobPlan:
    plan = infer_plan(["package.json"], {"package.json": PKG_TEST}, reponame="w").plan
    steps = tuple(s for s in plan.steps if s.type in types or s.kind is StepKind.CHECKOUT)
    return JobPlan(name="build", steps=steps, config_version=version)


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        pytest.param(_plan("1.0", "dependencies", "test"), False, id="1.0-with-test"),
        pytest.param(_plan("1.0", "dependencies"), True, id="1.0-without-test"),
        pytest.param(_plan("2.0", "dependencies"), False, id="2.0-never"),
    ],
)
def test_no_tests(plan: JobPlan, expected: bool) -> None:
    assert no_tests(plan) is expected


@pytest.mark.parametrize(
    ("statuses", "no_tests_rule", "outcome"),
    [
        pytest.param([ActionStatus.SUCCESS], True, Outcome.NO_TESTS, id="nothing-failed"),
        pytest.param([ActionStatus.FAILED], True, Outcome.FAILED, id="failed-wins"),
        pytest.param([ActionStatus.CANCELED], True, Outcome.CANCELED, id="canceled-wins"),
        pytest.param([ActionStatus.TIMEDOUT], True, Outcome.TIMEDOUT, id="timedout-wins"),
        pytest.param([ActionStatus.SUCCESS], False, Outcome.SUCCESS, id="with-tests"),
    ],
)
def test_no_tests_comes_after_the_other_rules(
    statuses: list[ActionStatus], no_tests_rule: bool, outcome: Outcome
) -> None:
    assert outcome_from_actions(statuses, no_tests=no_tests_rule) is outcome


def test_a_success_after_no_tests_is_fixed() -> None:
    assert derive_status(Lifecycle.FINISHED, Outcome.SUCCESS, previous_outcome=Outcome.NO_TESTS) == "fixed"
    assert derive_status(Lifecycle.FINISHED, Outcome.NO_TESTS, previous_outcome=Outcome.SUCCESS) == "no_tests"


def test_halts_on_failure() -> None:
    plan = _plan("1.0", "dependencies", "test")
    by_type = {s.type: s for s in plan.steps}
    assert halts_on_failure(plan, by_type["dependencies"])
    assert halts_on_failure(plan, by_type["checkout"])
    assert not halts_on_failure(plan, by_type["test"])
    two = JobPlan(name="b", steps=plan.steps)
    assert not halts_on_failure(two, by_type["dependencies"])


# ------------------------------------------------------------------ circle.yml


CIRCLE_YML = dedent(
    """\
    machine:
      environment:
        GREETING: hello
        DEBUG: true
      python:
        version: 3.11
      pre:
        - echo machine
    checkout:
      post:
        - git submodule update --init
    dependencies:
      pre:
        - echo before
      cache_directories:
        - ~/.npm
    test:
      override:
        - make check:
            timeout: 30
            environment:
              FAST: "1"
            pwd: sub
      post:
        - echo after
    deployment:
      staging:
        branch: /feature.*/
        commands:
          - ./deploy staging
      production:
        branch: [main, release]
        commands:
          - ./deploy prod
    general:
      build_dir: app
    """
)


def _shape(plan: JobPlan) -> list[tuple[str, str, str]]:
    return [(s.type, s.source, s.name) for s in plan.steps]


@pytest.mark.parametrize(
    ("branch", "deploy"),
    [
        pytest.param("main", [("deployment", "config", "./deploy prod")], id="main"),
        pytest.param("feature/x", [("deployment", "config", "./deploy staging")], id="regex"),
        pytest.param("other", [], id="no-section"),
    ],
)
def test_circle_yml_phases(branch: str, deploy: list[tuple[str, str, str]]) -> None:
    inference = circleyml.plan_circle_yml(
        CIRCLE_YML, ["package.json", "circle.yml"], {"package.json": PKG_TEST}, reponame="w", branch=branch
    )
    plan = inference.plan
    assert _shape(plan) == [
        ("machine", "config", "echo machine"),
        ("checkout", "template", "Checkout code"),
        ("checkout", "config", "git submodule update --init"),
        ("dependencies", "cache", "Restore cache"),  # cache_directories (config.md 12.1)
        ("dependencies", "config", "echo before"),
        ("dependencies", "inference", "npm install"),  # no override: inference fills it
        ("dependencies", "cache", "Save cache"),
        ("test", "config", "make check"),  # override: inference steps aside
        ("test", "config", "echo after"),
        *deploy,
        ("teardown", "template", "Collect test metadata"),
        ("teardown", "template", "Collect artifacts"),
    ]
    assert plan.environment == {"GREETING": "hello", "DEBUG": "true"}
    # The checkout clones the whole repository into ~/w; commands run in build_dir inside it.
    assert plan.working_directory == "~/w"
    assert plan.steps[1].args == {"path": "~/w"}
    check = plan.steps[7]
    assert (check.no_output_timeout, check.environment, check.working_directory) == (
        30.0,
        {"FAST": "1"},
        "app/sub",  # a relative `pwd` is inside the build dir
    )
    assert plan.steps[8].working_directory == "app"
    assert plan.steps[0].working_directory == "~"  # machine commands run in $HOME
    assert not no_tests(plan)
    assert not any("cache_directories" in n for n in inference.inferred.notes)
    assert any("machine settings" in n for n in inference.inferred.notes)


def test_circle_yml_with_an_empty_test_override_ends_no_tests() -> None:
    inference = circleyml.plan_circle_yml(
        "test:\n  override: []\n", ["package.json"], {"package.json": PKG_TEST}, reponame="w"
    )
    assert no_tests(inference.plan)
    assert inference.message is not None and "no_tests" in inference.message


def test_an_empty_circle_yml_is_inference_alone() -> None:
    inference = circleyml.plan_circle_yml("", ["Makefile"], {"Makefile": MAKE_TEST}, reponame="w")
    assert _shape(inference.plan) == [
        ("checkout", "template", "Checkout code"),
        ("test", "inference", "make test"),
        ("teardown", "template", "Collect test metadata"),
        ("teardown", "template", "Collect artifacts"),
    ]


@pytest.mark.parametrize(
    ("text", "messages"),
    [
        pytest.param(
            "test:\n  overide:\n    - x\n",
            ["circle.yml:2 (test.overide): unknown key `overide` (`test` takes pre, override, post)"],
            id="typo",
        ),
        pytest.param(
            "test:\n  override: make\ndependencies:\n  pre:\n    - a: {timeout: soon}\n",
            [
                "circle.yml:5 (dependencies.pre[0].a.timeout): `timeout` must be a positive",
                "circle.yml:2 (test.override): must be a list of commands",  # phases in run order
            ],
            id="two-problems",
        ),
        pytest.param("- a\n", ["circle.yml: circle.yml must be a mapping of phases"], id="not-a-mapping"),
        pytest.param("test: [\n", ["circle.yml:2: invalid YAML"], id="yaml"),
    ],
)
def test_circle_yml_problems(text: str, messages: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        circleyml.plan_circle_yml(text, [], {}, reponame="w")
    found = [str(p) for p in info.value.problems]
    assert len(found) == len(messages)
    for got, want in zip(found, messages, strict=True):
        assert got.startswith(want)
