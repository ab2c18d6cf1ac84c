"""config.yml text -> Config -> JobPlan, and every way a config can be wrong (spec config.md 1-4)."""

from __future__ import annotations

import re
import time
from textwrap import dedent
from typing import Any

import pytest

from circlet.core.config import Config, load_config, plan_job
from circlet.core.errors import ConfigError
from circlet.core.plan import JobPlan, StepKind, When


def cfg(body: str, version: str = "2") -> str:
    """A config: `version` line plus the dedented body."""
    return f"version: {version}\n" + dedent(body).lstrip("\n")


def job(steps: str = "- checkout", extra: str = "", name: str = "build") -> str:
    """A one-job config with a docker executor."""
    lines = [f"jobs:\n  {name}:\n    docker:\n      - image: cimg/base:2024.01"]
    if extra:
        lines.append(re.sub("^", "    ", dedent(extra).strip("\n"), flags=re.M))
    lines.append("    steps:\n" + re.sub("^", "      ", dedent(steps).strip("\n"), flags=re.M))
    return cfg("\n".join(lines) + "\n")


def pick(value: Any, path: str) -> Any:
    """`steps[1].args.path` -> plan.steps[1].args["path"]."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            value = value[int(part[1:-1])]
        elif isinstance(value, dict):
            value = value[part]
        else:
            value = getattr(value, part)
    return value


def problems_of(text: str, job_name: str | None = "build") -> list[tuple[str, str, int | None]]:
    """(message, path, line) of every problem load_config (+ plan_job) raises."""
    with pytest.raises(ConfigError) as caught:
        config = load_config(text)
        if job_name is not None:
            plan_job(config, job_name)
    return [(p.message, p.path, p.line) for p in caught.value.problems]


# --- load_config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "version"),
    [
        pytest.param("2", "2", id="int-2"),
        pytest.param("2.0", "2", id="float-2.0"),
        pytest.param('"2"', "2", id="string-2"),
        pytest.param('"2.0"', "2", id="string-2.0"),
        pytest.param("2.1", "2.1", id="float-2.1"),
        pytest.param("'2.1'", "2.1", id="string-2.1"),
    ],
)
def test_accepted_versions_are_normalised(written: str, version: str) -> None:
    config = load_config(f"version: {written}\njobs:\n  build: {{}}\n", filename="x.yml")
    assert config.version == version
    assert config.filename == "x.yml"
    assert config.job_names() == ["build"]


def test_config_keeps_document_workflows_and_job_order() -> None:
    text = cfg(
        """
        references: {a: 1}
        jobs:
          zeta: {steps: []}
          alpha: {steps: []}
          "test2.1": {steps: []}
        workflows:
          main: {jobs: [zeta]}
        """
    )
    config = load_config(text)
    assert config.job_names() == ["zeta", "alpha", "test2.1"]
    assert config.workflows == {"main": {"jobs": ["zeta"]}}
    assert config.raw["references"] == {"a": 1}
    assert config.text == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "version: 2\njobs:\n  build:\n    steps: [\n    - a: b\n",
            [("invalid YAML", "", 5)],
            id="yaml-syntax-error-has-line",
        ),
        pytest.param(
            "version: 2\njobs: {}\n  bad: indent\n", [("invalid YAML", "", 3)], id="bad-indentation"
        ),
        pytest.param("- a\n- b\n", [("must be a mapping", "", None)], id="document-is-a-list"),
        pytest.param("# nothing\n", [("must be a mapping", "", None)], id="empty-document"),
        pytest.param("jobs: {}\n", [("`version` is missing", "version", None)], id="missing-version"),
        pytest.param("version: 3\njobs: {}\n", [("unsupported `version` 3", "version", 1)], id="version-3"),
        pytest.param(
            "version: 2.2\njobs: {}\n", [("unsupported `version` 2.2", "version", 1)], id="version-2.2"
        ),
        pytest.param(
            "version: '1'\njobs: {}\n", [("unsupported `version` '1'", "version", 1)], id="version-1"
        ),
        pytest.param(
            "version: true\njobs: {}\n", [("unsupported `version` True", "version", 1)], id="version-bool"
        ),
        pytest.param("version: 2\njobs: [a, b]\n", [("`jobs` must be a mapping", "jobs", 2)], id="jobs-list"),
        pytest.param("version: 2\n", [("needs `jobs`", "jobs", None)], id="jobs-missing-in-2.0"),
        pytest.param(
            "version: 2\njobs:\n  Build: {}\n  build: {}\n",
            [("differ in more than case", "jobs.build", 4)],
            id="job-names-equal-ignoring-case",
        ),
        pytest.param(
            "version: 2\njobs: {}\nworkflows: 3\n", [("`workflows` must be", "workflows", 3)], id="workflows"
        ),
        pytest.param(
            "version: 4\njobs: 5\n",
            [("unsupported `version` 4", "version", 1), ("`jobs` must be a mapping", "jobs", 2)],
            id="several-top-level-problems-together",
        ),
        pytest.param(
            "version: 2\njobs: {}\nx: !!python/object/apply:os.system [echo pwned]\n",
            [("could not determine a constructor", "", 3)],
            id="python-tags-refused",
        ),
        pytest.param("version: 2\n---\nversion: 2\n", [("invalid YAML", "", 2)], id="two-documents"),
    ],
)
def test_load_config_problems(text: str, expected: list[tuple[str, str, int | None]]) -> None:
    found = problems_of(text, job_name=None)
    assert [(path, line) for _, path, line in found] == [(path, line) for _, path, line in expected]
    for (message, _, _), (fragment, _, _) in zip(found, expected, strict=True):
        assert fragment in message


def test_version_21_may_omit_jobs() -> None:
    assert load_config("version: 2.1\norbs: {}\n").jobs == {}


# --- YAML: anchors, merge keys, duplicates, bombs -------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            """
            base: &base {a: 1, b: 2}
            it:
              <<: *base
              b: 3
            """,
            {"a": 1, "b": 3},
            id="explicit-key-beats-merged",
        ),
        pytest.param(
            """
            one: &one {image: x, shell: sh}
            two: &two {shell: bash, resource_class: large}
            it:
              <<: *one
              <<: *two
              extra: true
            """,
            {"image": "x", "shell": "sh", "resource_class": "large", "extra": True},
            id="two-merge-keys-first-wins",
        ),
        pytest.param(
            """
            one: &one {image: x, shell: sh}
            two: &two {shell: bash, resource_class: large}
            it:
              <<: [*one, *two]
            """,
            {"image": "x", "shell": "sh", "resource_class": "large"},
            id="merge-list-first-wins",
        ),
        pytest.param(
            """
            one: &one {shell: sh, shell: zsh}
            it: {<<: *one}
            """,
            {"shell": "zsh"},
            id="merged-mapping-with-duplicate-uses-its-last",
        ),
        pytest.param(
            """
            it:
              command: first
              command: second
            """,
            {"command": "second"},
            id="duplicate-plain-key-last-wins",
        ),
        pytest.param(
            """
            inner: &inner {x: 1}
            outer: &outer {<<: *inner, y: 2}
            it: {<<: *outer, z: 3}
            """,
            {"x": 1, "y": 2, "z": 3},
            id="nested-merge",
        ),
    ],
)
def test_yaml_merge_and_duplicate_keys(body: str, expected: dict[str, Any]) -> None:
    config = load_config(cfg(body + "jobs: {}\n"))
    assert config.raw["it"] == expected


def _billion_laughs(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    return cfg("\n".join(lines) + "\njobs: {}\n")


def _merge_bomb(levels: int) -> str:
    lines = ["m0: &m0 {k0: 0, k1: 1, k2: 2, k3: 3}"]
    for level in range(1, levels):
        lines.append(f"m{level}: &m{level} {{<<: [" + ", ".join([f"*m{level - 1}"] * 10) + "]}")
    return cfg("\n".join(lines) + "\njobs: {}\n")


@pytest.mark.parametrize(
    ("text", "fragment", "line"),
    [
        pytest.param(_billion_laughs(9), "refusing to load it", 7, id="billion-laughs"),
        pytest.param(_merge_bomb(12), "refusing to load it", 8, id="merge-key-bomb"),
        pytest.param(cfg("jobs: {}\na: &a [1, *a]\n"), "contains it", 3, id="recursive-sequence"),
        pytest.param(cfg("jobs: {}\na: &a {<<: *a}\n"), "contains it", 3, id="recursive-merge"),
    ],
)
def test_alias_abuse_is_refused_quickly(text: str, fragment: str, line: int) -> None:
    started = time.perf_counter()
    [(message, path, found_line)] = problems_of(text, job_name=None)
    assert time.perf_counter() - started < 1.0
    assert fragment in message
    assert (path, found_line) == ("", line)


def test_modest_alias_use_is_fine() -> None:
    config = load_config(_billion_laughs(4))  # 10_000 expanded scalars
    assert len(config.raw["a3"]) == 10


# --- line_of ----------------------------------------------------------------------------------------

LINES = cfg(
    """
    defaults: &defaults
      docker:
        - image: cimg/base:2024.01
    jobs:
      test2.1:
        <<: *defaults
        steps:
          - checkout
          - run:
              name: unit
              command: make test
      build:
        steps: []
        steps:
          - run: echo
    """
)


@pytest.mark.parametrize(
    ("path", "line"),
    [
        pytest.param("version", 1, id="top-level-key"),
        pytest.param("jobs.test2.1", 6, id="key-with-dot"),
        pytest.param("jobs.test2.1.steps[0]", 9, id="bare-step"),
        pytest.param("jobs.test2.1.steps[1].run.command", 12, id="nested-key"),
        pytest.param("jobs.test2.1.docker[0].image", 4, id="merged-key-points-at-anchor"),
        pytest.param("jobs.test2.1.steps[1].run.shell", 10, id="missing-key-gives-parent"),
        pytest.param("jobs.test2.1.steps[7]", 8, id="index-out-of-range-gives-list"),
        pytest.param("jobs.build.steps[0]", 16, id="duplicate-key-last-wins"),
        pytest.param("nope.deeper", None, id="unknown-first-key"),
    ],
)
def test_line_of(path: str, line: int | None) -> None:
    assert load_config(LINES).line_of(path) == line


def test_line_of_without_a_node_tree() -> None:
    config = Config(version="2", jobs={}, workflows=None, raw={}, text="")
    assert config.line_of("jobs") is None


# --- plan_job: what a good job becomes --------------------------------------------------------------


PLANS = [
    pytest.param(
        job("- checkout"),
        {
            "name": "build",
            "executor_kind": "docker",
            "image": "cimg/base:2024.01",
            "resource_class": "medium",
            "working_directory": "~/project",
            "shell": None,
            "parallelism": 1,
            "environment": {},
            "steps[0].kind": StepKind.CHECKOUT,
            "steps[0].name": "Checkout code",
            "steps[0].type": "test",
            "steps[0].when": When.ON_SUCCESS,
        },
        id="defaults",
    ),
    pytest.param(
        job(extra="working_directory: $HOME/x\nshell: /bin/sh -e\nparallelism: 4\nresource_class: large"),
        {"working_directory": "$HOME/x", "shell": "/bin/sh -e", "parallelism": 4, "resource_class": "large"},
        id="job-settings-kept-as-written",
    ),
    pytest.param(
        cfg("jobs:\n  build:\n    machine: true\n    steps: [checkout]\n"),
        {"executor_kind": "machine", "image": None},
        id="machine-true",
    ),
    pytest.param(
        cfg("jobs:\n  build:\n    machine: {image: ubuntu-2204:current}\n    steps: [checkout]\n"),
        {"executor_kind": "machine", "image": "ubuntu-2204:current"},
        id="machine-image",
    ),
    pytest.param(
        cfg("jobs:\n  build:\n    macos: {xcode: 15.1.0}\n    steps: [checkout]\n"),
        {"executor_kind": "macos", "image": "15.1.0"},
        id="macos-xcode",
    ),
    pytest.param(
        cfg(
            """
            jobs:
              build:
                docker:
                  - image: cimg/python:3.12
                    environment: {FROM_IMAGE: img, BOTH: image}
                  - image: postgres:16
                    environment: {POSTGRES_DB: x}
                environment:
                  BOTH: job
                  PATH: /x:$PATH
                  NUM: 42
                  FLOAT: 1.5
                  WHOLE: 3.0
                  T: true
                  F: off
                  EMPTY:
                  DAY: 2024-01-02
                steps: [checkout]
            """
        ),
        {
            "image": "cimg/python:3.12",
            "environment": {
                "FROM_IMAGE": "img",
                "BOTH": "job",
                "PATH": "/x:$PATH",
                "NUM": "42",
                "FLOAT": "1.5",
                "WHOLE": "3",
                "T": "true",
                "F": "false",
                "EMPTY": "",
                "DAY": "2024-01-02",
            },
        },
        id="environment-map-merged-over-primary-image",
    ),
    pytest.param(
        job(extra="environment:\n  - A: 1\n  - B=two=2\n  - C="),
        {"environment": {"A": "1", "B": "two=2", "C": ""}},
        id="environment-lists",
    ),
    pytest.param(
        job(
            """
            - run: make test
            - run:
                command: |
                  cat <<EOF > out.txt
                  << not a template >>
                  EOF
            """
        ),
        {
            "steps[0].kind": StepKind.RUN,
            "steps[0].name": "make test",
            "steps[0].command": "make test",
            "steps[0].no_output_timeout": 600.0,
            "steps[1].command": "cat <<EOF > out.txt\n<< not a template >>\nEOF\n",
            "steps[1].name": "cat <<EOF > out.txt\n<< not a template >>\nEOF\n",
        },
        id="run-string-and-literal-heredoc",
    ),
    pytest.param(
        job(
            """
            - run:
                name: Tests
                command: pytest
                shell: /usr/bin/env python3
                environment: {X: 1}
                working_directory: sub
                no_output_timeout: 1.25h
                background: true
                when: always
                max_auto_reruns: 3
                auto_rerun_delay: 1m
            """
        ),
        {
            "steps[0].name": "Tests",
            "steps[0].shell": "/usr/bin/env python3",
            "steps[0].environment": {"X": "1"},
            "steps[0].working_directory": "sub",
            "steps[0].no_output_timeout": 4500.0,
            "steps[0].background": True,
            "steps[0].when": When.ALWAYS,
            "steps[0].args": {},
        },
        id="run-all-keys",
    ),
    pytest.param(
        job(
            """
            - run: {command: a, no_output_timeout: 20m}
            - run: {command: a, no_output_timeout: 5s}
            - run: {command: a, no_output_timeout: "90"}
            - run: {command: a, no_output_timeout: 90}
            - run: {command: a, no_output_timeout: 1h30m}
            - run: {command: a, no_output_timeout: 1m30.5s, when: on_fail}
            """
        ),
        {
            "steps[0].no_output_timeout": 1200.0,
            "steps[1].no_output_timeout": 5.0,
            "steps[2].no_output_timeout": 90.0,
            "steps[3].no_output_timeout": 90.0,
            "steps[4].no_output_timeout": 5400.0,
            "steps[5].no_output_timeout": 90.5,
            "steps[5].when": When.ON_FAIL,
        },
        id="no-output-timeout-formats",
    ),
    pytest.param(
        job(
            """
            - checkout: {path: src}
            - store_test_results: {path: reports}
            - store_artifacts: {path: /tmp/out, destination: out}
            - store_artifacts: {path: log.txt, prefix: logs}
            - save_cache: {key: 'v1-{{ .Branch }}', paths: [~/.cache], when: always}
            - restore_cache: {keys: [v1-a, v1-]}
            - persist_to_workspace: {root: ., paths: [dist]}
            - attach_workspace: {at: /tmp/ws}
            - add_ssh_keys: {fingerprints: ["aa:bb"]}
            - setup_remote_docker
            - restore_cache: {key: v2, name: Warm up}
            """
        ),
        {
            "steps[0].kind": StepKind.CHECKOUT,
            "steps[0].args": {"path": "src"},
            "steps[1].kind": StepKind.STORE_TEST_RESULTS,
            "steps[1].name": "Uploading test results",
            "steps[1].when": When.ALWAYS,
            "steps[2].kind": StepKind.STORE_ARTIFACTS,
            "steps[2].name": "Uploading artifacts",
            "steps[2].when": When.ALWAYS,
            "steps[2].args": {"path": "/tmp/out", "destination": "out"},
            "steps[3].args": {"path": "log.txt", "destination": "logs"},
            "steps[4].kind": StepKind.SAVE_CACHE,
            "steps[4].name": "Saving Cache",
            "steps[4].when": When.ALWAYS,
            "steps[4].args": {"key": "v1-{{ .Branch }}", "paths": ["~/.cache"]},
            "steps[5].kind": StepKind.RESTORE_CACHE,
            "steps[5].name": "Restoring Cache",
            "steps[5].args": {"keys": ["v1-a", "v1-"]},
            "steps[6].name": "Persisting to Workspace",
            "steps[6].args": {"root": ".", "paths": ["dist"]},
            "steps[7].name": "Attaching Workspace",
            "steps[7].args": {"at": "/tmp/ws"},
            "steps[8].kind": StepKind.NOOP,
            "steps[8].name": "Add SSH keys",
            "steps[8].args": {"fingerprints": ["aa:bb"]},
            "steps[9].kind": StepKind.NOOP,
            "steps[9].name": "Setup a remote Docker engine",
            "steps[10].name": "Warm up",
            "steps[10].type": "test",
        },
        id="built-in-steps",
    ),
    pytest.param(
        job("- store_test_results: {path: r, when: on_fail}\n- deploy: ./ship.sh"),
        {
            "steps[0].when": When.ALWAYS,
            "steps[1].kind": StepKind.RUN,
            "steps[1].command": "./ship.sh",
            "steps[1].args": {"deploy": True},
        },
        id="store-always-and-deploy",
    ),
    pytest.param(
        cfg(
            """
            defaults: &defaults
              docker: [{image: node:20}]
              working_directory: ~/app
            steps: &steps
              - checkout
              - run: npm test
            jobs:
              test:
                <<: *defaults
                <<: {resource_class: small, working_directory: /ignored}
                branches: {only: main}
                unknown_key: ignored
                steps: *steps
            """
        ),
        {
            "name": "test",
            "image": "node:20",
            "working_directory": "~/app",
            "resource_class": "small",
            "steps[1].command": "npm test",
        },
        id="anchors-and-two-merge-keys",
    ),
]


@pytest.mark.parametrize(("text", "expected"), PLANS)
def test_plan_job(text: str, expected: dict[str, Any]) -> None:
    config = load_config(text)
    plan = plan_job(config, config.job_names()[0])
    for path, value in expected.items():
        assert pick(plan, path) == value, path
    assert JobPlan.from_dict(plan.to_dict()) == plan


def test_plan_job_on_version_21_job_without_templates() -> None:
    config = load_config(job().replace("version: 2", "version: 2.1", 1))
    assert plan_job(config, "build").steps[0].kind is StepKind.CHECKOUT


# --- plan_job: what is wrong with a job -------------------------------------------------------------


BROKEN = [
    pytest.param(
        cfg("jobs:\n  build:\n    docker: [{image: x}]\n"),
        [("a job needs `steps`", "jobs.build.steps", 3)],
        id="missing-steps",
    ),
    pytest.param(
        cfg("jobs:\n  build:\n    docker: [{image: x}]\n    steps: checkout\n"),
        [("`steps` must be a list", "jobs.build.steps", 5)],
        id="steps-not-a-list",
    ),
    pytest.param(
        job("- checkout\n- run:\n    name: no command"),
        [("`run` needs a `command`", "jobs.build.steps[1].run.command", 8)],
        id="run-without-command",
    ),
    pytest.param(
        job("- run"),
        [("`run` needs a `command`", "jobs.build.steps[0].run.command", 7)],
        id="bare-run",
    ),
    pytest.param(
        job("- run: {command: x, when: sometimes}"),
        [("`when` must be on_success, on_fail or always", "jobs.build.steps[0].run.when", 7)],
        id="bad-when",
    ),
    pytest.param(
        job("- run:\n    command: x\n    no_output_timeout: 10 minutes"),
        [("invalid `no_output_timeout` '10 minutes'", "jobs.build.steps[0].run.no_output_timeout", 9)],
        id="bad-no-output-timeout",
    ),
    pytest.param(
        job("- run: {command: x, no_output_timeout: 0s}"),
        [("invalid `no_output_timeout` '0s'", "jobs.build.steps[0].run.no_output_timeout", 7)],
        id="zero-no-output-timeout",
    ),
    pytest.param(
        job(extra="environment:\n  1BAD: x\n  GOOD: y"),
        [("invalid environment variable name '1BAD'", "jobs.build.environment.1BAD", 7)],
        id="bad-environment-name",
    ),
    pytest.param(
        job(extra="environment:\n  ON: 1\n  'OFF': 0"),
        [("as a boolean; quote it", "jobs.build.environment.True", 6)],
        id="environment-name-read-as-boolean",
    ),
    pytest.param(
        job(extra="environment: [NOEQUALS]"),
        [("map or a KEY=VALUE string", "jobs.build.environment[0]", 6)],
        id="environment-string-without-equals",
    ),
    pytest.param(
        job(extra="environment: {A: [1, 2]}"),
        [("must be a string, number or boolean", "jobs.build.environment.A", 6)],
        id="environment-value-list",
    ),
    pytest.param(
        job("- frobnicate"),
        [("unknown step 'frobnicate'", "jobs.build.steps[0]", 7)],
        id="unknown-bare-step",
    ),
    pytest.param(
        job("- frobnicate: {x: 1}"),
        [("unknown step 'frobnicate'", "jobs.build.steps[0].frobnicate", 7)],
        id="unknown-step-map",
    ),
    pytest.param(
        job("- run: echo\n  name: misplaced"),
        [("single key", "jobs.build.steps[0]", 7)],
        id="step-with-two-keys",
    ),
    pytest.param(
        job("- store_artifacts: {destination: x}\n- save_cache: {key: k}\n- restore_cache: {name: r}"),
        [
            ("`store_artifacts` needs `path`", "jobs.build.steps[0].store_artifacts.path", 7),
            ("`save_cache` needs `paths`", "jobs.build.steps[1].save_cache.paths", 8),
            ("needs `key` or `keys`", "jobs.build.steps[2].restore_cache.key", 9),
        ],
        id="built-ins-missing-keys",
    ),
    pytest.param(
        job("- save_cache: {key: k, paths: ~/x}\n- attach_workspace: {at: [a]}"),
        [
            ("`paths` must be a list of strings", "jobs.build.steps[0].save_cache.paths", 7),
            ("`at` must be a string", "jobs.build.steps[1].attach_workspace.at", 8),
        ],
        id="built-ins-wrong-types",
    ),
    pytest.param(
        cfg("jobs:\n  build:\n    steps: [checkout]\n"),
        [("a job needs an executor", "jobs.build", 3)],
        id="no-executor",
    ),
    pytest.param(
        cfg("jobs:\n  build:\n    docker: [{image: x}]\n    machine: true\n    steps: [checkout]\n"),
        [("exactly one executor, not docker and machine", "jobs.build.machine", 5)],
        id="two-executors",
    ),
    pytest.param(
        cfg("jobs:\n  build:\n    docker:\n      - name: db\n    steps: [checkout]\n"),
        [("needs an `image`", "jobs.build.docker[0]", 5)],
        id="docker-without-image",
    ),
    pytest.param(
        job(extra="parallelism: 0"),
        [("`parallelism` must be a whole number of at least 1, not 0", "jobs.build.parallelism", 6)],
        id="parallelism-zero",
    ),
    pytest.param(
        job(extra="parallelism: '4'"),
        [("at least 1, not '4'", "jobs.build.parallelism", 6)],
        id="parallelism-string",
    ),
    pytest.param(
        cfg("jobs:\n  build: [checkout]\n"),
        [("a job must be a mapping", "jobs.build", 3)],
        id="job-not-a-mapping",
    ),
    pytest.param(
        job(
            extra="parallelism: -1\nenvironment: {bad-name: 1}",
            steps="""
            - checkout
            - run: {name: x}
            - run: {command: y, when: never, no_output_timeout: soon}
            - nope
            """,
        ),
        [
            ("invalid environment variable name", "jobs.build.environment.bad-name", 7),
            ("`parallelism` must be", "jobs.build.parallelism", 6),
            ("`run` needs a `command`", "jobs.build.steps[1].run.command", 10),
            ("invalid `no_output_timeout` 'soon'", "jobs.build.steps[2].run.no_output_timeout", 11),
            ("`when` must be", "jobs.build.steps[2].run.when", 11),
            ("unknown step 'nope'", "jobs.build.steps[3]", 12),
        ],
        id="all-problems-collected-together",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BROKEN)
def test_plan_job_problems(text: str, expected: list[tuple[str, str, int | None]]) -> None:
    found = problems_of(text)
    assert [(path, line) for _, path, line in found] == [(path, line) for _, path, line in expected]
    for (message, _, _), (fragment, _, _) in zip(found, expected, strict=True):
        assert fragment in message


def test_problems_carry_the_file_name() -> None:
    config = load_config(job("- nope"), filename="ci/config.yml")
    with pytest.raises(ConfigError) as caught:
        plan_job(config, "build")
    assert caught.value.problems[0].file == "ci/config.yml"
    assert str(caught.value) == "ci/config.yml:7 (jobs.build.steps[0]): unknown step 'nope'"


def test_unknown_job_name() -> None:
    with pytest.raises(ConfigError, match="no job named 'deploy'"):
        plan_job(load_config(job()), "deploy")


def test_version_21_step_hint() -> None:
    config = load_config(job("- my-command").replace("version: 2", "version: 2.1", 1))
    with pytest.raises(ConfigError, match=r"2\.1 commands need compilation"):
        plan_job(config, "build")


# --- speed --------------------------------------------------------------------------------------------


def _big_config(jobs: int = 60) -> str:
    parts = [
        "version: 2",
        "defaults: &defaults",
        "  docker:",
        "    - image: cimg/python:3.12",
        "      environment: {PIPENV_VENV_IN_PROJECT: 1}",
        "  working_directory: ~/repo",
        "jobs:",
    ]
    for number in range(jobs):
        parts += [
            f"  job{number}:",
            "    <<: *defaults",
            "    environment:",
            f"      JOB: {number}",
            "    steps:",
        ]
        parts += ["      - checkout", "      - restore_cache: {keys: [v1-deps-, v1-]}"]
        for step in range(8):
            parts += [
                "      - run:",
                f"          name: step {step} of job {number}",
                "          command: |",
                f"            echo 'job {number} step {step}'",
                "            python -m pytest -q tests/",
            ]
        parts += ["      - store_test_results: {path: reports}", "      - store_artifacts: {path: dist}"]
    return "\n".join(parts) + "\n"


def test_a_three_thousand_line_config_loads_and_plans_quickly() -> None:
    text = _big_config()
    assert 2900 <= text.count("\n") <= 3500
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        plan = plan_job(load_config(text), "job59")
        best = min(best, time.perf_counter() - started)
    assert len(plan.steps) == 12
    assert plan.environment == {"PIPENV_VENV_IN_PROJECT": "1", "JOB": "59"}
    assert best < 0.1, f"best of 5 took {best * 1000:.1f} ms"
