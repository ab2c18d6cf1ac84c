"""Scheduled workflows (config.md 5.6): a thread that runs each workflow's `triggers` at their
minutes, on the heads of the branches their filters accept (docs/schedules.md).

Each minute, for each project, the scheduler reads the config at the head of every branch
(parsed once per commit), and for each workflow whose `schedule` matches the minute on that
branch it claims the run (project, workflow, branch, minute) in the ScheduleStore, then triggers
that workflow alone at that head: `Circlet.trigger_pipeline(..., why=Why.SCHEDULE,
workflow=name)`. The claim is an insert on a unique key, so a minute runs at most once however
many threads, processes or restarts see it; a run whose server dies while triggering it is lost,
never doubled. A minute the server was down for is not run later; a minute a busy server ticks
late is (up to CATCH_UP minutes back).

`circlet schedule run-due --at TIME` (an operator, or a test) records the runs due at TIME as
PENDING; the server's scheduler starts pending runs within `poll_seconds`, even with
CIRCLET_SCHEDULER=off (which only stops the server's own clock).

Fetching: the branch heads come from the project's mirror; the scheduler fetches a project when
something is due on it (then reads the heads again) and at least every `refresh`, so schedules
added on branches no push told circlet about are learned within that time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from circlet.core import config as config_mod
from circlet.core import cron
from circlet.core.errors import CircletError, ConfigError
from circlet.core.model import Project, Why
from circlet.core.pipeline import ScheduleRun, ScheduleRunState, ScheduleStore
from circlet.core.workflow import Schedule
from circlet.core.workflow_config import parse_schedules
from circlet.service import Circlet

log = logging.getLogger("circlet.scheduler")

CONFIG_PATH = ".circleci/config.yml"
CATCH_UP = 10  # minutes a late tick still runs (the thread was busy); never across a restart
CACHE_LIMIT = 2000  # commits whose schedules are remembered
_Schedules = dict[str, tuple[Schedule, ...]]


def minute_of(t: datetime) -> datetime:
    """The UTC minute of `t` (naive means UTC)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).replace(second=0, microsecond=0)


@dataclass(frozen=True, kw_only=True)
class Upcoming:
    """The next run of a scheduled workflow on a branch (`circlet schedule next`)."""

    project: str  # slug
    workflow: str
    branch: str
    cron: str
    at: datetime


class Scheduler:
    """Runs scheduled workflows. Thread-safe; `tick`, `run_due` and `run_pending` may also be
    called directly (the CLI, tests). `clock` defaults to the service's."""

    def __init__(
        self,
        circlet: Circlet,
        store: ScheduleStore,
        *,
        clock: Callable[[], datetime] | None = None,
        enabled: bool = True,
        poll_seconds: float = 2.0,
        refresh: timedelta = timedelta(minutes=10),
        keep: timedelta = timedelta(days=30),
    ) -> None:
        self.circlet = circlet
        self.store = store
        self.clock = clock or circlet.clock
        self.enabled = enabled  # False: only runs asked for with `circlet schedule run-due`
        self.poll_seconds = poll_seconds
        self.refresh = refresh
        self.keep = keep
        self._cache: dict[tuple[int, str], _Schedules] = {}
        self._synced: dict[int, datetime] = {}  # project id -> when the scheduler last fetched it
        self._last: datetime | None = None  # the last minute the clock part ran
        self._pruned: datetime | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ the thread

    def start(self) -> None:
        """Start the thread (the first tick at once). Idempotent."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="circlet-scheduler", daemon=True)
            self._thread.start()
            log.info("event=scheduler_started clock=%s", "on" if self.enabled else "off")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the tick in progress. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a bug must not end scheduling
                log.exception("event=scheduler_crashed")
            self._stop.wait(self.poll_seconds)

    def tick(self) -> list[ScheduleRun]:
        """Start the pending runs; when enabled and the minute changed, run every minute since
        the last tick (at most CATCH_UP; at the first tick, the current minute alone)."""
        with self._lock:
            done = self.run_pending()
            if not self.enabled:
                return done
            now = minute_of(self.clock())
            if self._last is None:
                minutes = [now]
            else:
                gap = int((now - self._last).total_seconds() // 60)
                minutes = [now - timedelta(minutes=k) for k in reversed(range(min(gap, CATCH_UP)))]
            if self._last is None or now > self._last:
                self._last = now
            for minute in minutes:
                done += self.run_due(minute)
            if self._pruned is None or now - self._pruned >= timedelta(hours=1):
                self._pruned = now
                self.store.prune_runs(now - self.keep)
            return done

    # ------------------------------------------------------------ what is due, running it

    def due(self, at: datetime, projects: list[Project] | None = None) -> list[ScheduleRun]:
        """The runs due at the minute of `at` (not recorded), for every project or those given.
        A project that cannot be fetched is logged and skipped."""
        minute = minute_of(at)
        found: list[ScheduleRun] = []
        for project in self.circlet.list_projects() if projects is None else projects:
            try:
                found += self._due_in(project, minute)
            except CircletError as exc:
                log.warning("event=schedule_fetch_failed project=%s error=%s", project.slug, exc)
        return found

    def run_due(
        self, at: datetime, *, start: bool = True, projects: list[Project] | None = None
    ) -> list[ScheduleRun]:
        """Claim the runs due at the minute of `at` and (start=True, the server) trigger them, or
        (start=False, the CLI) leave them PENDING for the server. Returns the runs this call
        claimed, as recorded; a run already claimed by anyone is left alone."""
        made: list[ScheduleRun] = []
        for run in self.due(at, projects):
            claimed = replace(
                run,
                state=ScheduleRunState.STARTED if start else ScheduleRunState.PENDING,
                requested_by="scheduler" if start else "cli",
                created_at=self.circlet.clock(),
            )
            if not self.store.claim_run(claimed):
                log.info(
                    "event=schedule_already_run project_id=%s workflow=%s branch=%s minute=%s",
                    run.project_id,
                    run.workflow,
                    run.branch,
                    run.minute.isoformat(),
                )
                continue
            made.append(self._start(claimed) if start else claimed)
        return made

    def run_pending(self) -> list[ScheduleRun]:
        """Trigger the runs `circlet schedule run-due` recorded (each taken by one server)."""
        return [self._start(run) for run in self.store.take_pending()]

    def _start(self, run: ScheduleRun) -> ScheduleRun:
        project = self.circlet.store.get_project_by_id(run.project_id)
        try:
            if project is None:
                raise CircletError("the project was removed")
            build = self.circlet.trigger_pipeline(
                project,
                branch=run.branch,
                revision=run.revision or None,
                why=Why.SCHEDULE,
                workflow=run.workflow,
            )
        except CircletError as exc:
            done = replace(run, state=ScheduleRunState.FAILED, error=exc.message)
        except Exception as exc:  # a bug: record it, keep scheduling
            log.exception("event=schedule_run_crashed workflow=%s", run.workflow)
            done = replace(run, state=ScheduleRunState.FAILED, error=f"internal error: {exc!r}")
        else:
            pipeline_id = build.extra.get("pipeline_id") if build is not None else None
            done = replace(
                run,
                state=ScheduleRunState.DONE,
                pipeline_id=str(pipeline_id) if pipeline_id else None,
                build_num=build.build_num if build is not None else None,
                error=None if build is not None else "no job of the workflow runs on this branch",
            )
        self.store.save_run(done)
        log.info(
            "event=schedule_run project=%s workflow=%s branch=%s minute=%s state=%s build_num=%s error=%s",
            project.slug if project else run.project_id,
            run.workflow,
            run.branch,
            run.minute.isoformat(),
            done.state.value,
            done.build_num,
            done.error,
        )
        return done

    def upcoming(self, project: Project, after: datetime | None = None) -> list[Upcoming]:
        """The next run of each scheduled workflow on each branch it runs on (heads as the
        mirror knows them), soonest first."""
        now = after or self.clock()
        out: list[Upcoming] = []
        for branch, sha in sorted(self._heads(project, fetch=True).items()):
            for name, schedules in self._schedules_at(project, sha).items():
                for schedule in schedules:
                    if schedule.runs_on(branch):
                        at = cron.next_after(schedule.cron, now)
                        out.append(
                            Upcoming(
                                project=project.slug,
                                workflow=name,
                                branch=branch,
                                cron=schedule.cron.text,
                                at=at,
                            )
                        )
        return sorted(out, key=lambda u: (u.at, u.workflow, u.branch))

    # ------------------------------------------------------------ reading configs

    def _due_in(self, project: Project, minute: datetime) -> list[ScheduleRun]:
        synced = self._synced.get(project.id or 0)
        fresh = synced is None or self.clock() - synced >= self.refresh
        heads = self._heads(project, fetch=fresh)
        due = self._match(project, heads, minute)
        if due and not fresh:  # something is due: build what the repository holds now
            due = self._match(project, self._heads(project, fetch=True), minute)
        return due

    def _heads(self, project: Project, *, fetch: bool) -> dict[str, str]:
        if fetch:
            refs = self.circlet.refs(project)
            self._synced[project.id or 0] = self.clock()
        else:
            refs = self.circlet.source.refs(project)
        return {r.removeprefix("refs/heads/"): sha for r, sha in refs.items() if r.startswith("refs/heads/")}

    def _match(self, project: Project, heads: dict[str, str], minute: datetime) -> list[ScheduleRun]:
        runs: list[ScheduleRun] = []
        for branch, sha in sorted(heads.items()):
            for name, schedules in self._schedules_at(project, sha).items():
                if any(s.runs_on(branch) and cron.matches(s.cron, minute) for s in schedules):
                    runs.append(
                        ScheduleRun(
                            project_id=project.id or 0,
                            workflow=name,
                            branch=branch,
                            minute=minute,
                            revision=sha,
                        )
                    )
        return runs

    def _schedules_at(self, project: Project, sha: str) -> _Schedules:
        key = (project.id or 0, sha)
        found = self._cache.get(key)
        if found is not None:
            return found
        found = {}
        try:
            text = self.circlet.source.read_file(project, sha, CONFIG_PATH)
            if text is not None:
                found = parse_schedules(config_mod.load_config(text, filename=CONFIG_PATH))
        except ConfigError as exc:  # a push of this commit reports it; scheduling skips it
            log.warning(
                "event=schedule_config_error project=%s sha=%s error=%s", project.slug, sha[:12], exc.message
            )
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = found
        return found
