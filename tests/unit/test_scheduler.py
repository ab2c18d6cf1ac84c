"""scheduler.py on fakes: in-memory stores, FakeSourceHost, a RecordingDispatcher and a clock the
test sets. Asserts on the builds, pipelines and schedule runs recorded."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from textwrap import dedent

import pytest

from circlet.core.config import load_config
from circlet.core.errors import ConfigError
from circlet.core.model import Build, Project, Why
from circlet.core.pipeline import ScheduleRunState
from circlet.core.ports import BuildQuery
from circlet.core.workflow_config import parse_schedules, parse_workflows
from circlet.poller import Pushes
from circlet.scheduler import Scheduler, minute_of
from circlet.service import Circlet
from circlet.settings import load_settings
from circlet.testing import (
    FakeSourceHost,
    InMemoryBuildStore,
    InMemoryLogStore,
    InMemoryProjectSettingsStore,
    RecordingDispatcher,
)
from circlet.testing.clock import FakeClock
from circlet.testing.pipelines import InMemoryPipelineStore
from circlet.testing.schedules import InMemoryScheduleStore

URL = "https://git.example/acme/widget.git"
T3 = datetime(2026, 11, 28, 3, 0, 20, tzinfo=UTC)  # a Saturday, 03:00:20 UTC

NIGHTLY = dedent(
    """\
    version: 2
    jobs:
      build: {docker: [{image: cimg/base:stable}], steps: [{run: make}]}
      coverage: {docker: [{image: cimg/base:stable}], steps: [{run: make coverage}]}
    workflows:
      version: 2
      commit:
        jobs: [build]
      nightly:
        triggers:
          - schedule:
              cron: "0 3 * * *"
              filters: {branches: {only: [main, /release-.*/]}}
        jobs: [coverage]
    """
)


@dataclass
class Env:
    svc: Circlet
    source: FakeSourceHost
    runs: InMemoryScheduleStore
    clock: FakeClock
    project: Project
    scheduler: Scheduler

    def builds(self) -> list[Build]:
        found = self.svc.store.list_builds(BuildQuery(project_ids=(self.project.id or 0,), limit=1000))
        return sorted(found, key=lambda b: b.build_num)

    def commit(self, text: str, *, branch: str = "main", message: str = "cfg") -> str:
        return self.source.add_commit(
            URL, branch=branch, files={".circleci/config.yml": text}, message=message
        )

    def another(self) -> Scheduler:
        """A second scheduler on the same stores: another thread, process or a restart."""
        return Scheduler(self.svc, self.runs, clock=self.clock)


@pytest.fixture
def env() -> Iterator[Env]:
    source = FakeSourceHost()
    source.add_commit(URL, files={"README.md": "hi\n"}, message="First")
    clock = FakeClock(T3, step=timedelta(milliseconds=1))
    svc = Circlet(
        store=InMemoryBuildStore(),
        logs=InMemoryLogStore(),
        source=source,
        dispatcher=RecordingDispatcher(),
        settings=InMemoryProjectSettingsStore(),
        base_url="https://ci.example.com",
        clock=clock,
        pipelines=InMemoryPipelineStore(),
    )
    project = svc.add_project(vcs_type="github", username="acme", reponame="widget", repo_url=URL)
    runs = InMemoryScheduleStore()
    yield Env(svc, source, runs, clock, project, Scheduler(svc, runs, clock=clock))


def test_a_due_workflow_runs_alone_on_each_accepted_branch(env: Env) -> None:
    main = env.commit(NIGHTLY)
    release = env.commit(NIGHTLY + "# r\n", branch="release-1.2")
    env.commit(NIGHTLY + "# f\n", branch="feature")  # not accepted by the filter
    made = env.scheduler.run_due(T3)
    assert sorted((r.branch, r.state, r.revision) for r in made) == [
        ("main", ScheduleRunState.DONE, main),
        ("release-1.2", ScheduleRunState.DONE, release),
    ]
    builds = env.builds()
    assert [(b.job_name, b.branch, b.why) for b in builds] == [
        ("coverage", "main", Why.SCHEDULE),
        ("coverage", "release-1.2", Why.SCHEDULE),
    ]  # the `commit` workflow does not run
    assert all(b.extra["workflows"]["workflow_name"] == "nightly" for b in builds)
    assert {r.build_num for r in made} == {b.build_num for b in builds}
    pipeline = env.svc.workflows.store.get_pipeline(made[0].pipeline_id or "")  # type: ignore[union-attr]
    assert pipeline is not None and pipeline.trigger_source == "scheduled_pipeline"
    assert Why.SCHEDULE.value == "scheduled_pipeline"


@pytest.mark.parametrize(
    "when",
    [
        pytest.param(T3 + timedelta(minutes=1), id="next-minute"),
        pytest.param(T3 - timedelta(minutes=1), id="minute-before"),
        pytest.param(T3 + timedelta(hours=1), id="next-hour"),
    ],
)
def test_nothing_runs_at_another_minute(env: Env, when: datetime) -> None:
    env.commit(NIGHTLY)
    assert env.scheduler.run_due(when) == []
    assert env.builds() == []


def test_a_minute_never_runs_twice_across_schedulers_and_threads(env: Env) -> None:
    env.commit(NIGHTLY)
    schedulers = [env.scheduler, env.another(), env.another(), env.another()]
    barrier = threading.Barrier(len(schedulers))
    made: list[int] = []

    def run(s: Scheduler) -> None:
        barrier.wait()
        made.append(len(s.run_due(T3)))

    threads = [threading.Thread(target=run, args=(s,)) for s in schedulers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(made) == [0, 0, 0, 1]
    assert len(env.builds()) == 1
    assert env.another().run_due(T3 + timedelta(seconds=30)) == []  # same minute, after a "restart"
    assert len(env.builds()) == 1


def test_ci_skip_does_not_stop_a_scheduled_run(env: Env) -> None:
    env.commit(NIGHTLY, message="Docs only [ci skip]")
    [run] = env.scheduler.run_due(T3)
    [build] = env.builds()
    assert run.state is ScheduleRunState.DONE
    assert build.dont_build is None and build.job_name == "coverage"


def test_pushes_and_api_triggers_never_run_a_scheduled_workflow(env: Env) -> None:
    only_scheduled = NIGHTLY.replace("  commit:\n    jobs: [build]\n", "")
    assert "commit:" not in only_scheduled
    env.commit(only_scheduled)
    assert env.svc.trigger_pipeline(env.project, why=Why.PUSH) is None
    assert env.svc.trigger_pipeline(env.project) is None
    assert env.builds() == []


def test_the_first_tick_runs_the_current_minute_only_and_later_ticks_catch_up(env: Env) -> None:
    env.commit(NIGHTLY.replace('"0 3 * * *"', '"*/2 * * * *"'))
    env.clock.now = T3 + timedelta(minutes=5)  # 03:05: 03:00, 03:02 and 03:04 passed while "down"
    assert env.scheduler.tick() == []  # 03:05 is odd: nothing, and nothing earlier either
    env.clock.now = T3 + timedelta(minutes=9, seconds=10)  # a late tick: 03:06 and 03:08 are due
    made = env.scheduler.tick()
    assert [r.minute for r in made] == [minute_of(T3) + timedelta(minutes=m) for m in (6, 8)]
    assert env.scheduler.tick() == []  # same minute again
    assert len(env.builds()) == 2


def test_a_restarted_server_does_not_run_a_minute_it_was_down_for(env: Env) -> None:
    env.commit(NIGHTLY)
    env.clock.now = T3 + timedelta(minutes=1)  # the server starts at 03:01
    assert env.scheduler.tick() == []
    assert env.runs.list_runs() == []


def test_with_the_clock_off_only_requested_runs_start(env: Env) -> None:
    env.commit(NIGHTLY)
    off = Scheduler(env.svc, env.runs, clock=env.clock, enabled=False)
    assert off.tick() == []
    requested = env.another().run_due(T3, start=False)  # `circlet schedule run-due --at 03:00`
    assert [(r.state, r.requested_by) for r in requested] == [(ScheduleRunState.PENDING, "cli")]
    assert env.builds() == []
    [started] = off.tick()
    assert started.state is ScheduleRunState.DONE and started.build_num == env.builds()[0].build_num
    assert off.tick() == []  # taken once
    assert env.another().run_due(T3, start=False) == []  # that minute is recorded


def test_schedules_come_from_each_branch_head_and_follow_config_changes(env: Env) -> None:
    env.commit(NIGHTLY)
    assert len(env.scheduler.due(T3)) == 1
    env.commit(NIGHTLY.replace('"0 3 * * *"', '"30 4 * * *"'))
    assert env.scheduler.due(T3) == []  # due() fetched: the new head says 04:30
    [run] = env.scheduler.due(T3 + timedelta(hours=1, minutes=30))
    assert run.workflow == "nightly"


def test_a_project_is_fetched_when_something_is_due_and_every_refresh(env: Env) -> None:
    env.commit(NIGHTLY)
    env.scheduler.due(T3 + timedelta(minutes=5))  # first look: fetch
    fetched = env.source.sync_count(env.project)
    env.scheduler.due(T3 + timedelta(minutes=6))  # nothing due, fetched a moment ago: mirror only
    assert env.source.sync_count(env.project) == fetched
    env.scheduler.due(T3)  # due per the mirror: fetch before running
    assert env.source.sync_count(env.project) == fetched + 1
    env.clock.now += timedelta(minutes=11)
    env.scheduler.due(T3 + timedelta(minutes=7))
    assert env.source.sync_count(env.project) == fetched + 2


def test_a_bad_schedule_is_logged_and_skipped(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.commit(NIGHTLY.replace('"0 3 * * *"', '"0 3 * *"'))
    with caplog.at_level(logging.WARNING, logger="circlet.scheduler"):
        assert env.scheduler.due(T3) == []
    assert "event=schedule_config_error" in caplog.text and "has 4 fields" in caplog.text
    build = env.svc.trigger_pipeline(env.project, why=Why.PUSH)  # a push reports it, with the path
    assert build is not None and "workflows.nightly.triggers[0].schedule.cron" in build.messages[0].message


def test_a_run_whose_workflow_left_the_config_is_recorded_done_without_build(env: Env) -> None:
    env.commit(NIGHTLY)
    [run] = env.scheduler.run_due(T3, start=False)
    env.commit(NIGHTLY.replace("nightly:", "weekly:"))
    env.svc.refs(env.project)  # the server's mirror sees the new head
    [started] = env.scheduler.run_pending()  # it still builds the head it was due at
    assert started.state is ScheduleRunState.DONE and started.revision == run.revision


def test_upcoming_lists_the_next_run_per_branch(env: Env) -> None:
    env.commit(NIGHTLY)
    env.commit(NIGHTLY, branch="release-2")
    upcoming = env.scheduler.upcoming(env.project, T3)
    assert [(u.workflow, u.branch, u.at) for u in upcoming] == [
        ("nightly", "main", datetime(2026, 11, 29, 3, 0, tzinfo=UTC)),
        ("nightly", "release-2", datetime(2026, 11, 29, 3, 0, tzinfo=UTC)),
    ]


def test_the_thread_starts_and_stops(env: Env) -> None:
    env.commit(NIGHTLY)
    scheduler = Scheduler(env.svc, env.runs, clock=env.clock, poll_seconds=0.01)
    scheduler.start()
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while not env.builds() and datetime.now(UTC) < deadline:
            threading.Event().wait(0.01)
    finally:
        scheduler.stop()
    assert [b.job_name for b in env.builds()] == ["coverage"]


def trig(schedule: str) -> str:
    return (
        "version: 2\njobs:\n  a: {docker: [{image: x}], steps: [{run: make}]}\n"
        f"workflows:\n  n:\n    triggers: {schedule}\n    jobs: [a]\n"
    )


@pytest.mark.parametrize(
    ("triggers", "path", "message"),
    [
        pytest.param(
            "nightly", "workflows.n.triggers", "`triggers` must be a non-empty list", id="not-a-list"
        ),
        pytest.param(
            "[{cron: '0 3 * * *'}]", "workflows.n.triggers[0]", "a trigger is `schedule:", id="no-schedule"
        ),
        pytest.param(
            "[{schedule: {filters: {branches: {only: main}}}}]",
            "workflows.n.triggers[0].schedule",
            "a schedule needs `cron`",
            id="no-cron",
        ),
        pytest.param(
            "[{schedule: {cron: '0 3 * * *'}}]",
            "workflows.n.triggers[0].schedule.filters",
            "a schedule needs `filters: {branches:",
            id="no-filters",
        ),
        pytest.param(
            "[{schedule: {cron: '0 3 * * *', filters: {branches: {}}}}]",
            "workflows.n.triggers[0].schedule.filters.branches",
            "needs `only` or `ignore`",
            id="empty-branches",
        ),
        pytest.param(
            "[{schedule: {cron: '0 3 * * *', filters: {branches: {only: '/(/'}}}}]",
            "workflows.n.triggers[0].schedule.filters.branches.only",
            "invalid regular expression /(/",
            id="bad-regex",
        ),
        pytest.param(
            "[{schedule: {cron: '0 3 * * *', frequency: daily, filters: {branches: {only: main}}}}]",
            "workflows.n.triggers[0].schedule.frequency",
            "unknown schedule key 'frequency'",
            id="unknown-key",
        ),
        pytest.param(
            "[{schedule: {cron: '0 25 * * *', filters: {branches: {only: main}}}}]",
            "workflows.n.triggers[0].schedule.cron",
            "hour: '25' is out of range 0-23",
            id="bad-cron",
        ),
    ],
)
def test_bad_triggers_are_config_errors_with_their_path(triggers: str, path: str, message: str) -> None:
    config = load_config(trig(triggers))
    for parse in (parse_schedules, parse_workflows):
        with pytest.raises(ConfigError) as err:
            parse(config)  # type: ignore[operator]
        [problem] = err.value.problems
        assert (problem.path, problem.line) == (path, 6)
        assert message in problem.message


def test_good_triggers_parse() -> None:
    text = trig("[{schedule: {cron: '0 3 * * 1-5', filters: {branches: {ignore: [/wip-.*/]}}}}]")
    [schedule] = parse_schedules(load_config(text))["n"]
    assert schedule.cron.text == "0 3 * * 1-5"
    assert schedule.runs_on("main") and not schedule.runs_on("wip-x")


@pytest.mark.parametrize(("value", "expected"), [("on", True), ("off", False), (None, True)])
def test_the_scheduler_setting(tmp_path: Path, value: str | None, expected: bool) -> None:
    environ = {"CIRCLET_DATA_DIR": str(tmp_path)} | ({"CIRCLET_SCHEDULER": value} if value else {})
    assert load_settings(environ).scheduler is expected


def test_a_scheduled_build_of_a_new_head_does_not_hide_its_push_from_the_poller(env: Env) -> None:
    env.commit(NIGHTLY)
    pushes = Pushes(env.svc)
    pushes.poll(env.project)  # learns the refs
    head = env.commit(NIGHTLY + "# moved\n")  # pushed just before 03:00; the poller has not seen it
    [run] = env.scheduler.run_due(T3)
    assert run.revision == head
    [pushed] = pushes.poll(env.project)
    assert (pushed.vcs_revision, pushed.why, pushed.job_name) == (head, Why.GITHUB, "build")
