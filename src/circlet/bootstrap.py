"""The only place that chooses adapters: build_services(settings) wires circlet together."""

from __future__ import annotations

from dataclasses import dataclass

from circlet.core.ports import Dispatcher
from circlet.core.retention import RetentionPolicy
from circlet.executors.celery_app import make_celery
from circlet.executors.celery_exec import CeleryExecutor
from circlet.executors.child import ProcessRunner, groups_dir
from circlet.executors.local import LocalExecutor, SlotRunner, ThreadRunner
from circlet.fleet import Fleet
from circlet.http.deps import Services
from circlet.janitor import BlobJanitor
from circlet.metrics import Metrics
from circlet.notify import Notifier
from circlet.poller import BranchPoller, Pushes
from circlet.runner import sandbox
from circlet.runner.process import reap_orphans
from circlet.scheduler import Scheduler
from circlet.service import Circlet
from circlet.settings import Settings, SettingsError
from circlet.store.blobs_fs import FileBlobStore
from circlet.store.deliveries_sql import SqlDeliveryStore
from circlet.store.logs import FileLogStore
from circlet.store.migrate import migrate
from circlet.store.pipelines_sql import SqlPipelineStore
from circlet.store.schedules_sql import SqlScheduleStore
from circlet.store.sessions_sql import SqlSessionStore
from circlet.store.settings_sql import SqlProjectSettingsStore
from circlet.store.sql import SqlBuildStore, make_engine
from circlet.store.workers_sql import SqlWorkerStore
from circlet.vcs.git import GitSourceHost
from circlet.wire import Links


@dataclass(frozen=True, kw_only=True)
class App:
    settings: Settings
    circlet: Circlet
    services: Services
    poller: BranchPoller | None = None  # started and stopped by `circlet serve`
    scheduler: Scheduler | None = None  # scheduled workflows; started by `circlet serve`
    janitor: BlobJanitor | None = None  # expired artifacts, caches, workspaces; started by `serve`

    def stop(self) -> None:
        """Stop polling and scheduling, then running builds. Idempotent."""
        if self.poller is not None:
            self.poller.stop()
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.janitor is not None:
            self.janitor.stop()
        self.circlet.stop()


def build_dispatcher(settings: Settings, source: GitSourceHost, fleet: Fleet | None = None) -> Dispatcher:
    if settings.executor == "celery" and fleet is not None:
        return CeleryExecutor(app=make_celery(settings.broker_url), fleet=fleet)  # docs/workers.md
    if settings.executor != "local":
        raise NotImplementedError(f"the {settings.executor} executor is not available yet")

    if settings.sandbox == "bwrap":  # refuse at start, not build after build (runner/sandbox.py)
        box = sandbox.Sandbox(
            workspace_root=settings.workspaces_dir,
            hidden=sandbox.default_hidden(data_dir=settings.data_dir),
        )
        problem = sandbox.probe(box)
        if problem is not None:
            raise SettingsError(f"CIRCLET_SANDBOX=bwrap: the step sandbox does not work here: {problem}")
        if settings.runner == "thread":
            sandbox.configure(box)

    def runner() -> SlotRunner:
        if settings.runner == "thread":
            return ThreadRunner(
                workspace_root=settings.workspaces_dir,
                source=source,
                keep_workspace=settings.keep_workspaces,
                kill_grace=settings.kill_grace,
                blobs=FileBlobStore(settings.blobs_dir),
            )
        return ProcessRunner(
            workspace_root=settings.workspaces_dir,
            mirrors=settings.mirrors_dir,
            logs=settings.logs_dir,
            keep_workspaces=settings.keep_workspaces,
            kill_grace=settings.kill_grace,
            blobs=settings.blobs_dir,
            sandbox=settings.sandbox,
        )

    def reap() -> int:
        # Steps of builds that ran when a previous server died with its runners (issue: restart
        # safety). Only `serve` starts the executor, so CLI commands never reach this.
        return reap_orphans(groups_dir(settings.workspaces_dir))

    return LocalExecutor(slots=settings.effective_slots, runner_factory=runner, on_start=reap)


def build_services(settings: Settings, *, migrate_db: bool = True) -> App:
    """Construct every adapter from settings. Does not start running builds (call circlet.start())."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    if migrate_db:
        migrate(engine)
    store = SqlBuildStore(engine)
    logs = FileLogStore(settings.logs_dir)
    source = GitSourceHost(settings.mirrors_dir)
    links = Links(settings.effective_base_url, settings.secret_key())
    # Webhooks are signed with the server's secret (docs/webhooks.md).
    notifier = Notifier(deliveries=SqlDeliveryStore(engine), links=links, secret=settings.secret_key())
    fleet = Fleet(
        SqlWorkerStore(engine),
        lost_after=settings.worker_lost_after,
        heartbeat_interval=settings.worker_heartbeat,
        resubmit_after=settings.resubmit_after,
        sweeping=settings.executor == "celery",
    )
    blobs = FileBlobStore(settings.blobs_dir)
    metrics = Metrics(  # docs/metrics.md
        store, workers=fleet.list_workers if settings.executor == "celery" else None, clock=fleet.clock
    )
    circlet = Circlet(
        on_finished=(metrics.build_finished,),
        blobs=blobs,
        fleet=fleet,
        store=store,
        logs=logs,
        source=source,
        dispatcher=build_dispatcher(settings, source, fleet),
        settings=SqlProjectSettingsStore(engine),
        base_url=settings.effective_base_url,
        notifier=notifier,
        pipelines=SqlPipelineStore(engine),
        orbs_dir=settings.orbs_dir,
        sessions=SqlSessionStore(engine),  # web sign-ins (core/sessions.py)
    )
    pushes = Pushes(circlet, server_secret=settings.push_secret)  # docs/push-triggers.md
    return App(
        settings=settings,
        circlet=circlet,
        services=Services(
            circlet=circlet, links=links, worker_token=settings.worker_token, pushes=pushes, metrics=metrics
        ),
        poller=BranchPoller(pushes, interval=settings.poll_interval),
        scheduler=Scheduler(circlet, SqlScheduleStore(engine), enabled=settings.scheduler),  # schedules.md
        janitor=BlobJanitor(
            blobs,
            RetentionPolicy(
                artifact_days=settings.artifact_days,
                cache_days=settings.cache_days,
                workspace_days=settings.workspace_days,
            ),
        ),
    )
