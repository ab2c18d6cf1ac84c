"""The service (Circlet) on fakes only: in-memory store and logs, FakeSourceHost, RecordingDispatcher.

Tests assert on what the service leaves behind (store rows, submitted requests, the fake's state),
never on which methods it called. Times come from a clock the test moves by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from textwrap import dedent
from typing import Any

import pytest

from circlet.core.config import load_config, plan_job
from circlet.core.errors import InvalidRequest, JobNotRunnable, NotFound, RepositoryError, UnknownRevision
from circlet.core.model import (
    Action,
    ActionStatus,
    Build,
    Executor,
    Lifecycle,
    Message,
    Outcome,
    Project,
    Scope,
    User,
    VcsType,
    Why,
)
from circlet.core.plan import JobPlan
from circlet.core.ports import BuildQuery, RunRequest
from circlet.journal import ActionJournal
from circlet.service import Circlet
from circlet.testing import (
    FakeSourceHost,
    InMemoryBuildStore,
    InMemoryLogStore,
    InMemoryProjectSettingsStore,
    RecordingDispatcher,
)
from circlet.testing.clock import FakeClock

T0 = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
BASE_URL = "https://ci.example.com/"
URL = "https://git.example/acme/widget.git"

CONFIG = dedent(
    """\
    version: 2
    jobs:
      build:
        docker:
          - image: cimg/base:2024.01
        parallelism: 2
        steps:
          - checkout
          - run: make test
      deploy:
        docker:
          - image: cimg/deploy:1.0
        steps:
          - run: make deploy
    """
)

# ------------------------------------------------------------------ fixtures and helpers


@dataclass
class Env:
    svc: Circlet
    store: InMemoryBuildStore
    source: FakeSourceHost
    dispatcher: RecordingDispatcher
    clock: FakeClock
    project: Project
    first: str  # main's first commit, tag v1
    main: str  # main's head
    feature: str  # feature/x's head

    def builds(self) -> list[Build]:
        """Every build of the project, oldest first."""
        found = self.store.list_builds(BuildQuery(project_ids=(self.project.id or 0,), limit=1000))
        return sorted(found, key=lambda b: b.build_num)

    def build(self, build_num: int) -> Build:
        build = self.store.get_build(self.project.id or 0, build_num)
        assert build is not None
        return build

    def request(self, build: Build) -> RunRequest:
        """The one request submitted for this build."""
        found = [r for r in self.dispatcher.submitted if r.build_id == build.id]
        assert len(found) == 1, f"{len(found)} requests for build {build.build_num}"
        return found[0]

    def commit_config(self, text: str | None, *, branch: str = "main") -> str:
        return self.source.add_commit(URL, branch=branch, files={".circleci/config.yml": text}, message="cfg")


def make_service(store: InMemoryBuildStore, source: FakeSourceHost, clock: FakeClock) -> Circlet:
    return Circlet(
        store=store,
        logs=InMemoryLogStore(),
        source=source,
        dispatcher=RecordingDispatcher(),
        settings=InMemoryProjectSettingsStore(),
        base_url=BASE_URL,
        clock=clock,
    )


@pytest.fixture
def env() -> Iterator[Env]:
    source = FakeSourceHost()
    first = source.add_commit(
        URL, files={".circleci/config.yml": CONFIG, "README.md": "hi\n"}, message="First"
    )
    source.tag(URL, "v1", first)
    main = source.add_commit(URL, files={"README.md": "hello\n"}, message="Second\n\nWith a body.")
    feature = source.add_commit(URL, branch="feature/x", files={"f.txt": "f\n"}, message="Feature")
    store, clock = InMemoryBuildStore(), FakeClock(T0)
    svc = make_service(store, source, clock)
    project = svc.add_project(vcs_type="gh", username="acme", reponame="widget", repo_url=URL)
    assert isinstance(svc.dispatcher, RecordingDispatcher)
    yield Env(
        svc=svc,
        store=store,
        source=source,
        dispatcher=svc.dispatcher,
        clock=clock,
        project=project,
        first=first,
        main=main,
        feature=feature,
    )
    svc.journal.close()


def user(env: Env, login: str = "ada") -> User:
    return env.svc.ensure_user(login, name=login.title())


def run(env: Env, build: Build, outcome: Outcome = Outcome.SUCCESS) -> Build:
    """Report the build queued, started and finished, one clock tick apart."""
    build_id = build.id or 0
    env.svc.build_queued(build_id, env.clock.tick())
    assert env.svc.build_started(build_id, env.clock.tick(), "w1")
    env.svc.build_finished(build_id, outcome, env.clock.tick())
    return env.build(build.build_num)


def stored(env: Env, project_id: int, **fields: Any) -> Build:
    """A build put in the store directly, with the given fields (for status and view rules)."""
    build = env.store.create_build(Build(project_id=project_id, branch="main"))
    build = replace(build, **fields)
    env.store.save_build(build)
    return build


def action(step: int, status: ActionStatus = ActionStatus.RUNNING, at: datetime = T0) -> Action:
    ended = status is not ActionStatus.RUNNING
    return Action(
        step=step,
        name=f"step {step}",
        status=status,
        start_time=at,
        end_time=at + timedelta(seconds=1) if ended else None,
        exit_code=0 if status is ActionStatus.SUCCESS else None,
    )


# ------------------------------------------------------------------ trigger: which commit


@pytest.mark.parametrize(
    ("kwargs", "branch", "tag", "sha"),
    [
        pytest.param({}, "main", None, "main", id="default-branch"),
        pytest.param({"branch": "feature/x"}, "feature/x", None, "feature", id="branch"),
        pytest.param({"tag": "v1"}, None, "v1", "first", id="tag-has-no-branch"),
        pytest.param({"revision": "first"}, "main", None, "first", id="revision-labelled-default-branch"),
        pytest.param(
            {"branch": "feature/x", "revision": "first"},
            "feature/x",
            None,
            "first",
            id="revision-with-branch",
        ),
        pytest.param(
            {"branch": "feature/x", "tag": "v1"}, "feature/x", "v1", "first", id="tag-on-branch-path"
        ),
    ],
)
def test_trigger_builds_the_right_commit(
    env: Env, kwargs: dict[str, str], branch: str | None, tag: str | None, sha: str
) -> None:
    named = {"first": env.first, "main": env.main, "feature": env.feature}
    if "revision" in kwargs:
        kwargs = {**kwargs, "revision": named[kwargs["revision"]]}
    build = env.svc.trigger(env.project, **kwargs)
    assert (build.branch, build.vcs_tag, build.vcs_revision) == (branch, tag, named[sha])
    assert build.commit == env.source.commit(env.project, named[sha])
    request = env.request(build)
    assert (request.branch, request.tag, request.revision) == (branch, tag, named[sha])
    assert env.source.sync_count(env.project) >= 1


def test_trigger_syncs_so_it_sees_new_commits(env: Env) -> None:
    env.svc.trigger(env.project)
    newer = env.source.add_commit(URL, files={"n.txt": "n\n"}, message="Newer")
    assert env.svc.trigger(env.project).vcs_revision == newer


def test_build_fields(env: Env) -> None:
    ada = user(env)
    params = {"FOO": "bar", "N": 500, "OBJ": {"a": [1, 2]}}
    build = env.svc.trigger(env.project, build_parameters=params, parallel=5, user_id=ada.id)
    assert build == env.build(1)
    assert build.build_num == 1
    assert build.why is Why.API
    assert build.user_id == ada.id
    assert build.build_parameters == params  # echoed as received, not as environment text
    assert build.parallel == 5  # the trigger's `parallel` overrides the job's parallelism: 2
    assert build.lifecycle is Lifecycle.NOT_RUNNING
    assert build.outcome is None
    assert build.usage_queued_at == T0
    assert (build.queued_at, build.start_time, build.stop_time) == (None, None, None)
    assert build.job_name == "build"  # the job it runs; the API's job_name is the requested one
    assert build.extra.get("requested_job") is None
    assert build.config_text == CONFIG
    assert build.executor == Executor(kind="docker", image="cimg/base:2024.01", resource_class="medium")
    assert (build.ssh_enabled, build.no_dependency_cache, build.retry_of) == (False, False, None)
    assert build.messages == ()
    assert build.commit is not None
    assert (build.commit.subject, build.commit.body) == ("Second", "With a body.")
    assert env.svc.status_of(build) == "not_running"


def test_build_numbers_increase(env: Env) -> None:
    made = [env.svc.trigger(env.project, branch=b) for b in ("main", "feature/x", "main")]
    assert [b.build_num for b in made] == [1, 2, 3]
    assert len({b.id for b in made}) == 3
    assert [b.build_num for b in env.builds()] == [1, 2, 3]


# ------------------------------------------------------------------ trigger: the request submitted


def test_the_run_request(env: Env) -> None:
    ada = user(env)
    build = env.svc.trigger(env.project, user_id=ada.id)
    request = env.request(build)
    assert request.build_id == build.id
    assert (request.project, request.build_num) == (env.project, 1)
    assert request.plan == plan_job(load_config(CONFIG), "build")
    assert request.parallelism == 2
    assert request.environment == {
        "CI": "true",
        "CIRCLECI": "true",
        "CIRCLE_SHA1": env.main,
        "CIRCLE_BUILD_NUM": "1",
        "CIRCLE_BUILD_URL": "https://ci.example.com/gh/acme/widget/1",
        "CIRCLE_JOB": "build",
        "CIRCLE_STAGE": "build",
        "CIRCLE_BRANCH": "main",
        "CIRCLE_PROJECT_USERNAME": "acme",
        "CIRCLE_PROJECT_REPONAME": "widget",
        "CIRCLE_REPOSITORY_URL": URL,
        "CIRCLE_WORKING_DIRECTORY": "~/project",
        "CIRCLE_USERNAME": "ada",
    }
    second = env.request(env.svc.trigger(env.project))
    assert second.environment["CIRCLE_BUILD_NUM"] == "2"
    assert second.environment["CIRCLE_PREVIOUS_BUILD_NUM"] == "1"
    assert "CIRCLE_USERNAME" not in second.environment


def test_a_tag_build_has_circle_tag_and_no_branch(env: Env) -> None:
    environment = env.request(env.svc.trigger(env.project, tag="v1")).environment
    assert environment["CIRCLE_TAG"] == "v1"
    assert environment["CIRCLE_SHA1"] == env.first
    assert "CIRCLE_BRANCH" not in environment


def test_build_parameters_are_environment_but_never_override_builtins(env: Env) -> None:
    params = {
        "FOO": "bar",
        "N": 500,
        "OBJ": {"a": 1},
        "NOTHING": None,
        "CIRCLE_BRANCH": "evil",
        "CIRCLE_BUILD_NUM": "99",
        "CI": "false",
    }
    environment = env.request(env.svc.trigger(env.project, build_parameters=params)).environment
    assert environment["FOO"] == "bar"
    assert environment["N"] == "500"
    assert environment["OBJ"] == '{"a": 1}'
    assert environment["NOTHING"] == ""
    assert (environment["CIRCLE_BRANCH"], environment["CIRCLE_BUILD_NUM"], environment["CI"]) == (
        "main",
        "1",
        "true",
    )


@pytest.mark.parametrize(
    ("kwargs", "job", "image"),
    [
        pytest.param({}, "build", "cimg/base:2024.01", id="default-job"),
        pytest.param({"job": "deploy"}, "deploy", "cimg/deploy:1.0", id="job-argument"),
        pytest.param(
            {"build_parameters": {"CIRCLE_JOB": "deploy"}}, "deploy", "cimg/deploy:1.0", id="parameter"
        ),
        pytest.param(
            {"job": "build", "build_parameters": {"CIRCLE_JOB": "deploy"}},
            "build",
            "cimg/base:2024.01",
            id="argument-wins",
        ),
    ],
)
def test_job_selection(env: Env, kwargs: dict[str, Any], job: str, image: str) -> None:
    build = env.svc.trigger(env.project, **kwargs)
    request = env.request(build)
    assert request.plan == plan_job(load_config(CONFIG), job)
    assert request.environment["CIRCLE_JOB"] == job
    assert build.executor is not None and build.executor.image == image


# ------------------------------------------------------------------ trigger: refused requests


REFUSED = [
    pytest.param(
        {"revision": "FIRST", "tag": "v1"},
        InvalidRequest,
        "Cannot specify both revision and tag",
        id="revision+tag",
    ),
    pytest.param(
        {"build_parameters": {"BAD-NAME": 1}},
        InvalidRequest,
        "Invalid build parameter name 'BAD-NAME': names must match [A-Za-z_][A-Za-z0-9_]*",
        id="parameter-with-dash",
    ),
    pytest.param(
        {"build_parameters": {"OK": 1, "1X": 2}},
        InvalidRequest,
        "Invalid build parameter name '1X': names must match [A-Za-z_][A-Za-z0-9_]*",
        id="parameter-starting-with-digit",
    ),
    pytest.param({"parallel": 0}, InvalidRequest, "parallel must be a positive integer", id="parallel-zero"),
    pytest.param(
        {"branch": "nope"}, UnknownRevision, 'Branch "nope" not found in the repository', id="unknown-branch"
    ),
    pytest.param({"tag": "v9"}, UnknownRevision, 'Tag "v9" not found in the repository', id="unknown-tag"),
    pytest.param(
        {"revision": "abcdef12"},
        UnknownRevision,
        'Revision "abcdef12" not found in the repository',
        id="unknown-revision",
    ),
    pytest.param(
        {"job": "nope"},
        JobNotRunnable,  # an InvalidRequest (400) that /build knows to handle
        "Cannot find a job named `nope` to run in the `jobs:` section of your configuration file.",
        id="unknown-job-argument",
    ),
    pytest.param(
        {"build_parameters": {"CIRCLE_JOB": "ghost"}},
        JobNotRunnable,  # an InvalidRequest (400) that /build knows to handle
        "Cannot find a job named `ghost` to run in the `jobs:` section of your configuration file.",
        id="unknown-job-parameter",
    ),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), REFUSED)
def test_refused_triggers_create_nothing(
    env: Env, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    if kwargs.get("revision") == "FIRST":
        kwargs = {**kwargs, "revision": env.first}
    with pytest.raises(InvalidRequest) as info:
        env.svc.trigger(env.project, **kwargs)
    assert type(info.value) is error
    assert info.value.message == message
    assert env.builds() == []
    assert env.dispatcher.submitted == []


def test_unreachable_repository_is_an_invalid_request(env: Env) -> None:
    env.source.make_unreachable(URL, "fatal: unable to access 'https://git.example/': Could not resolve host")
    with pytest.raises(InvalidRequest) as info:
        env.svc.trigger(env.project)
    assert type(info.value) is InvalidRequest
    assert info.value.message == (
        "Could not fetch the repository of gh/acme/widget: "
        "fatal: unable to access 'https://git.example/': Could not resolve host"
    )
    assert env.builds() == []


def test_version_2_1_is_refused_with_the_spec_text(env: Env) -> None:
    env.commit_config(CONFIG.replace("version: 2\n", "version: 2.1\n"))
    with pytest.raises(InvalidRequest) as info:
        env.svc.trigger(env.project)
    assert info.value.message == (
        "Triggering a single job is not supported for configurations that specify version: 2.1"
    )
    assert env.builds() == []
    assert env.dispatcher.submitted == []


# ------------------------------------------------------------------ trigger: configs that cannot run


def test_missing_config_infers_the_steps(env: Env) -> None:
    # Nothing to infer from (README.md only): the plan checks out and ends no_tests (config.md 12.2).
    sha = env.commit_config(None, branch="bare")
    build = env.svc.trigger(env.project, branch="bare")
    assert build.lifecycle is Lifecycle.NOT_RUNNING
    assert build.config_text is None
    plan = env.request(build).plan
    assert plan.config_version == "1.0"
    assert [(s.name, s.type, s.source) for s in plan.steps] == [
        ("Checkout code", "checkout", "template"),
        ("Collect test metadata", "teardown", "template"),  # every 1.0 build's teardown
        ("Collect artifacts", "teardown", "template"),
    ]
    assert [m.type for m in build.messages] == ["warning"]
    assert "package.json" in build.messages[0].message
    assert JobPlan.from_dict(build.extra["plan"]) == plan  # kept whole: a restart requeues it as is
    assert sha == build.vcs_revision


def test_a_restart_requeues_inferred_plans_and_parallel_overrides(env: Env) -> None:
    env.commit_config(None, branch="bare")
    inferred = env.svc.trigger(env.project, branch="bare")
    wide = env.svc.trigger(env.project, parallel=5)
    first = {r.build_id: (r.plan, r.parallelism) for r in env.dispatcher.submitted}
    env.dispatcher.submitted.clear()
    env.svc.recover()  # both still wait: a new server dispatches them again from the store
    again = {r.build_id: (r.plan, r.parallelism) for r in env.dispatcher.submitted}
    assert again == first
    assert again[wide.id or 0][1] == 5 and again[inferred.id or 0][0].config_version == "1.0"


@pytest.mark.parametrize(
    ("text", "messages"),
    [
        pytest.param(
            "version: 2\njobs:\n  build:\n    docker:\n      - image: cimg/base:2024.01\n"
            "    parallelism: zero\n    steps:\n      - frobnicate\n",
            [
                ".circleci/config.yml:6 (jobs.build.parallelism): "
                "`parallelism` must be a whole number of at least 1, not 'zero'",
                ".circleci/config.yml:8 (jobs.build.steps[0]): unknown step 'frobnicate'",
            ],
            id="two-problems-in-the-job",
        ),
        pytest.param(
            "version: 2\njobs:\n  build:\n    steps: [\n",
            [
                ".circleci/config.yml:5: invalid YAML: "
                "while parsing a flow node; did not find expected node content"
            ],
            id="yaml-syntax",
        ),
    ],
)
def test_broken_config_makes_a_failed_build_with_every_problem(
    env: Env, text: str, messages: list[str]
) -> None:
    env.commit_config(text)
    build = env.svc.trigger(env.project)
    assert (build.lifecycle, build.outcome) == (Lifecycle.FINISHED, Outcome.FAILED)
    assert [m.message for m in build.messages] == messages
    assert {m.type for m in build.messages} == {"error"}
    assert build.config_text == text
    assert build == env.build(1)
    assert env.dispatcher.submitted == []


# ------------------------------------------------------------------ retry


@pytest.mark.parametrize(
    ("ssh", "no_cache", "why"),
    [
        pytest.param(False, False, Why.RETRY, id="retry"),
        pytest.param(False, True, Why.RETRY, id="retry-without-cache"),
        pytest.param(True, False, Why.SSH, id="retry-with-ssh"),
    ],
)
def test_retry_copies_the_build(env: Env, ssh: bool, no_cache: bool, why: Why) -> None:
    ada, bob = user(env, "ada"), user(env, "bob")
    params = {"X": "1", "N": 2}
    old = env.svc.trigger(
        env.project, branch="feature/x", job="deploy", build_parameters=params, user_id=ada.id
    )
    run(env, old, Outcome.FAILED)
    env.source.add_commit(URL, branch="feature/x", files={"later.txt": "l\n"}, message="Later")
    new = env.svc.retry(env.project, old.build_num, ssh=ssh, no_cache=no_cache, user_id=bob.id)
    assert new == env.build(2)
    assert new.vcs_revision == env.feature  # the same commit, not the branch's new head
    assert (new.branch, new.vcs_tag, new.job_name) == ("feature/x", None, "deploy")
    assert new.build_parameters == params
    assert (new.retry_of, new.why, new.user_id) == (1, why, bob.id)
    assert (new.ssh_enabled, new.no_dependency_cache) == (ssh, no_cache)
    assert new.ssh_users == (("bob",) if ssh else ())
    assert new.lifecycle is Lifecycle.NOT_RUNNING
    request = env.request(new)
    assert (request.revision, request.plan.name) == (env.feature, "deploy")
    assert env.svc.view(env.project, new).previous == env.build(1)
    assert env.svc.view(env.project, env.build(1)).retries == (2,)
    assert env.svc.status_of(env.build(1)) == "failed"  # a manual retry leaves the old status alone


def test_retry_of_a_tag_build(env: Env) -> None:
    old = env.svc.trigger(env.project, tag="v1")
    new = env.svc.retry(env.project, old.build_num)
    assert (new.branch, new.vcs_tag, new.vcs_revision) == (None, "v1", env.first)
    assert env.request(new).tag == "v1"


def test_retry_of_a_tag_build_after_the_tag_moved_builds_the_same_commit(env: Env) -> None:
    old = env.svc.trigger(env.project, tag="v1")
    env.source.tag(URL, "v1", env.main)  # force-moved
    new = env.svc.retry(env.project, old.build_num)
    assert new.vcs_revision == old.vcs_revision == env.first


def test_retry_of_an_unknown_build(env: Env) -> None:
    with pytest.raises(NotFound):
        env.svc.retry(env.project, 99)
    assert env.builds() == []


# ------------------------------------------------------------------ cancel


def test_cancel_of_a_waiting_build(env: Env) -> None:
    ada = user(env)
    build = env.svc.trigger(env.project)
    canceled = env.svc.cancel(env.project, build.build_num, user_id=ada.id)
    assert canceled == env.build(1)
    assert (canceled.outcome, canceled.lifecycle) == (Outcome.CANCELED, Lifecycle.NOT_RUNNING)
    assert (canceled.start_time, canceled.stop_time, canceled.canceler_id) == (None, None, ada.id)
    assert env.svc.status_of(canceled) == "canceled"
    assert env.dispatcher.canceled == [build.id]
    assert env.dispatcher.waiting() == []
    # A runner that took it anyway is told not to run it, and cannot finish it.
    assert env.svc.build_started(build.id or 0, env.clock.tick(), "w1") is False
    env.svc.build_finished(build.id or 0, Outcome.SUCCESS, env.clock.tick())
    assert env.build(1) == canceled


def test_cancel_of_a_queued_build_keeps_its_lifecycle(env: Env) -> None:
    build = env.svc.trigger(env.project)
    env.svc.build_queued(build.id or 0, env.clock.tick())
    canceled = env.svc.cancel(env.project, 1)
    assert (canceled.outcome, canceled.lifecycle) == (Outcome.CANCELED, Lifecycle.QUEUED)
    assert canceled.queued_at == T0 + timedelta(seconds=1)


def test_cancel_of_a_running_build_then_its_runner_finishes(env: Env) -> None:
    build = env.svc.trigger(env.project)
    build_id = build.id or 0
    env.svc.build_queued(build_id, env.clock.tick())
    started_at = env.clock.tick()
    assert env.svc.build_started(build_id, started_at, "w1")
    canceled = env.svc.cancel(env.project, 1)
    assert (canceled.outcome, canceled.lifecycle) == (Outcome.CANCELED, Lifecycle.RUNNING)
    assert env.dispatcher.canceled == [build_id]
    ended_at = env.clock.tick()
    env.svc.build_finished(build_id, Outcome.SUCCESS, ended_at)  # the runner saw its steps pass
    final = env.build(1)
    assert (final.outcome, final.lifecycle) == (Outcome.CANCELED, Lifecycle.FINISHED)
    assert (final.start_time, final.stop_time) == (started_at, ended_at)
    assert env.svc.status_of(final) == "canceled"


@pytest.mark.parametrize("outcome", [Outcome.SUCCESS, Outcome.FAILED, Outcome.CANCELED])
def test_cancel_of_a_finished_build_changes_nothing(env: Env, outcome: Outcome) -> None:
    build = env.svc.trigger(env.project)
    if outcome is Outcome.CANCELED:
        env.svc.cancel(env.project, 1)
        env.dispatcher.canceled.clear()
        before = env.build(1)
    else:
        before = run(env, build, outcome)
    assert env.svc.cancel(env.project, 1, user_id=None) == before
    assert env.build(1) == before
    assert env.dispatcher.canceled == []


def test_cancel_of_an_unknown_build(env: Env) -> None:
    with pytest.raises(NotFound):
        env.svc.cancel(env.project, 5)


# ------------------------------------------------------------------ what runners report


def test_lifecycle_transitions_and_times(env: Env) -> None:
    build = env.svc.trigger(env.project)
    build_id = build.id or 0
    t1, t2, t3, t4, t5 = (T0 + timedelta(seconds=n) for n in range(1, 6))
    env.svc.build_queued(build_id, t1)
    assert (env.build(1).lifecycle, env.build(1).queued_at) == (Lifecycle.QUEUED, t1)
    assert env.svc.build_started(build_id, t2, "w1") is True
    running = env.build(1)
    assert (running.lifecycle, running.start_time, running.queued_at, running.worker) == (
        Lifecycle.RUNNING,
        t2,
        t1,
        "w1",
    )
    env.svc.build_queued(build_id, t3)  # late: a build never goes back
    assert env.build(1) == running
    note = Message(type="warning", message="something to know")
    env.svc.build_finished(build_id, Outcome.FAILED, t4, (note,))
    done = env.build(1)
    assert (done.lifecycle, done.outcome, done.start_time, done.stop_time) == (
        Lifecycle.FINISHED,
        Outcome.FAILED,
        t2,
        t4,
    )
    assert done.messages == (note,)
    assert done.build_time_millis == 2000
    env.svc.build_finished(build_id, Outcome.SUCCESS, t5, (note,))  # twice: harmless
    assert env.build(1) == done
    assert env.svc.build_started(build_id, t5, "w2") is False
    assert env.build(1) == done


def test_started_without_queued_sets_queued_at(env: Env) -> None:
    build = env.svc.trigger(env.project)
    at = env.clock.tick()
    assert env.svc.build_started(build.id or 0, at, "w1")
    assert (env.build(1).queued_at, env.build(1).start_time) == (at, at)


def test_finished_before_it_started(env: Env) -> None:
    """The executor's last guard: a runner that crashed before starting the build."""
    build = env.svc.trigger(env.project)
    at = env.clock.tick()
    env.svc.build_finished(build.id or 0, Outcome.INFRASTRUCTURE_FAIL, at)
    done = env.build(1)
    assert (done.lifecycle, done.outcome, done.start_time, done.stop_time) == (
        Lifecycle.FINISHED,
        Outcome.INFRASTRUCTURE_FAIL,
        None,
        at,
    )


def test_reports_for_unknown_builds_are_ignored(env: Env) -> None:
    env.svc.build_queued(999, T0)
    assert env.svc.build_started(999, T0, "w1") is False
    env.svc.build_finished(999, Outcome.SUCCESS, T0)
    assert env.builds() == []


def test_actions_show_before_and_after_they_are_written(env: Env) -> None:
    env.svc.journal.close()
    env.svc.journal = ActionJournal(env.store, delay=3600)  # only explicit flushes write
    build = env.svc.trigger(env.project)
    build_id = build.id or 0
    env.svc.build_queued(build_id, env.clock.tick())
    env.svc.build_started(build_id, env.clock.tick(), "w1")
    env.svc.action_started(build_id, action(0))
    env.svc.action_finished(build_id, action(0, ActionStatus.SUCCESS))
    env.svc.action_started(build_id, action(101))
    assert env.store.list_actions(build_id) == []  # nothing written yet...
    assert env.svc.view(env.project, env.build(1)).actions == (  # ...yet the API sees it all
        action(0, ActionStatus.SUCCESS),
        action(101),
    )
    assert env.svc.action(env.build(1), 101, 0) == action(101)
    env.svc.action_finished(build_id, action(101, ActionStatus.FAILED))
    env.svc.build_finished(build_id, Outcome.FAILED, env.clock.tick())  # writes them first
    expected = [action(0, ActionStatus.SUCCESS), action(101, ActionStatus.FAILED)]
    assert env.store.list_actions(build_id) == expected
    assert list(env.svc.view(env.project, env.build(1)).actions) == expected
    with pytest.raises(NotFound):
        env.svc.action(env.build(1), 102, 0)


# ------------------------------------------------------------------ status


F, S = Lifecycle.FINISHED, Outcome.SUCCESS


@pytest.mark.parametrize(
    ("earlier", "last", "status"),
    [
        pytest.param([], {"lifecycle": F, "outcome": S}, "success", id="first-success"),
        pytest.param(
            [{"lifecycle": F, "outcome": S}],
            {"lifecycle": F, "outcome": S},
            "success",
            id="success-after-success",
        ),
        *[
            pytest.param(
                [{"lifecycle": F, "outcome": o}],
                {"lifecycle": F, "outcome": S},
                "fixed",
                id=f"fixed-after-{o}",
            )
            for o in (Outcome.FAILED, Outcome.TIMEDOUT, Outcome.NO_TESTS, Outcome.INFRASTRUCTURE_FAIL)
        ],
        pytest.param(
            [{"lifecycle": F, "outcome": Outcome.FAILED}, {"lifecycle": F, "outcome": Outcome.CANCELED}],
            {"lifecycle": F, "outcome": S},
            "fixed",
            id="canceled-skipped",
        ),
        pytest.param(
            [
                {"lifecycle": F, "outcome": Outcome.FAILED},
                {"lifecycle": Lifecycle.QUEUED, "outcome": Outcome.CANCELED},
            ],
            {"lifecycle": F, "outcome": S},
            "fixed",
            id="canceled-before-start-skipped",
        ),
        pytest.param(
            [{"lifecycle": F, "outcome": Outcome.FAILED}, {"lifecycle": Lifecycle.NOT_RUN}],
            {"lifecycle": F, "outcome": S},
            "fixed",
            id="not-run-skipped",
        ),
        pytest.param(
            [{"lifecycle": F, "outcome": Outcome.FAILED}, {"lifecycle": Lifecycle.RUNNING}],
            {"lifecycle": F, "outcome": S},
            "fixed",
            id="unfinished-skipped",
        ),
        pytest.param(
            [{"lifecycle": F, "outcome": Outcome.FAILED, "branch": "other"}],
            {"lifecycle": F, "outcome": S},
            "success",
            id="other-branch-ignored",
        ),
        pytest.param(
            [{"lifecycle": F, "outcome": Outcome.FAILED, "job_name": "deploy"}],
            {"lifecycle": F, "outcome": S},
            "success",
            id="other-job-ignored",
        ),
        pytest.param(
            [{"lifecycle": F, "outcome": Outcome.FAILED}],
            {"lifecycle": F, "outcome": S, "job_name": "build"},
            "fixed",
            id="job-build-is-the-default-job",
        ),
        pytest.param(
            [{"lifecycle": F, "outcome": S}],
            {"lifecycle": F, "outcome": Outcome.FAILED},
            "failed",
            id="failed",
        ),
        pytest.param(
            [], {"lifecycle": F, "outcome": Outcome.INFRASTRUCTURE_FAIL}, "infrastructure_fail", id="infra"
        ),
        pytest.param(
            [], {"lifecycle": Lifecycle.RUNNING, "outcome": Outcome.CANCELED}, "canceled", id="canceled"
        ),
        pytest.param([], {"lifecycle": Lifecycle.QUEUED}, "queued", id="queued"),
        pytest.param([], {"lifecycle": Lifecycle.NOT_RUN}, "not_run", id="not-run"),
    ],
)
def test_status(env: Env, earlier: list[dict[str, Any]], last: dict[str, Any], status: str) -> None:
    pid = env.project.id or 0
    for fields in earlier:
        stored(env, pid, **fields)
    assert env.svc.status_of(stored(env, pid, **last)) == status


@pytest.mark.parametrize(
    ("why", "status"),
    [
        pytest.param(Why.AUTO_RETRY, "retried", id="auto-retried"),
        pytest.param(Why.RETRY, "infrastructure_fail", id="manually-retried"),
    ],
)
def test_status_of_a_retried_infrastructure_fail(env: Env, why: Why, status: str) -> None:
    pid = env.project.id or 0
    failed = stored(env, pid, lifecycle=F, outcome=Outcome.INFRASTRUCTURE_FAIL)
    stored(env, pid, retry_of=failed.build_num, why=why)
    assert env.svc.status_of(failed) == status


def test_a_job_chosen_by_parameter_is_compared_with_that_job(env: Env) -> None:
    run(env, env.svc.trigger(env.project), Outcome.FAILED)  # job `build`
    deploy = env.svc.trigger(env.project, build_parameters={"CIRCLE_JOB": "deploy"})
    assert "CIRCLE_PREVIOUS_BUILD_NUM" not in env.request(deploy).environment
    deploy = run(env, deploy, Outcome.SUCCESS)
    assert env.svc.view(env.project, deploy).previous is None
    assert env.svc.status_of(deploy) == "success"


# ------------------------------------------------------------------ view


def test_view_gathers_related_builds_and_people(env: Env) -> None:
    ada, bob = user(env, "ada"), user(env, "bob")
    ok = run(env, env.svc.trigger(env.project))
    bad = run(env, env.svc.trigger(env.project), Outcome.FAILED)
    env.svc.trigger(env.project, branch="feature/x")  # another branch: not related
    last = env.svc.trigger(env.project, user_id=ada.id)
    env.svc.cancel(env.project, last.build_num, user_id=bob.id)
    view = env.svc.view(env.project, env.build(last.build_num))
    assert view.project == env.project
    assert view.status == "canceled"
    assert view.previous == bad
    assert view.previous_status == "failed"
    assert view.previous_successful == ok
    assert view.user == ada
    assert view.canceler == bob
    assert view.retries == ()
    retry = env.svc.retry(env.project, bad.build_num)
    assert env.svc.view(env.project, env.build(bad.build_num)).retries == (retry.build_num,)
    first = env.svc.view(env.project, ok)
    assert (first.previous, first.previous_successful, first.user) == (None, None, None)
    shallow = env.svc.view(env.project, env.build(last.build_num), shallow=True)
    assert (shallow.previous, shallow.actions, shallow.user) == (None, (), ada)


# ------------------------------------------------------------------ recover after a restart


def test_recover_after_a_restart(env: Env) -> None:
    svc = env.svc
    running, queued, waiting, canceled, done = (svc.trigger(env.project) for _ in range(5))
    rid = running.id or 0
    svc.build_queued(rid, env.clock.tick())
    svc.build_started(rid, env.clock.tick(), "w1")
    svc.action_started(rid, action(0))
    svc.action_finished(rid, action(0, ActionStatus.SUCCESS))
    svc.action_started(rid, action(101))
    svc.build_queued(queued.id or 0, env.clock.tick())
    svc.cancel(env.project, canceled.build_num)
    finished = run(env, done)
    svc.stop()  # the old process goes away with its journal written

    restart_at = env.clock.tick(60)
    again = make_service(env.store, env.source, env.clock)
    ended = again.recover()
    lost = env.build(running.build_num)
    assert ended == [lost]
    assert (lost.lifecycle, lost.outcome, lost.stop_time) == (
        Lifecycle.FINISHED,
        Outcome.INFRASTRUCTURE_FAIL,
        restart_at,
    )
    assert lost.messages == (
        Message(
            type="error",
            message="circlet stopped while this build was running; "
            "its processes were lost. Retry the build to run it again.",
            reason="infrastructure",
        ),
    )
    assert env.store.list_actions(rid) == [
        action(0, ActionStatus.SUCCESS),
        replace(action(101), status=ActionStatus.INFRASTRUCTURE_FAIL, end_time=restart_at),
    ]
    dispatcher = again.dispatcher
    assert isinstance(dispatcher, RecordingDispatcher)
    assert [r.build_id for r in dispatcher.submitted] == [queued.id, waiting.id]
    assert dispatcher.submitted[0].plan == plan_job(load_config(CONFIG), "build")
    assert dispatcher.submitted[1].environment["CIRCLE_BUILD_NUM"] == str(waiting.build_num)
    assert env.build(queued.build_num).lifecycle is Lifecycle.QUEUED
    assert env.build(canceled.build_num).outcome is Outcome.CANCELED
    assert env.build(done.build_num) == finished
    again.journal.close()


def test_start_hands_the_service_to_the_dispatcher_and_recovers(env: Env) -> None:
    build = env.svc.trigger(env.project)
    env.svc.stop()
    again = make_service(env.store, env.source, env.clock)
    again.start()
    dispatcher = again.dispatcher
    assert isinstance(dispatcher, RecordingDispatcher)
    assert dispatcher.reporter is again
    assert dispatcher.run_next() is not None
    assert env.build(build.build_num).outcome is Outcome.SUCCESS
    again.stop()
    assert dispatcher.stopped


# ------------------------------------------------------------------ tokens


def test_tokens_are_stored_hashed(env: Env) -> None:
    ada = user(env)
    token, secret = env.svc.create_token(user=ada, label="laptop")
    assert secret.startswith("ccl_") and len(secret) > 30
    assert (token.user_id, token.project_id, token.scope, token.label) == (ada.id, None, Scope.ALL, "laptop")
    assert token.created_at == T0
    for kept in env.store.list_tokens():
        assert secret not in repr(kept)
        assert secret[4:] not in repr(kept)
    assert env.svc.authenticate(secret) == token
    for wrong in (None, "", "ccl_wrong", secret + "x", token.token_hash):
        assert env.svc.authenticate(wrong) is None
    assert env.svc.revoke_token(token.id or 0)  # through the facade, which forgets cached answers
    assert env.svc.authenticate(secret) is None


def test_project_tokens(env: Env) -> None:
    token, secret = env.svc.create_token(project=env.project, scope=Scope.VIEW_BUILDS)
    assert (token.user_id, token.project_id, token.scope) == (None, env.project.id, Scope.VIEW_BUILDS)
    assert env.svc.authenticate(secret) == token
    other, other_secret = env.svc.create_token(project=env.project)
    assert other_secret != secret
    assert env.svc.authenticate(other_secret) == other


@pytest.mark.parametrize("owners", ["neither", "both"])
def test_a_token_has_one_owner(env: Env, owners: str) -> None:
    kwargs: dict[str, Any] = {} if owners == "neither" else {"user": user(env), "project": env.project}
    with pytest.raises(InvalidRequest) as info:
        env.svc.create_token(**kwargs)
    assert info.value.message == "a token belongs to a user or to a project"
    assert env.store.list_tokens() == []


# ------------------------------------------------------------------ projects


@pytest.mark.parametrize(
    ("vcs_type", "username", "reponame", "message"),
    [
        pytest.param(
            "gitlab", "acme", "w", "unknown vcs type 'gitlab': use github (gh) or bitbucket (bb)", id="vcs"
        ),
        pytest.param("gh", "", "w", "invalid username ''", id="empty-username"),
        pytest.param("gh", "a/b", "w", "invalid username 'a/b'", id="slash-in-username"),
        pytest.param("gh", ".hidden", "w", "invalid username '.hidden'", id="dot-username"),
        pytest.param("gh", "acme", "", "invalid project name ''", id="empty-name"),
        pytest.param("github", "acme", "x/y", "invalid project name 'x/y'", id="slash-in-name"),
        pytest.param("bb", "acme", "..", "invalid project name '..'", id="dot-dot-name"),
    ],
)
def test_add_project_refuses_bad_names(
    env: Env, vcs_type: str, username: str, reponame: str, message: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        env.svc.add_project(vcs_type=vcs_type, username=username, reponame=reponame, repo_url=URL)
    assert info.value.message == message
    assert env.svc.list_projects() == [env.project]


@pytest.mark.parametrize(
    ("vcs_type", "given", "default_branch", "kind"),
    [
        pytest.param("bb", None, "trunk", VcsType.BITBUCKET, id="from-the-repository"),
        pytest.param("github", "develop", "develop", VcsType.GITHUB, id="given"),
    ],
)
def test_add_project(env: Env, vcs_type: str, given: str | None, default_branch: str, kind: VcsType) -> None:
    url = "https://git.example/acme/other.git"
    env.source.add_repo(url, default_branch="trunk")
    project = env.svc.add_project(
        vcs_type=vcs_type, username="acme", reponame="other", repo_url=url, default_branch=given
    )
    assert (project.vcs_type, project.default_branch, project.created_at) == (kind, default_branch, T0)
    assert env.svc.get_project(kind.short, "acme", "other") == project


def test_add_project_without_a_head_defaults_to_main(env: Env) -> None:
    url = "https://git.example/acme/headless.git"
    env.source.add_repo(url, default_branch=None)
    assert (
        env.svc.add_project(vcs_type="gh", username="acme", reponame="h", repo_url=url).default_branch
        == "main"
    )


@pytest.mark.parametrize("broken", ["unknown", "unreachable"])
def test_add_project_of_an_unreadable_repository(env: Env, broken: str) -> None:
    url = "https://git.example/acme/gone.git"
    if broken == "unreachable":
        env.source.add_repo(url)
        env.source.make_unreachable(url, "fatal: repository not found")
    with pytest.raises(RepositoryError) as info:
        env.svc.add_project(vcs_type="gh", username="acme", reponame="gone", repo_url=url)
    if broken == "unreachable":
        assert info.value.message == "fatal: repository not found"
    assert env.svc.list_projects() == [env.project]


# ------------------------------------------------------------------ the RecordingDispatcher itself


def _request(build_id: int) -> RunRequest:
    return RunRequest(
        build_id=build_id,
        project=Project(vcs_type=VcsType.GITHUB, username="a", reponame="b", repo_url=URL),
        build_num=build_id,
        revision="a" * 40,
        branch="main",
        tag=None,
        plan=plan_job(load_config(CONFIG), "deploy"),
    )


def test_recording_dispatcher_keeps_requests_and_cancels() -> None:
    dispatcher = RecordingDispatcher()
    for build_id in (1, 2, 3):
        dispatcher.submit(_request(build_id))
    assert dispatcher.cancel(2) is True
    assert dispatcher.cancel(2) is False  # not waiting any more
    assert [r.build_id for r in dispatcher.waiting()] == [1, 3]
    assert [r.build_id for r in dispatcher.submitted] == [1, 2, 3]
    assert dispatcher.canceled == [2, 2]
    with pytest.raises(RuntimeError):
        dispatcher.run_next()  # no reporter yet


def test_recording_dispatcher_runs_the_oldest_through_a_reporter(env: Env) -> None:
    first, second = env.svc.trigger(env.project), env.svc.trigger(env.project)
    dispatcher = env.dispatcher
    taken = dispatcher.run_next(env.svc, outcome=Outcome.FAILED, at=T0, worker="fake-1")
    assert taken is not None and taken.build_id == first.id
    ran = env.build(first.build_num)
    assert (ran.outcome, ran.worker, ran.start_time, ran.stop_time) == (Outcome.FAILED, "fake-1", T0, T0)
    env.svc.cancel(env.project, second.build_num)
    assert dispatcher.run_next(env.svc) is None  # the canceled build left the queue
