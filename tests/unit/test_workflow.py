"""core/workflow.py, table-driven: parsing (with errors and their key paths), filters, job
selection, readiness, statuses, `[ci skip]`."""

from __future__ import annotations

from textwrap import dedent, indent

import pytest

from circlet.core.compile import PipelineValues, compile_config
from circlet.core.config import load_config
from circlet.core.errors import ConfigError
from circlet.core.model import Outcome
from circlet.core.workflow import (
    Filters,
    JobSpec,
    JobState,
    JobType,
    Moves,
    Patterns,
    Requirement,
    WorkflowSpec,
    WorkflowStatus,
    ci_skip,
    downstream_of,
    next_moves,
    runs_for,
    select_jobs,
    state_of_outcome,
    upstream_of,
    workflow_status,
)
from circlet.core.workflow_config import parse_workflows

B, H, R, S, F, C, N = (
    JobState.BLOCKED,
    JobState.ON_HOLD,
    JobState.RUNNING,
    JobState.SUCCESS,
    JobState.FAILED,
    JobState.CANCELED,
    JobState.NOT_RUN,
)
JOBS = "jobs:\n" + "".join(f"  {n}: {{docker: [{{image: x}}], steps: [{{run: 'true'}}]}}\n" for n in "abcd")


def spec(text: str, version: str = "2") -> tuple[WorkflowSpec, ...]:
    return parse_workflows(load_config(f"version: {version}\n{JOBS}workflows:\n{indent(dedent(text), '  ')}"))


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        spec(text)
    return [str(p) for p in info.value.problems]


# ---------------------------------------------------------------- parsing


def test_parse_reads_every_option() -> None:
    [w] = spec(
        """\
        version: 2
        main:
          jobs:
            - a
            - b: {requires: [a], context: prod, filters: {branches: {only: [main, /rel-.*/]}}}
            - hold: {type: approval, requires: [b]}
            - c: {requires: [{a: [failed, canceled]}, {hold: terminal}], context: [x, y]}
        """
    )
    assert w.name == "main" and not w.scheduled
    a, b, hold, c = w.jobs
    assert a == JobSpec(name="a")
    assert b.requires == (Requirement(job="a"),) and b.contexts == ("prod",)
    assert b.filters == Filters(branches=Patterns(only=("main", "/rel-.*/")))
    assert hold.type is JobType.APPROVAL
    assert c.requires == (
        Requirement(job="a", statuses=frozenset({F, C})),
        Requirement(job="hold", statuses=frozenset({S, F, C, N})),
    )
    assert c.contexts == ("x", "y")


def test_mis_indented_siblings_are_options_and_triggers_make_a_workflow_scheduled() -> None:
    [w, nightly] = spec(
        """\
        w:
          jobs:
            - a
            - b:
              requires: [a]
        nightly:
          triggers: [{schedule: {cron: "0 0 * * *", filters: {branches: {only: main}}}}]
          jobs: [a]
        """
    )
    assert w.jobs[1].requires == (Requirement(job="a"),)
    assert nightly.scheduled
    assert select_jobs(nightly, branch="main", tag=None) == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "w:\n  jobs: [a, {b: {requires: [zz]}}]\n",
            [
                ".circleci/config.yml:9 (workflows.w.jobs[1].b.requires[0]): "
                "`requires` names 'zz', which is not a job of workflow w"
            ],
            id="unknown-requirement",
        ),
        pytest.param(
            "w:\n  jobs: [nope]\n",
            [".circleci/config.yml:9 (workflows.w.jobs[0]): job 'nope' is not defined in `jobs`"],
            id="unknown-job",
        ),
        pytest.param(
            "w:\n  jobs:\n    - a: {requires: [c]}\n    - b: {requires: [a]}\n    - c: {requires: [b]}\n",
            [
                ".circleci/config.yml:10 (workflows.w.jobs[0].a.requires): "
                "the jobs of workflow w require each other in a cycle: a -> c -> b -> a"
            ],
            id="cycle",
        ),
        pytest.param(
            "w:\n  jobs:\n    - a: {filters: {branches: {only: '/fo(o/'}}}\n",
            [
                ".circleci/config.yml:10 (workflows.w.jobs[0].a.filters.branches.only): "
                "invalid regular expression /fo(o/: missing ), unterminated subpattern at position 2"
            ],
            id="bad-regex",
        ),
        pytest.param(
            "w:\n  jobs:\n    - a: {filters: {branch: {only: main}}}\n",
            [
                ".circleci/config.yml:10 (workflows.w.jobs[0].a.filters.branch): "
                "unknown filter 'branch': use `branches` or `tags`"
            ],
            id="bad-filter-key",
        ),
        pytest.param(
            "w:\n  jobs:\n    - a: {filters: {tags: {only: [v1, 3]}}}\n",
            [
                ".circleci/config.yml:10 (workflows.w.jobs[0].a.filters.tags.only[1]): "
                "a filter pattern must be a name or a /regular expression/"
            ],
            id="bad-pattern",
        ),
        pytest.param(
            "w:\n  jobs:\n    - a\n    - b: {requires: [{a: finished}]}\n",
            [
                ".circleci/config.yml:11 (workflows.w.jobs[1].b.requires[0].a): unknown status 'finished' "
                "for 'a': use one of success, failed, canceled, not_run, terminal"
            ],
            id="bad-status",
        ),
        pytest.param(
            "w:\n  jobs:\n    - a: {type: manual}\n    - a\n",
            [
                ".circleci/config.yml:10 (workflows.w.jobs[0].a.type): "
                "unknown job `type` 'manual': the only type is approval",
                ".circleci/config.yml:11 (workflows.w.jobs[1]): workflow w lists job 'a' twice",
            ],
            id="bad-type-and-duplicate",
        ),
        pytest.param(
            "w:\n  jobs: []\nv: 3\n",
            [
                ".circleci/config.yml:9 (workflows.w.jobs): a workflow needs a non-empty list of `jobs`",
                ".circleci/config.yml:10 (workflows.v): a workflow must be a mapping with `jobs`",
            ],
            id="empty-and-not-a-mapping",
        ),
        pytest.param(
            "w:\n  jobs:\n    - a: {context: [1]}\n",
            [
                ".circleci/config.yml:10 (workflows.w.jobs[0].a.context): "
                "`context` must be a name or a list of names"
            ],
            id="bad-context",
        ),
    ],
)
def test_parse_errors_name_the_bad_key(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


def test_compiled_21_matrix_alias_requires_every_expansion() -> None:
    config = load_config(
        dedent(
            """\
            version: 2.1
            jobs:
              t:
                parameters: {v: {type: string}}
                docker: [{image: x}]
                steps: [{run: "echo << parameters.v >>"}]
              d: {docker: [{image: x}], steps: [{run: 'true'}]}
            workflows:
              w:
                jobs:
                  - t: {matrix: {alias: tests, parameters: {v: ["1", "2"]}}}
                  - d: {requires: [tests]}
              off:
                when: false
                jobs: [d]
            """
        )
    )
    [w] = parse_workflows(compile_config(config, pipeline=PipelineValues()))
    assert [j.name for j in w.jobs] == ["t-1", "t-2", "d"]
    assert w.jobs[2].requires == (Requirement(job="t-1"), Requirement(job="t-2"))


# ---------------------------------------------------------------- filters and selection


@pytest.mark.parametrize(
    ("filters", "branch", "tag", "runs"),
    [
        pytest.param(None, "main", None, True, id="no-filters-branch"),
        pytest.param(None, None, "v1", False, id="no-filters-tag"),
        pytest.param(Filters(branches=Patterns(only=("main",))), "main", None, True, id="only-exact"),
        pytest.param(
            Filters(branches=Patterns(only=("main",))), "mainline", None, False, id="only-exact-not-prefix"
        ),
        pytest.param(Filters(branches=Patterns(only=("/feat-.*/",))), "feat-x", None, True, id="only-regex"),
        pytest.param(
            Filters(branches=Patterns(only=("/feat/",))), "feat-x", None, False, id="regex-is-full-match"
        ),
        pytest.param(
            Filters(branches=Patterns(ignore=("/dev.*/",))), "dev1", None, False, id="ignore-matches"
        ),
        pytest.param(Filters(branches=Patterns(ignore=("/dev.*/",))), "main", None, True, id="ignore-misses"),
        pytest.param(
            Filters(branches=Patterns(only=("main",), ignore=("main",))),
            "main",
            None,
            True,
            id="only-beats-ignore",
        ),
        pytest.param(
            Filters(branches=Patterns(only=("main",))), None, "v1", False, id="branch-filter-on-tag"
        ),
        pytest.param(Filters(tags=Patterns(only=("/^v.*/",))), None, "v1.2", True, id="tag-only"),
        pytest.param(Filters(tags=Patterns(only=("/^v.*/",))), None, "x1", False, id="tag-only-misses"),
        pytest.param(Filters(tags=Patterns(ignore=("/^x.*/",))), None, "v1", True, id="tag-ignore"),
        pytest.param(Filters(tags=Patterns()), None, "v1", True, id="tags-present-empty"),
        pytest.param(
            Filters(branches=Patterns(ignore=("/.*/",)), tags=Patterns(only=("/^v.*/",))),
            "main",
            None,
            False,
            id="tag-only-job-on-branch",
        ),
        pytest.param(Filters(tags=Patterns(only=("/^v.*/",))), "main", None, True, id="tag-filter-on-branch"),
    ],
)
def test_runs_for(filters: Filters | None, branch: str | None, tag: str | None, runs: bool) -> None:
    assert runs_for(filters, branch=branch, tag=tag) is runs


TAGGED = Filters(tags=Patterns(only=("/.*/",)))
MAIN_ONLY = Filters(branches=Patterns(only=("main",)))


@pytest.mark.parametrize(
    ("jobs", "branch", "tag", "selected"),
    [
        pytest.param(
            [JobSpec(name="a"), JobSpec(name="b", requires=(Requirement(job="a"),))],
            "x",
            None,
            {"a": [], "b": ["a"]},
            id="all",
        ),
        pytest.param(
            [
                JobSpec(name="a", filters=MAIN_ONLY),
                JobSpec(name="z"),
                JobSpec(name="b", requires=(Requirement(job="a"), Requirement(job="z"))),
            ],
            "dev",
            None,
            {"z": [], "b": ["z"]},
            id="filtered-requirement-dropped",
        ),
        pytest.param(
            [
                JobSpec(name="a", filters=MAIN_ONLY),
                JobSpec(name="b", requires=(Requirement(job="a"),)),
                JobSpec(name="c", requires=(Requirement(job="b"),)),
            ],
            "dev",
            None,
            {},
            id="all-requirements-filtered-drops-the-job-and-below",
        ),
        pytest.param(
            [JobSpec(name="a"), JobSpec(name="b", filters=TAGGED, requires=(Requirement(job="a"),))],
            None,
            "v1",
            {},
            id="tag-needs-tag-filters-on-requirements-too",
        ),
        pytest.param(
            [
                JobSpec(name="a", filters=TAGGED),
                JobSpec(name="b", filters=TAGGED, requires=(Requirement(job="a"),)),
            ],
            None,
            "v1",
            {"a": [], "b": ["a"]},
            id="tag-chain",
        ),
    ],
)
def test_select_jobs(
    jobs: list[JobSpec], branch: str | None, tag: str | None, selected: dict[str, list[str]]
) -> None:
    found = select_jobs(WorkflowSpec(name="w", jobs=tuple(jobs)), branch=branch, tag=tag)
    assert {j.name: [r.job for r in j.requires] for j in found} == selected


# ---------------------------------------------------------------- readiness and status


def _jobs(*pairs: tuple[str, tuple[Requirement, ...]]) -> list[JobSpec]:
    return [JobSpec(name=n, requires=r) for n, r in pairs]


A_B = _jobs(("a", ()), ("b", (Requirement(job="a"),)), ("c", (Requirement(job="b"),)))
ON_FAIL = _jobs(("a", ()), ("b", (Requirement(job="a", statuses=frozenset({F})),)))
FAN_IN = _jobs(("a", ()), ("b", ()), ("c", (Requirement(job="a"), Requirement(job="b"))))


@pytest.mark.parametrize(
    ("jobs", "states", "moves"),
    [
        pytest.param(A_B, {"a": B, "b": B, "c": B}, Moves(start=("a",)), id="roots-start"),
        pytest.param(A_B, {"a": R, "b": B, "c": B}, Moves(), id="waits-for-running"),
        pytest.param(A_B, {"a": S, "b": B, "c": B}, Moves(start=("b",)), id="next-after-success"),
        pytest.param(A_B, {"a": F, "b": B, "c": B}, Moves(not_run=("b", "c")), id="failure-cascades"),
        pytest.param(A_B, {"a": C, "b": B, "c": B}, Moves(not_run=("b", "c")), id="cancel-cascades"),
        pytest.param(ON_FAIL, {"a": F, "b": B}, Moves(start=("b",)), id="status-condition-failed"),
        pytest.param(ON_FAIL, {"a": S, "b": B}, Moves(not_run=("b",)), id="status-condition-unmet"),
        pytest.param(FAN_IN, {"a": S, "b": R, "c": B}, Moves(), id="fan-in-waits"),
        pytest.param(FAN_IN, {"a": S, "b": S, "c": B}, Moves(start=("c",)), id="fan-in-starts"),
        pytest.param(FAN_IN, {"a": S, "b": F, "c": B}, Moves(not_run=("c",)), id="fan-in-one-failed"),
    ],
)
def test_next_moves(jobs: list[JobSpec], states: dict[str, JobState], moves: Moves) -> None:
    assert next_moves(jobs, states) == moves


@pytest.mark.parametrize(
    ("states", "status"),
    [
        pytest.param([R, B], WorkflowStatus.RUNNING, id="running"),
        pytest.param([F, R], WorkflowStatus.FAILING, id="failing"),
        pytest.param([F, N], WorkflowStatus.FAILED, id="failed"),
        pytest.param([S, S], WorkflowStatus.SUCCESS, id="success"),
        pytest.param([S, N], WorkflowStatus.SUCCESS, id="success-with-unmet-conditions"),
        pytest.param([S, H, B], WorkflowStatus.ON_HOLD, id="on-hold"),
        pytest.param([H, R], WorkflowStatus.RUNNING, id="hold-beside-running"),
        pytest.param([C, N], WorkflowStatus.CANCELED, id="canceled"),
        pytest.param([C, F], WorkflowStatus.FAILED, id="failed-beats-canceled"),
        pytest.param([N, N], WorkflowStatus.NOT_RUN, id="not-run"),
        pytest.param([], WorkflowStatus.NOT_RUN, id="empty"),
    ],
)
def test_workflow_status(states: list[JobState], status: WorkflowStatus) -> None:
    assert workflow_status(states) is status


@pytest.mark.parametrize(
    ("outcome", "state"),
    [
        (Outcome.SUCCESS, S),
        (Outcome.FAILED, F),
        (Outcome.TIMEDOUT, F),
        (Outcome.INFRASTRUCTURE_FAIL, F),
        (Outcome.NO_TESTS, F),
        (Outcome.CANCELED, C),
        (None, N),
    ],
)
def test_state_of_outcome(outcome: Outcome | None, state: JobState) -> None:
    assert state_of_outcome(outcome) is state


def test_upstream_is_transitive_requirements_first() -> None:
    jobs = _jobs(("a", ()), ("b", (Requirement(job="a"),)), ("x", ()), ("c", (Requirement(job="b"),)))
    assert upstream_of(jobs, "c") == ("a", "b")
    assert upstream_of(jobs, "a") == ()


@pytest.mark.parametrize(
    ("name", "below"),
    [
        ("a", ("b", "c", "d")),  # a diamond: both sides and the fan-in, once each
        ("b", ("d",)),
        ("d", ()),
        ("x", ()),  # a job nothing requires
        ("gone", ()),  # not a job of the workflow
    ],
)
def test_downstream_is_every_job_below_in_config_order(name: str, below: tuple[str, ...]) -> None:
    jobs = _jobs(
        ("a", ()),
        ("b", (Requirement(job="a"),)),
        ("c", (Requirement(job="a", statuses=frozenset({F})),)),
        ("x", ()),
        ("d", (Requirement(job="b"), Requirement(job="c"))),
    )
    assert downstream_of(jobs, name) == below


@pytest.mark.parametrize(
    ("subject", "body", "skip"),
    [
        ("Fix [ci skip]", "", True),
        ("Fix", "details\n[skip ci]", True),
        ("Fix [CI SKIP]", "", False),
        ("Fix [ci-skip]", "", False),
        ("Fix", "x" * 260 + "[ci skip]", False),
        ("Fix", "x" * 200 + "[ci skip]", True),
    ],
    ids=["subject", "body", "case-sensitive", "exact-form", "beyond-250", "within-250"],
)
def test_ci_skip(subject: str, body: str, skip: bool) -> None:
    assert ci_skip(subject, body) is skip
