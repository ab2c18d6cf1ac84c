"""2.1 config -> compiled 2.0 config, and every way compilation can fail (spec config.md 7, 5.7)."""

from __future__ import annotations

import time
from textwrap import dedent
from typing import Any

import pytest
import yaml

from circlet.core.compile import PipelineValues, compile_config, render_config
from circlet.core.config import load_config, plan_job
from circlet.core.errors import ConfigError

PIPELINE = PipelineValues(
    id="c0ffee00-0000-4000-8000-000000000001",
    number=7,
    project_git_url="https://example.com/acme/app",
    git_branch="main",
    git_revision="abc123",
    trigger_source="webhook",
)
DOCKER = "docker: [{image: cimg/base:2024.01}]"


def compile_text(
    text: str, parameters: dict[str, Any] | None = None, orbs: dict[str, str] | None = None
) -> dict[str, Any]:
    config = compile_config(
        load_config("version: 2.1\n" + dedent(text)), pipeline=PIPELINE, parameters=parameters, orbs=orbs
    )
    rendered: dict[str, Any] = yaml.safe_load(render_config(config))
    return rendered


def expected(text: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(dedent(text))
    return {"version": 2, **data}


def one_job(steps: str, extra: str = "", workflow: str = "") -> str:
    """A 2.1 config with a job `build` (docker executor) run by workflow `main`."""
    steps_block = "\n".join("      " + line for line in dedent(steps).strip("\n").splitlines())
    return (
        dedent(extra).strip("\n")
        + f"\njobs:\n  build:\n    {DOCKER}\n    steps:\n{steps_block}\n"
        + (dedent(workflow) if workflow else "workflows:\n  main:\n    jobs: [build]\n")
    )


def steps_of(text: str, **kwargs: Any) -> list[Any]:
    steps: list[Any] = compile_text(text, **kwargs)["jobs"]["build"]["steps"]
    return steps


# -- template syntax (7.2), pipeline values (7.8) ---------------------------------------------

TEMPLATES = [
    pytest.param("- run: echo << pipeline.git.branch >>", {}, [{"run": "echo main"}], id="pipeline-value"),
    pytest.param(
        "- run: echo <<pipeline.number>>", {}, [{"run": "echo 7"}], id="no-whitespace-number-as-text"
    ),
    pytest.param(
        "- run: echo [<< pipeline.git.base_revision >>]", {}, [{"run": "echo [<nil>]"}], id="missing-is-nil"
    ),
    pytest.param("- run: echo \\<<EOF", {}, [{"run": "echo <<EOF"}], id="escaped-heredoc"),
    pytest.param("- run: echo a >> f", {}, [{"run": "echo a >> f"}], id="lone-close-is-text"),
    pytest.param(
        "- run: echo << pipeline.parameters.msg >>",
        {"msg": "hi there"},
        [{"run": "echo hi there"}],
        id="pipeline-parameter-given",
    ),
    pytest.param(
        "- run: echo << pipeline.parameters.msg >>",
        {},
        [{"run": "echo hello"}],
        id="pipeline-parameter-default",
    ),
    pytest.param(
        "- run: echo <<# pipeline.parameters.flag >>on<</ pipeline.parameters.flag >>"
        "<<^ pipeline.parameters.flag >>off<</ pipeline.parameters.flag >>",
        {"flag": "yes"},
        [{"run": "echo on"}],
        id="sections-truthy",
    ),
    pytest.param(
        "- run: echo <<# pipeline.parameters.flag >>on<</ pipeline.parameters.flag >>"
        "<<^ pipeline.parameters.flag >>off<</ pipeline.parameters.flag >>",
        {},
        [{"run": "echo off"}],
        id="sections-falsy",
    ),
    pytest.param(
        "- run: {command: x, background: << pipeline.parameters.flag >>}",
        {"flag": True},
        [{"run": {"command": "x", "background": True}}],
        id="single-tag-keeps-boolean",
    ),
    pytest.param(
        "- run: {command: x, no_output_timeout: << pipeline.parameters.n >>}",
        {"n": "90"},
        [{"run": {"command": "x", "no_output_timeout": 90}}],
        id="integer-from-numeric-string",
    ),
]

PIPELINE_DECLS = """
parameters:
  msg: {type: string, default: hello}
  flag: {type: boolean, default: false}
  n: {type: integer, default: 1}
"""


@pytest.mark.parametrize(("steps", "given", "want"), TEMPLATES)
def test_templates(steps: str, given: dict[str, Any], want: list[Any]) -> None:
    assert steps_of(one_job(steps, PIPELINE_DECLS), parameters=given) == want


def test_pipeline_values_lookup() -> None:
    assert PIPELINE.lookup("project.git_url") == "https://example.com/acme/app"
    assert PIPELINE.lookup("git.base_revision") is None
    with pytest.raises(KeyError):
        PIPELINE.lookup("nope")


# -- commands, executors, parameters, orbs, matrix, workflows: config -> compiled config -------

COMPILED = [
    pytest.param(
        f"""
        commands:
          greet:
            parameters:
              who: {{type: string, default: world}}
              loud: {{type: boolean, default: false}}
            steps:
              - run: echo hello << parameters.who >><<# parameters.loud >>!<</ parameters.loud >>
        jobs:
          build:
            {DOCKER}
            steps: [greet, {{greet: {{who: you, loud: true}}}}]
        workflows:
          main: {{jobs: [build]}}
        """,
        """
        jobs:
          build:
            docker: [{image: cimg/base:2024.01}]
            steps: [run: echo hello world, run: echo hello you!]
        workflows: {version: 2, main: {jobs: [build]}}
        """,
        id="command-with-defaults-and-args",
    ),
    pytest.param(
        f"""
        commands:
          checkout:
            steps: [run: git clone here]
          wrap:
            parameters:
              inner: {{type: steps}}
            steps:
              - run: before
              - steps: << parameters.inner >>
              - run: after
        jobs:
          build:
            {DOCKER}
            steps:
              - checkout
              - wrap: {{inner: [run: one, run: two]}}
        workflows:
          main: {{jobs: [build]}}
        """,
        """
        jobs:
          build:
            docker: [{image: cimg/base:2024.01}]
            steps: [run: git clone here, run: before, run: one, run: two, run: after]
        workflows: {version: 2, main: {jobs: [build]}}
        """,
        id="steps-parameter-spliced-and-builtin-shadowed",
    ),
    pytest.param(
        """
        executors:
          py:
            parameters:
              tag: {type: enum, enum: ["3.11", "3.12"], default: "3.12"}
            docker: [{image: "cimg/python:<< parameters.tag >>"}]
            working_directory: /tmp/exec
            environment: {A: a, B: b}
        jobs:
          build:
            parameters:
              e: {type: executor, default: py}
            executor: << parameters.e >>
            environment: {B: job}
            steps: [checkout]
          other:
            executor: {name: py, tag: "3.11"}
            working_directory: /tmp/job
            steps: [checkout]
        workflows:
          main: {jobs: [build, other]}
        """,
        """
        jobs:
          build:
            docker: [{image: "cimg/python:3.12"}]
            working_directory: /tmp/exec
            environment: {A: a, B: job}
            steps: [checkout]
          other:
            docker: [{image: "cimg/python:3.11"}]
            working_directory: /tmp/job
            environment: {A: a, B: b}
            steps: [checkout]
        workflows: {version: 2, main: {jobs: [build, other]}}
        """,
        id="executors-params-and-merge",
    ),
    pytest.param(
        f"""
        parameters:
          deploy: {{type: boolean, default: true}}
        jobs:
          build:
            {DOCKER}
            parameters:
              fast: {{type: boolean, default: false}}
            steps:
              - when:
                  condition: {{and: [<< pipeline.parameters.deploy >>, {{not: << parameters.fast >>}}]}}
                  steps: [run: slow deploy]
              - unless:
                  condition: {{equal: [main, << pipeline.git.branch >>]}}
                  steps: [run: not main]
              - when:
                  condition: {{matches: {{pattern: "^ma.*$", value: << pipeline.git.branch >>}}}}
                  steps: [run: matched]
              - when:
                  condition: {{or: [false, 0, ""]}}
                  steps: [run: never]
              - run: {{command: x, when: always}}
        workflows:
          main: {{jobs: [build]}}
        """,
        """
        jobs:
          build:
            docker: [{image: cimg/base:2024.01}]
            steps: [run: slow deploy, run: matched, run: {command: x, when: always}]
        workflows: {version: 2, main: {jobs: [build]}}
        """,
        id="when-unless-steps-and-logic",
    ),
    pytest.param(
        f"""
        jobs:
          build:
            {DOCKER}
            parameters:
              greeting: {{type: string, default: hi}}
            steps: [run: echo << parameters.greeting >>]
        workflows:
          main:
            jobs:
              - build:
                  greeting: hey
                  pre-steps: [run: pre << pipeline.git.revision >>]
                  post-steps: [run: post]
        """,
        """
        jobs:
          build:
            docker: [{image: cimg/base:2024.01}]
            steps: [run: pre abc123, run: echo hey, run: post]
        workflows: {version: 2, main: {jobs: [build]}}
        """,
        id="job-args-pre-and-post-steps",
    ),
    pytest.param(
        f"""
        orbs:
          tools:
            executors:
              base:
                {DOCKER}
            commands:
              say:
                parameters: {{text: {{type: string}}}}
                steps: [run: echo << parameters.text >>]
              twice:
                parameters: {{text: {{type: string}}}}
                steps: [say: {{text: << parameters.text >>}}, say: {{text: << parameters.text >>}}]
            jobs:
              lint:
                executor: base
                steps: [twice: {{text: lint}}]
        jobs:
          build:
            executor: tools/base
            steps: [tools/say: {{text: hello}}]
        workflows:
          main:
            jobs: [tools/lint, {{build: {{requires: [tools/lint]}}}}]
        """,
        """
        jobs:
          tools/lint:
            docker: [{image: cimg/base:2024.01}]
            steps: [run: echo lint, run: echo lint]
          build:
            docker: [{image: cimg/base:2024.01}]
            steps: [run: echo hello]
        workflows: {version: 2, main: {jobs: [tools/lint, {build: {requires: [tools/lint]}}]}}
        """,
        id="inline-orb-elements-and-unprefixed-names",
    ),
    pytest.param(
        """
        orbs:
          node: acme/node@1.2.3
        jobs:
          build:
            executor: node/default
            steps: [node/install]
        workflows:
          main: {jobs: [build]}
        """,
        """
        jobs:
          build:
            docker: [{image: "cimg/node:18"}]
            steps: [run: npm ci]
        workflows: {version: 2, main: {jobs: [build]}}
        """,
        id="registry-orb-from-mapping",
    ),
    pytest.param(
        f"""
        jobs:
          test:
            {DOCKER}
            parameters:
              os: {{type: string}}
              node-version: {{type: string}}
            steps: [run: test << parameters.os >> << parameters.node-version >>]
          deploy:
            {DOCKER}
            steps: [run: deploy]
        workflows:
          main:
            jobs:
              - test:
                  matrix:
                    parameters:
                      os: [docker, mac]
                      node-version: ["14.17.6", "16"]
                    exclude: [{{os: mac, node-version: "16"}}]
              - deploy:
                  requires: [test]
        """,
        """
        jobs:
          test-14.17.6-docker:
            docker: [{image: cimg/base:2024.01}]
            steps: [run: test docker 14.17.6]
          test-16-docker:
            docker: [{image: cimg/base:2024.01}]
            steps: [run: test docker 16]
          test-14.17.6-mac:
            docker: [{image: cimg/base:2024.01}]
            steps: [run: test mac 14.17.6]
          deploy:
            docker: [{image: cimg/base:2024.01}]
            steps: [run: deploy]
        workflows:
          version: 2
          main:
            jobs:
              - test-14.17.6-docker
              - test-16-docker
              - test-14.17.6-mac
              - deploy: {requires: [test-14.17.6-docker, test-16-docker, test-14.17.6-mac]}
        """,
        id="matrix-names-sorted-exclude-alias-default",
    ),
    pytest.param(
        f"""
        jobs:
          build:
            {DOCKER}
            parameters: {{version: {{type: integer}}}}
            steps: [run: build << parameters.version >>]
          ship:
            {DOCKER}
            parameters: {{version: {{type: integer}}}}
            steps: [run: ship << parameters.version >>]
        workflows:
          main:
            jobs:
              - build:
                  name: build-v<< matrix.version >>
                  matrix: {{alias: all-builds, parameters: {{version: [1, 2]}}}}
              - ship:
                  name: ship-v<< matrix.version >>
                  matrix: {{parameters: {{version: [1, 2]}}}}
                  requires: [build-v<< matrix.version >>]
              - build:
                  name: last
                  version: 3
                  requires: [all-builds]
        """,
        """
        jobs:
          build-v1: {docker: [{image: cimg/base:2024.01}], steps: [run: build 1]}
          build-v2: {docker: [{image: cimg/base:2024.01}], steps: [run: build 2]}
          ship-v1: {docker: [{image: cimg/base:2024.01}], steps: [run: ship 1]}
          ship-v2: {docker: [{image: cimg/base:2024.01}], steps: [run: ship 2]}
          last: {docker: [{image: cimg/base:2024.01}], steps: [run: build 3]}
        workflows:
          version: 2
          main:
            jobs:
              - build-v1
              - build-v2
              - ship-v1: {requires: [build-v1]}
              - ship-v2: {requires: [build-v2]}
              - last: {requires: [build-v1, build-v2]}
        """,
        id="matrix-explicit-names-alias-and-matrix-requires",
    ),
    pytest.param(
        f"""
        jobs:
          build:
            {DOCKER}
            parameters: {{n: {{type: integer, default: 0}}}}
            steps: [run: echo << parameters.n >>]
        workflows:
          main:
            jobs: [build, {{build: {{n: 1}}}}, {{build: {{n: 2, context: [org]}}}}]
        """,
        """
        jobs:
          build: {docker: [{image: cimg/base:2024.01}], steps: [run: echo 0]}
          build-1: {docker: [{image: cimg/base:2024.01}], steps: [run: echo 1]}
          build-2: {docker: [{image: cimg/base:2024.01}], steps: [run: echo 2]}
        workflows:
          version: 2
          main: {jobs: [build, build-1, {build-2: {context: [org]}}]}
        """,
        id="repeated-invocations-get-suffixes",
    ),
    pytest.param(
        f"""
        parameters:
          nightly: {{type: boolean, default: false}}
        jobs:
          build:
            {DOCKER}
            steps: [checkout]
        workflows:
          on-main:
            when: {{equal: [main, << pipeline.git.branch >>]}}
            jobs: [build, {{hold: {{type: approval, requires: [build]}}}}]
          nightly:
            when: << pipeline.parameters.nightly >>
            jobs: [build]
          not-main:
            unless: {{matches: {{pattern: main, value: << pipeline.git.branch >>}}}}
            jobs: [build]
        """,
        """
        jobs:
          build: {docker: [{image: cimg/base:2024.01}], steps: [checkout]}
        workflows:
          version: 2
          on-main: {jobs: [build, {hold: {type: approval, requires: [build]}}]}
        """,
        id="workflow-when-unless-and-approval",
    ),
    pytest.param(
        """
        defaults: &defaults
          docker: [{image: cimg/base:2024.01}]
          working_directory: /tmp/x
        jobs:
          build:
            <<: *defaults
            steps: [checkout]
          test:
            <<: *defaults
            working_directory: /tmp/y
            steps: [checkout]
        workflows:
          main: {jobs: [build, test]}
        """,
        """
        jobs:
          build: {docker: [{image: cimg/base:2024.01}], working_directory: /tmp/x, steps: [checkout]}
          test: {docker: [{image: cimg/base:2024.01}], working_directory: /tmp/y, steps: [checkout]}
        workflows: {version: 2, main: {jobs: [build, test]}}
        """,
        id="anchors-and-merge-keys",
    ),
    pytest.param(
        f"""
        jobs:
          build:
            {DOCKER}
            steps: [checkout]
          other:
            {DOCKER}
            parameters: {{x: {{type: string}}}}
            steps: [checkout]
        """,
        """
        jobs:
          build: {docker: [{image: cimg/base:2024.01}], steps: [checkout]}
        """,
        id="no-workflows-compiles-jobs-needing-no-arguments",
    ),
]

ORBS = {
    "acme/node@1.2.3": dedent(
        """
        executors:
          default:
            docker: [{image: "cimg/node:18"}]
        commands:
          install:
            steps: [run: npm ci]
        """
    )
}


@pytest.mark.parametrize(("text", "want"), COMPILED)
def test_compiles(text: str, want: str) -> None:
    assert compile_text(text, orbs=ORBS) == expected(want)


# -- errors ------------------------------------------------------------------------------------

ERRORS = [
    pytest.param(
        one_job("- run: cat <<EOF"), {}, "Unclosed '<<' tag ('<<' must be escaped as '\\<<')", id="heredoc"
    ),
    pytest.param(
        one_job("- run: echo << parameters.nope >>"),
        {},
        "Arguments referenced without declared parameters: nope",
        id="undeclared-parameter",
    ),
    pytest.param(
        one_job("- run: echo << pipeline.git.branch == 'main' >>"),
        {},
        "expressions inside '<< >>' are not supported",
        id="expression-syntax",
    ),
    pytest.param(
        one_job("- run: <<# pipeline.parameters.flag >>x", PIPELINE_DECLS),
        {},
        "is never closed",
        id="unclosed-section",
    ),
    pytest.param(
        one_job("- run: x", PIPELINE_DECLS),
        {"zzz": 1},
        "Unexpected argument(s): zzz",
        id="unknown-pipeline-arg",
    ),
    pytest.param(
        one_job("- run: x", "parameters: {need: {type: string}}"),
        {},
        "Missing required argument(s): need",
        id="missing-pipeline-parameter",
    ),
    pytest.param(
        one_job("- run: x", PIPELINE_DECLS),
        {"flag": "maybe"},
        "argument flag: must be a boolean",
        id="bad-boolean",
    ),
    pytest.param(
        one_job("- run: x", PIPELINE_DECLS), {"n": "ten"}, "argument n: must be an integer", id="bad-integer"
    ),
    pytest.param(
        one_job("- run: x", "parameters: {s: {type: string, default: yes}}"),
        {},
        "parameter s: default must be a string, not true (quote it)",
        id="unquoted-boolean-as-string",
    ),
    pytest.param(
        one_job("- run: x", "parameters: {s: {type: steps, default: []}}"),
        {},
        "`type` must be one of string, boolean, integer, enum",
        id="pipeline-parameter-type-limited",
    ),
    pytest.param(
        one_job("- run: x", "parameters: {s: {type: string, default: a}}"),
        {"s": "x" * 513},
        "value longer than 512 characters",
        id="pipeline-value-too-long",
    ),
    pytest.param(
        one_job(
            "- c: {e: Bad-Name}",
            "commands: {c: {parameters: {e: {type: env_var_name}}, steps: [run: echo $<< parameters.e >>]}}",
        ),
        {},
        "argument e: must be an environment variable name",
        id="env-var-name",
    ),
    pytest.param(
        one_job(
            "- c: {e: c}", "commands: {c: {parameters: {e: {type: enum, enum: [a, b]}}, steps: [run: x]}}"
        ),
        {},
        "argument e: must be one of a, b, not 'c'",
        id="enum-value",
    ),
    pytest.param(
        one_job(
            "- c", "commands: {c: {parameters: {e: {type: enum, enum: [a], default: z}}, steps: [run: x]}}"
        ),
        {},
        "parameter e: default must be one of a, not 'z'",
        id="enum-default",
    ),
    pytest.param(
        one_job("- c: {nope: 1}", "commands: {c: {steps: [run: x]}}"),
        {},
        "Unexpected argument(s): nope",
        id="unexpected-command-argument",
    ),
    pytest.param(
        one_job("- a", "commands: {a: {steps: [b]}, b: {steps: [a]}}"),
        {},
        "command recursion: a -> b -> a",
        id="recursion",
    ),
    pytest.param(one_job("- frobnicate"), {}, "unknown step or command 'frobnicate'", id="unknown-command"),
    pytest.param(
        one_job("- run: x", "orbs: {node: circleci/node@5.0.2}"),
        {},
        "Cannot find orb circleci/node@5.0.2",
        id="registry-orb-missing",
    ),
    pytest.param(
        one_job("- when: {condition: {and: []}, steps: [run: x]}"),
        {},
        "`and` takes a list of statements, not an empty list",
        id="logic-empty-list",
    ),
    pytest.param(
        one_job("- when: {condition: {matches: {pattern: '(', value: x}}, steps: [run: x]}"),
        {},
        "`matches`:",
        id="logic-bad-regex",
    ),
    pytest.param(
        "executors: {e: {parameters: {s: {type: steps}}, docker: [{image: x}]}}\n"
        "jobs: {build: {executor: e, steps: [checkout]}}\nworkflows: {main: {jobs: [build]}}\n",
        {},
        "`type` must be one of string, enum, boolean",
        id="executor-parameter-types",
    ),
    pytest.param(
        "jobs: {build: {executor: nope, steps: [checkout]}}\nworkflows: {main: {jobs: [build]}}\n",
        {},
        "executor 'nope' is not defined",
        id="unknown-executor",
    ),
    pytest.param(
        f"jobs: {{build: {{{DOCKER}, parameters: {{requires: {{type: string}}}}, steps: [checkout]}}}}\n"
        "workflows: {main: {jobs: [build]}}\n",
        {},
        "`requires` is reserved and cannot be a job parameter",
        id="reserved-job-parameter",
    ),
    pytest.param(
        f"jobs: {{build: {{{DOCKER}, steps: [checkout]}}, b: {{{DOCKER}, steps: [checkout]}}}}\n"
        "workflows: {main: {jobs: [build, build, {b: {requires: [build]}}]}}\n",
        {},
        "job 'build' is invoked more than once in workflow main; give the required invocation a `name:`",
        id="required-duplicate-needs-name",
    ),
    pytest.param(
        f"jobs: {{build: {{{DOCKER}, steps: [checkout]}}}}\nworkflows: {{main: {{jobs: [missing]}}}}\n",
        {},
        "job 'missing' is not defined",
        id="unknown-job",
    ),
    pytest.param(
        f"jobs: {{build: {{{DOCKER}, steps: [checkout]}}}}\n"
        "workflows: {main: {jobs: [{build: {requires: [ghost]}}]}}\n",
        {},
        "`requires` names 'ghost', which is not a job of workflow main",
        id="unknown-requirement",
    ),
    pytest.param(
        "commands: {Bad.Name: {steps: [run: x]}}\n" + one_job("- checkout"),
        {},
        "invalid command name 'Bad.Name'",
        id="invalid-element-name",
    ),
    pytest.param(
        "orbs:\n  o:\n    jobs:\n      j:\n        docker: [{image: x}]\n"
        "        steps: [run: << pipeline.git.branch >>]\n"
        "workflows: {main: {jobs: [o/j]}}\n",
        {},
        "orbs cannot use pipeline values: pipeline.git.branch",
        id="orbs-have-no-pipeline-scope",
    ),
]


@pytest.mark.parametrize(("text", "given", "message"), ERRORS)
def test_errors(text: str, given: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_text(text, parameters=given)
    messages = [p.message for p in caught.value.problems]
    assert any(message in m for m in messages), messages


def test_every_problem_is_reported_with_path_and_line() -> None:
    text = one_job("- run: echo << parameters.a >>\n- run: cat <<EOF\n- nope")
    with pytest.raises(ConfigError) as caught:
        compile_text(text)
    problems = caught.value.problems
    assert [p.message for p in problems] == [
        "Arguments referenced without declared parameters: a",
        "Unclosed '<<' tag ('<<' must be escaped as '\\<<')",
        "unknown step or command 'nope'",
    ]
    assert [(p.path, p.line) for p in problems] == [
        ("jobs.build.steps[0].run", 7),
        ("jobs.build.steps[1].run", 8),
        ("jobs.build.steps[2]", 9),
    ]


def test_render_config_prints_version_2_jobs_workflows() -> None:
    config = compile_config(load_config("version: 2.1\n" + one_job("- checkout")), pipeline=PIPELINE)
    text = render_config(config)
    assert text.startswith("version: 2\njobs:\n  build:\n")
    assert "workflows:\n  version: 2\n  main:\n" in text


def test_version_2_is_returned_unchanged_and_keeps_heredocs() -> None:
    config = load_config(f"version: 2\njobs:\n  build:\n    {DOCKER}\n    steps: [run: cat <<EOF]\n")
    assert compile_config(config, pipeline=PIPELINE) is config


def test_compiled_config_plans() -> None:
    config = compile_config(
        load_config("version: 2.1\n" + one_job("- run: echo << pipeline.git.branch >>")), pipeline=PIPELINE
    )
    assert config.version == "2"
    assert plan_job(config, "build").steps[0].command == "echo main"
    assert config.text == ""  # rendering is on demand
    assert load_config(render_config(config)).jobs == config.jobs


# -- speed -------------------------------------------------------------------------------------


def big_config(jobs: int = 100) -> str:
    lines = ["version: 2.1", "executors:"]
    for e in range(5):
        lines += [
            f"  ex{e}:",
            "    parameters: {tag: {type: string, default: '1'}}",
            f"    docker: [{{image: 'img{e}:<< parameters.tag >>'}}]",
            "    environment: {A: a}",
        ]
    lines.append("commands:")
    for c in range(20):
        lines += [
            f"  cmd{c}:",
            "    parameters:",
            "      text: {type: string, default: hello}",
            "      flag: {type: boolean, default: false}",
            "    steps:",
            "      - run: echo << parameters.text >> <<# parameters.flag >>yes<</ parameters.flag >>",
            "      - run:",
            f"          name: step {c}",
            "          command: |",
            "            echo one << parameters.text >>",
            "            echo two \\<<EOF",
        ]
        if c:
            lines.append(f"      - cmd{c - 1}: {{text: nested}}" if c % 5 else "      - checkout")
    lines.append("jobs:")
    for j in range(jobs):
        lines += [
            f"  job{j}:",
            "    parameters: {v: {type: string, default: '1'}, os: {type: string, default: linux}}",
            f"    executor: {{name: ex{j % 5}, tag: << parameters.v >>}}",
            "    steps:",
            "      - checkout",
        ]
        for c in range(0, 20, 4):
            lines += [
                f"      - cmd{(c + j) % 20}:",
                "          text: << parameters.os >>",
                "          flag: true",
            ]
        lines += [
            "      - when:",
            "          condition: {equal: [main, << pipeline.git.branch >>]}",
            "          steps: [run: deploy]",
        ]
    lines += ["workflows:", "  main:", "    jobs:"]
    for j in range(jobs):
        lines += [
            f"      - job{j}:",
            "          matrix: {parameters: {v: ['1', '2'], os: [linux, mac]}}",
        ]
        if j:
            lines.append(f"          requires: [job{j - 1}]")
    return "\n".join(lines) + "\n"


def test_big_config_compiles_fast() -> None:
    text = big_config()
    assert 2500 <= text.count("\n") <= 4000
    config = load_config(text)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        compiled = compile_config(config, pipeline=PIPELINE)
        best = min(best, time.perf_counter() - start)
    assert len(compiled.jobs) == 400
    print(f"compiled {text.count(chr(10))} lines in {best * 1000:.1f} ms (best of 5)")
    assert best < 0.1, f"best of 5: {best * 1000:.1f} ms"
