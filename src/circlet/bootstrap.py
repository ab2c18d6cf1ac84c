"""The only place that chooses adapters: build_services(settings) wires circlet together."""

from __future__ import annotations

from dataclasses import dataclass

from circlet.core.ports import Dispatcher
from circlet.executors.child import ProcessRunner, groups_dir
from circlet.executors.local import LocalExecutor, SlotRunner, ThreadRunner
from circlet.http.deps import Services
from circlet.notify import Notifier
from circlet.runner.process import reap_orphans
from circlet.service import Circlet
from circlet.settings import Settings
from circlet.store.deliveries_sql import SqlDeliveryStore
from circlet.store.logs import FileLogStore
from circlet.store.migrate import migrate
from circlet.store.settings_sql import SqlProjectSettingsStore
from circlet.store.sql import SqlBuildStore, make_engine
from circlet.vcs.git import GitSourceHost
from circlet.wire import Links


@dataclass(frozen=True, kw_only=True)
class App:
    settings: Settings
    circlet: Circlet
    services: Services


def build_dispatcher(settings: Settings, source: GitSourceHost) -> Dispatcher:
    if settings.executor != "local":
        raise NotImplementedError(f"the {settings.executor} executor is not available yet")

    def runner() -> SlotRunner:
        if settings.runner == "thread":
            return ThreadRunner(
                workspace_root=settings.workspaces_dir,
                source=source,
                keep_workspace=settings.keep_workspaces,
                kill_grace=settings.kill_grace,
            )
        return ProcessRunner(
            workspace_root=settings.workspaces_dir,
            mirrors=settings.mirrors_dir,
            logs=settings.logs_dir,
            keep_workspaces=settings.keep_workspaces,
            kill_grace=settings.kill_grace,
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
    circlet = Circlet(
        store=store,
        logs=logs,
        source=source,
        dispatcher=build_dispatcher(settings, source),
        settings=SqlProjectSettingsStore(engine),
        base_url=settings.effective_base_url,
        notifier=notifier,
    )
    return App(settings=settings, circlet=circlet, services=Services(circlet=circlet, links=links))
