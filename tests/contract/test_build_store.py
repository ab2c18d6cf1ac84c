"""One contract for every BuildStore: the in-memory fake, SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from circlet.core.errors import Conflict, NotFound
from circlet.core.model import (
    Action,
    ActionStatus,
    Build,
    Commit,
    Executor,
    Lifecycle,
    Message,
    Outcome,
    Project,
    Scope,
    Token,
    User,
    VcsType,
    Why,
)
from circlet.core.ports import BuildQuery, BuildStore
from circlet.store.migrate import migrate
from circlet.store.sql import SqlBuildStore, make_engine
from circlet.testing import InMemoryBuildStore

T0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BuildStore]:
    if request.param == "memory":
        yield InMemoryBuildStore()
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/data/circlet.db"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    migrate(engine)
    try:
        yield SqlBuildStore(engine)
    finally:
        engine.dispose()


def _project(store: BuildStore, username: str = "acme", reponame: str = "widget") -> Project:
    return store.add_project(
        Project(vcs_type=VcsType.GITHUB, username=username, reponame=reponame, repo_url=f"/src/{reponame}")
    )


def _pid(project: Project) -> int:
    assert project.id is not None
    return project.id


def _bid(build: Build) -> int:
    assert build.id is not None
    return build.id


def _builds(store: BuildStore, project: Project, *changes: dict[str, object]) -> list[Build]:
    """Create one build per dict of changes, saved with those changes applied."""
    made = []
    for change in changes:
        build = store.create_build(Build(project_id=_pid(project)))
        if change:
            build = replace(build, **change)  # type: ignore[arg-type]  # test data, checked by the store
            store.save_build(build)
        made.append(build)
    return made


def _nums(builds: list[Build]) -> list[int]:
    return [b.build_num for b in builds]


# ---------------------------------------------------------------- projects


def test_add_and_get_project_case_insensitively(store: BuildStore) -> None:
    project = store.add_project(
        Project(
            vcs_type=VcsType.GITHUB,
            username="Acme",
            reponame="Widget",
            repo_url="/src/widget",
            default_branch="trunk",
            oss=True,
        )
    )

    assert project.id is not None
    assert project.created_at is not None and project.created_at.utcoffset() == timedelta(0)
    assert store.get_project("github", "acme", "widget") == project
    assert store.get_project("gh", "ACME", "wIdGeT") == project
    assert store.get_project("bitbucket", "acme", "widget") is None
    assert store.get_project("nope", "acme", "widget") is None
    assert store.get_project_by_id(project.id) == project
    assert store.get_project_by_id(project.id + 100) is None
    # the stored spelling is kept
    assert (project.username, project.reponame) == ("Acme", "Widget")
    assert (project.default_branch, project.oss) == ("trunk", True)


def test_duplicate_project_conflicts_whatever_the_case(store: BuildStore) -> None:
    _project(store, "acme", "widget")

    with pytest.raises(Conflict):
        _project(store, "ACME", "Widget")
    other = store.add_project(
        Project(vcs_type=VcsType.BITBUCKET, username="acme", reponame="widget", repo_url="/x")
    )

    assert [p.vcs_type for p in store.list_projects()] == [VcsType.GITHUB, VcsType.BITBUCKET]
    assert store.list_projects()[1] == other


# ---------------------------------------------------------------- builds


def test_build_numbers_count_per_project(store: BuildStore) -> None:
    first, second = _project(store, "a", "one"), _project(store, "a", "two")

    nums_first = [store.create_build(Build(project_id=_pid(first))).build_num for _ in range(3)]
    nums_second = [store.create_build(Build(project_id=_pid(second))).build_num for _ in range(2)]

    assert nums_first == [1, 2, 3]
    assert nums_second == [1, 2]


def test_create_build_for_unknown_project_is_not_found(store: BuildStore) -> None:
    with pytest.raises(NotFound):
        store.create_build(Build(project_id=999))


def test_concurrent_create_build_numbers_are_gapless(store: BuildStore) -> None:
    project = _project(store)
    barrier = threading.Barrier(8)

    def create_many() -> list[int]:
        barrier.wait()
        return [store.create_build(Build(project_id=_pid(project))).build_num for _ in range(25)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = [f.result() for f in [pool.submit(create_many) for _ in range(8)]]

    nums = sorted(n for result in results for n in result)
    assert nums == list(range(1, 201))
    assert all(result == sorted(result) for result in results)  # each caller sees them increase
    listed = store.list_builds(BuildQuery(project_ids=(_pid(project),), limit=500))
    assert _nums(listed) == list(range(200, 0, -1))


def test_build_round_trips_every_field(store: BuildStore) -> None:
    project = _project(store)
    user = store.add_user(User(login="ann"))
    commit = Commit(
        sha="a" * 40,
        subject="Fix the thing",
        body="Longer\n\nbody ✓",
        author_name="Ann",
        author_email="ann@example.com",
        author_date="2024-05-06T09:08:09+02:00",
        committer_name="Bob",
        committer_email="bob@example.com",
        committer_date="2024-05-06T09:10:00+02:00",
    )
    created = store.create_build(
        Build(
            project_id=_pid(project),
            branch="main",
            vcs_revision="a" * 40,
            commit=commit,
            why=Why.GITHUB,
            build_parameters={"RUN_EXTRA": "1", "nested": {"list": [1, 2.5, None, True]}},
            usage_queued_at=T0,
            user_id=user.id,
            config_text="version: 2.1\n",
        )
    )
    full = replace(
        created,
        vcs_tag="v1.0",
        dont_build="ci-skip",
        job_name="test",
        parallel=4,
        lifecycle=Lifecycle.FINISHED,
        outcome=Outcome.INFRASTRUCTURE_FAIL,
        queued_at=T0 + timedelta(seconds=1),
        start_time=T0 + timedelta(seconds=2, microseconds=1),
        stop_time=T0 + timedelta(minutes=3),
        retry_of=7,
        messages=(
            Message(type="error", message="boom", reason="infrastructure"),
            Message(type="warning", message="careful"),
        ),
        executor=Executor(kind="machine", image="ubuntu-2204:current", resource_class="large"),
        ssh_enabled=True,
        ssh_users=("ann", "bob"),
        canceler_id=user.id,
        canceled_by_system=True,
        no_dependency_cache=True,
        worker="host-1/slot-2",
        extra={"workflows": {"workflow_id": "w-1", "job_names": ["a", "b"]}},
    )

    store.save_build(full)
    by_num = store.get_build(_pid(project), created.build_num)
    by_id = store.get_build_by_id(_bid(created))

    assert by_num == full
    assert by_id == full
    assert by_num is not None
    for when in (by_num.usage_queued_at, by_num.queued_at, by_num.start_time, by_num.stop_time):
        assert when is not None and when.utcoffset() == timedelta(0)
    assert isinstance(by_num.messages, tuple) and isinstance(by_num.ssh_users, tuple)
    assert by_num.outcome is Outcome.INFRASTRUCTURE_FAIL and by_num.why is Why.GITHUB
    assert store.get_build(_pid(project), 99) is None
    assert store.get_build_by_id(12345) is None


def test_build_defaults_round_trip(store: BuildStore) -> None:
    project = _project(store)
    created = store.create_build(Build(project_id=_pid(project)))

    assert store.get_build_by_id(_bid(created)) == created
    assert created == Build(id=created.id, project_id=_pid(project), build_num=1)


def test_save_build_keeps_identity_and_rejects_unknown_builds(store: BuildStore) -> None:
    project = _project(store)
    build = store.create_build(Build(project_id=_pid(project)))

    store.save_build(replace(build, build_num=50, lifecycle=Lifecycle.RUNNING))
    assert store.get_build(_pid(project), 1) == replace(build, lifecycle=Lifecycle.RUNNING)
    with pytest.raises(NotFound):
        store.save_build(replace(build, id=9999))


def test_stored_build_is_not_shared_with_the_caller(store: BuildStore) -> None:
    project = _project(store)
    build = store.create_build(Build(project_id=_pid(project), build_parameters={"a": 1}))
    assert build.build_parameters is not None

    build.build_parameters["a"] = 2
    build.extra["x"] = 1

    stored = store.get_build_by_id(_bid(build))
    assert stored is not None and stored.build_parameters == {"a": 1} and stored.extra == {}


def test_list_builds_filters_newest_first(store: BuildStore) -> None:
    one, two = _project(store, "a", "one"), _project(store, "a", "two")
    finished = {"lifecycle": Lifecycle.FINISHED}
    _builds(
        store,
        one,
        {"branch": "main", **finished, "outcome": Outcome.SUCCESS},  # 1
        {"branch": "dev", **finished, "outcome": Outcome.FAILED},  # 2
        {"branch": "main", "lifecycle": Lifecycle.RUNNING},  # 3
        {"branch": "main", **finished, "outcome": Outcome.FAILED},  # 4
        {},  # 5: not_running, no branch
    )
    _builds(store, two, {"branch": "main"}, {"branch": "main", **finished, "outcome": Outcome.FAILED})
    only_one = (_pid(one),)

    def nums(**query: object) -> list[int]:
        return _nums(store.list_builds(BuildQuery(**query)))  # type: ignore[arg-type]

    assert nums(project_ids=only_one) == [5, 4, 3, 2, 1]
    assert nums(project_ids=only_one, branch="main") == [4, 3, 1]
    assert nums(project_ids=only_one, lifecycles=(Lifecycle.FINISHED,)) == [4, 2, 1]
    assert nums(project_ids=only_one, lifecycles=(Lifecycle.RUNNING, Lifecycle.NOT_RUNNING)) == [5, 3]
    assert nums(project_ids=only_one, outcomes=(Outcome.FAILED,)) == [4, 2]
    assert nums(project_ids=only_one, branch="main", outcomes=(Outcome.FAILED, Outcome.SUCCESS)) == [4, 1]
    assert nums(project_ids=only_one, limit=2) == [5, 4]
    assert nums(project_ids=only_one, limit=2, offset=2) == [3, 2]
    assert nums(project_ids=only_one, offset=10) == []
    assert nums(project_ids=only_one, lifecycles=()) == []
    assert nums(project_ids=()) == []
    # across projects: newest created first
    everywhere = store.list_builds(BuildQuery())
    assert [(b.project_id, b.build_num) for b in everywhere] == [
        (_pid(two), 2),
        (_pid(two), 1),
        (_pid(one), 5),
        (_pid(one), 4),
        (_pid(one), 3),
        (_pid(one), 2),
        (_pid(one), 1),
    ]
    assert [(b.project_id, b.build_num) for b in store.list_builds(BuildQuery(branch="main", limit=3))] == [
        (_pid(two), 2),
        (_pid(two), 1),
        (_pid(one), 4),
    ]
    both = (_pid(one), _pid(two))
    assert len(store.list_builds(BuildQuery(project_ids=both, outcomes=(Outcome.FAILED,)))) == 3


def test_builds_in_lifecycles_oldest_first(store: BuildStore) -> None:
    one, two = _project(store, "a", "one"), _project(store, "a", "two")
    _builds(store, one, {"lifecycle": Lifecycle.QUEUED}, {"lifecycle": Lifecycle.RUNNING}, {})
    _builds(store, two, {"lifecycle": Lifecycle.RUNNING})

    found = store.builds_in((Lifecycle.RUNNING, Lifecycle.QUEUED))

    assert [(b.project_id, b.build_num) for b in found] == [(_pid(one), 1), (_pid(one), 2), (_pid(two), 1)]
    assert store.builds_in((Lifecycle.FINISHED,)) == []
    assert store.builds_in(()) == []


def test_previous_build(store: BuildStore) -> None:
    project = _project(store)
    pid = _pid(project)
    done = {"branch": "main", "lifecycle": Lifecycle.FINISHED}
    _builds(
        store,
        project,
        {**done, "outcome": Outcome.SUCCESS},  # 1
        {**done, "outcome": Outcome.FAILED},  # 2
        {**done, "outcome": Outcome.FAILED, "job_name": "deploy"},  # 3: another job
        {**done, "outcome": Outcome.SUCCESS, "branch": "dev"},  # 4: another branch
        {**done, "outcome": Outcome.CANCELED},  # 5: canceled
        {"branch": "main", "lifecycle": Lifecycle.NOT_RUN},  # 6: not run
        {"branch": "main", "lifecycle": Lifecycle.RUNNING, "job_name": "build"},  # 7: running, job `build`
        {**done, "outcome": Outcome.SUCCESS, "branch": None},  # 8: no branch (a tag build)
        {"branch": "main"},  # 9: the build asking
    )

    def previous(
        branch: str | None = "main", job: str | None = None, before: int = 9, **kw: object
    ) -> int | None:
        found = store.previous_build(pid, branch, job, before, **kw)  # type: ignore[arg-type]
        return found.build_num if found is not None else None

    assert previous() == 7  # job None and job `build` are the same job
    assert previous(job="build") == 7
    assert previous(finished_only=True) == 2
    assert previous(finished_only=True, outcome=Outcome.SUCCESS) == 1
    assert previous(outcome=Outcome.CANCELED) == 5
    assert previous(finished_only=True, outcome=Outcome.CANCELED) is None
    assert previous(job="deploy") == 3
    assert previous(job="deploy", before=3) is None
    assert previous(branch="dev") == 4
    assert previous(branch=None) == 8
    assert previous(before=2) == 1
    assert previous(before=1) is None
    assert store.previous_build(pid + 100, "main", None, 9) is None


def test_retries_of(store: BuildStore) -> None:
    one, two = _project(store, "a", "one"), _project(store, "a", "two")
    _builds(store, one, {}, {"retry_of": 1, "why": Why.RETRY}, {}, {"retry_of": 1, "why": Why.AUTO_RETRY})
    _builds(store, two, {}, {"retry_of": 1})

    retries = store.retries_of(_pid(one), 1)

    assert _nums(retries) == [2, 4]
    assert [b.why for b in retries] == [Why.RETRY, Why.AUTO_RETRY]
    assert store.retries_of(_pid(one), 2) == []
    many = store.retries_of_many(_pid(one), [1, 2, 3])
    assert {num: _nums(found) for num, found in many.items()} == {1: [2, 4]}
    assert many[1] == retries
    assert store.retries_of_many(_pid(one), []) == {}
    assert store.retries_of_many(_pid(two), [1]) == {1: store.retries_of(_pid(two), 1)}


# ---------------------------------------------------------------- actions


def test_save_action_inserts_and_replaces(store: BuildStore) -> None:
    project = _project(store)
    build = store.create_build(Build(project_id=_pid(project)))
    other = store.create_build(Build(project_id=_pid(project)))
    bid = _bid(build)
    running = Action(step=101, index=0, name="Run tests", bash_command="make test", start_time=T0)

    for action in (
        Action(step=102, index=1, name="Deploy"),
        running,
        Action(step=0, index=0, name="Spin up Environment", type="test", source=None),
        Action(step=101, index=1, name="Run tests"),
    ):
        store.save_action(bid, action)
    store.save_action(_bid(other), Action(step=5, name="elsewhere"))
    done = replace(
        running,
        status=ActionStatus.FAILED,
        exit_code=2,
        end_time=T0 + timedelta(seconds=3, microseconds=7),
        background=True,
        parallel=False,
        has_output=True,
        truncated=True,
        messages=("killed", "twice"),
    )
    store.save_action(bid, done)

    actions = store.list_actions(bid)
    assert [(a.step, a.index) for a in actions] == [(0, 0), (101, 0), (101, 1), (102, 1)]
    assert actions[1] == done
    assert actions[0].source is None
    assert store.get_action(bid, 101, 0) == done
    assert store.get_action(bid, 101, 2) is None
    assert store.list_actions(_bid(other)) == [Action(step=5, name="elsewhere")]
    assert store.list_actions(9999) == []
    with pytest.raises(NotFound):
        store.save_action(9999, running)


def test_save_actions_writes_a_batch_and_replaces(store: BuildStore) -> None:
    project = _project(store)
    bid = _bid(store.create_build(Build(project_id=_pid(project))))
    first = Action(step=101, index=0, name="a", start_time=T0)
    store.save_actions(bid, [first, Action(step=102, index=0, name="b")])
    finished = replace(first, status=ActionStatus.SUCCESS, exit_code=0, end_time=T0 + timedelta(seconds=1))
    store.save_actions(bid, [finished, Action(step=103, index=0, name="c")])
    store.save_actions(bid, [])
    assert [(a.name, a.status) for a in store.list_actions(bid)] == [
        ("a", ActionStatus.SUCCESS),
        ("b", ActionStatus.RUNNING),
        ("c", ActionStatus.RUNNING),
    ]
    with pytest.raises(NotFound):
        store.save_actions(9999, [first])


# ---------------------------------------------------------------- users and tokens


def test_users(store: BuildStore) -> None:
    ann = store.add_user(User(login="ann", name="Ann", email="ann@example.com", admin=True))
    bob = store.add_user(User(login="bob", created_at=T0))

    assert ann.id is not None and bob.id is not None and ann.id != bob.id
    assert ann.created_at is not None and bob.created_at == T0
    assert store.get_user(ann.id) == ann
    assert store.get_user_by_login("bob") == bob
    assert store.get_user_by_login("carol") is None
    assert store.get_user(ann.id + bob.id + 1) is None
    with pytest.raises(Conflict):
        store.add_user(User(login="ann"))


def test_tokens(store: BuildStore) -> None:
    project = _project(store)
    ann = store.add_user(User(login="ann"))
    personal = store.add_token(Token(token_hash="h1", label="laptop", user_id=ann.id))
    scoped = store.add_token(
        Token(token_hash="h2", project_id=project.id, scope=Scope.VIEW_BUILDS, created_at=T0)
    )

    assert personal.id is not None and scoped.id is not None
    assert store.find_token("h1") == personal
    assert store.find_token("h2") == scoped
    assert store.find_token("h3") is None
    with pytest.raises(Conflict):
        store.add_token(Token(token_hash="h1"))
    with pytest.raises(NotFound):
        store.add_token(Token(token_hash="h4", user_id=999))

    assert store.revoke_token(personal.id) is True
    assert store.find_token("h1") is None
    assert store.revoke_token(personal.id) is True  # idempotent
    assert store.revoke_token(9999) is False
    assert store.list_tokens() == [replace(personal, revoked=True), scoped]


def test_test_results_append_per_container(store: BuildStore) -> None:
    project = _project(store)
    bid = _bid(store.create_build(Build(project_id=_pid(project))))
    case = {
        "name": "t1",
        "classname": "c",
        "file": None,
        "result": "success",
        "run_time": 0.5,
        "message": None,
        "source": "unknown",
        "source_type": "unknown",
    }
    assert store.test_results(bid) == ([], [])
    store.add_test_results(bid, 1, [{**case, "name": "on-1"}], [])
    store.add_test_results(bid, 0, [case], [{"file": "bad.xml", "message": "not XML"}])
    store.add_test_results(bid, 0, [{**case, "name": "t2", "result": "failure", "message": "boom"}], [])
    tests, problems = store.test_results(bid)
    assert [t["name"] for t in tests] == ["t1", "t2", "on-1"]  # container 0 first, then as added
    assert tests[1]["message"] == "boom" and tests[0]["run_time"] == 0.5
    assert problems == [{"file": "bad.xml", "message": "not XML"}]
    with pytest.raises(NotFound):
        store.add_test_results(9999, 0, [case], [])
