"""Runs reporting back: the RunReporter verbs of the `Circlet` facade (core/ports.py).

Runners (in this process, in a slot's child process, or on a worker through the runner
gateway) call these as a build queues, starts, runs its actions and finishes; a build of
several containers (celery executor) starts and ends per container. A finished build queues
its notification webhooks. `RunReporterVerbs` is mixed into `service.Circlet` (callers use
these methods on a Circlet, never this class alone).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from circlet.core import config as config_mod
from circlet.core.errors import ConfigError
from circlet.core.model import Action, Build, Lifecycle, Message, Outcome
from circlet.core.ports import BuildStore, LogStore, LogWriter, Notifier, ProjectSettingsStore
from circlet.core.workers import containers_of, finish_container, start_container, without_waiting_note
from circlet.journal import ActionJournal
from circlet.pipelines import Workflows

log = logging.getLogger("circlet.service")

CONFIG_PATH = ".circleci/config.yml"


class RunReporterVerbs:
    """Records what runners report about a build (its lifecycle, actions, logs, test results
    and messages); each change of a build row holds the service's lock."""

    store: BuildStore
    logs: LogStore
    settings: ProjectSettingsStore
    journal: ActionJournal
    notifier: Notifier | None
    workflows: Workflows | None
    _lock: threading.RLock
    _stopping: bool
    _project_of_build: dict[int, int]
    finished_observers: list[Callable[[Build], None]]

    if TYPE_CHECKING:  # provided by Circlet and ViewVerbs

        def _touch(self, project_id: int) -> None: ...

        def _touch_build(self, build_id: int) -> None: ...

        def status_of(self, build: Build, retries: list[Build] | None = None) -> str: ...

    def build_queued(self, build_id: int, at: datetime) -> None:
        with self._lock:
            build = self.store.get_build_by_id(build_id)
            if build is None or build.outcome is not None or build.lifecycle is not Lifecycle.NOT_RUNNING:
                return
            self.store.save_build(replace(build, lifecycle=Lifecycle.QUEUED, queued_at=at))
            self._touch(build.project_id)

    def build_started(self, build_id: int, at: datetime, worker: str, node: int | None = None) -> bool:
        if node is not None:
            return self._container_started(build_id, at, worker, node)
        with self._lock:
            build = self.store.get_build_by_id(build_id)
            if build is None or build.outcome is not None or build.finished:
                return False
            if build.lifecycle is Lifecycle.RUNNING:
                return False  # a redelivered message: the build already runs elsewhere, never twice
            self.store.save_build(
                replace(
                    build,
                    lifecycle=Lifecycle.RUNNING,
                    queued_at=build.queued_at or at,
                    start_time=at,
                    worker=worker,
                    messages=without_waiting_note(build.messages),
                )
            )
            self._touch(build.project_id)
            self._project_of_build[build_id] = build.project_id
        log.info("event=build_started build_id=%s worker=%s", build_id, worker)
        return True

    def action_started(self, build_id: int, action: Action) -> None:
        self.journal.put(build_id, action)
        self._touch_build(build_id)

    def log_writer(self, build_id: int, step: int, index: int) -> LogWriter:
        return self.logs.writer(build_id, step, index)

    def action_finished(self, build_id: int, action: Action) -> None:
        self.journal.put(build_id, action)
        self._touch_build(build_id)

    def test_results(
        self, build_id: int, index: int, tests: list[dict[str, Any]], exceptions: list[dict[str, Any]]
    ) -> None:
        self.store.add_test_results(build_id, index, tests, exceptions)
        self._touch_build(build_id)

    def build_finished(
        self,
        build_id: int,
        outcome: Outcome,
        at: datetime,
        messages: tuple[Message, ...] = (),
        node: int | None = None,
    ) -> None:
        if node is not None:
            last = self._container_finished(build_id, node, outcome, messages)
            if last is None:
                return  # other containers still run (or it was a resend)
            outcome, messages = last, ()
        self.journal.flush(build_id)
        with self._lock:
            build = self.store.get_build_by_id(build_id)
            if build is None or build.lifecycle in (Lifecycle.FINISHED, Lifecycle.NOT_RUN):
                return
            if build.outcome is Outcome.CANCELED and build.start_time is None:
                return  # canceled before it started: it keeps its lifecycle (api-v1.1.md 6.4)
            final = Outcome.CANCELED if build.outcome is Outcome.CANCELED else outcome
            if self._stopping and final is Outcome.CANCELED and build.outcome is not Outcome.CANCELED:
                # Not a user's cancel: the server is shutting down under the build.
                final = Outcome.INFRASTRUCTURE_FAIL
                messages = (
                    *messages,
                    Message(
                        type="error",
                        reason="infrastructure",
                        message="circlet was stopped while this build was running; "
                        "retry the build to run it again.",
                    ),
                )
            done = replace(
                build,
                lifecycle=Lifecycle.FINISHED,
                outcome=final,
                stop_time=at,
                start_time=build.start_time or (at if build.lifecycle is Lifecycle.RUNNING else None),
                messages=(*build.messages, *messages),
            )
            # The status is decided now, against the builds finished so far, and kept: reading
            # it later costs no query, and an older build finishing later does not change it.
            self.store.save_build(replace(done, extra={**done.extra, "status": self.status_of(done)}))
            self._touch(done.project_id)
        log.info("event=build_finished build_id=%s outcome=%s", build_id, final)
        for observe in self.finished_observers:  # (metrics.py)
            try:
                observe(done)
            except Exception:  # an observer's bug must not harm the build
                log.exception("event=finished_observer_failed build_id=%s", build_id)
        self._notify(build_id)
        if self.workflows is not None:
            self.workflows.build_changed(build_id)  # start what waited for it

    # containers of one build (celery executor)

    def _container_started(self, build_id: int, at: datetime, worker: str, node: int) -> bool:
        """build_started of one container (core/workers.py start_container). A container refused
        because a user canceled the running build counts as finished canceled, so the build
        still ends when its last container does."""
        with self._lock:
            build = self.store.get_build_by_id(build_id)
            started = start_container(build, node, worker, at) if build is not None else None
            if started is not None:
                self.store.save_build(started)
                self._touch(started.project_id)
                self._project_of_build[build_id] = started.project_id
        if started is None:
            canceled = build is not None and build.outcome is Outcome.CANCELED
            if (
                canceled
                and build is not None
                and build.lifecycle is Lifecycle.RUNNING
                and (node not in containers_of(build))
            ):
                self.build_finished(build_id, Outcome.CANCELED, at, (), node=node)
            return False
        log.info("event=container_started build_id=%s node=%s worker=%s", build_id, node, worker)
        return True

    def _container_finished(
        self, build_id: int, node: int, outcome: Outcome, messages: tuple[Message, ...]
    ) -> Outcome | None:
        """Record one container's end; the build's outcome when it was the last one."""
        with self._lock:
            build = self.store.get_build_by_id(build_id)
            if build is None:
                return None
            saved, final = finish_container(build, node, outcome, messages)
            if saved is not None:
                self.store.save_build(saved)
                self._touch(saved.project_id)
        log.info("event=container_finished build_id=%s node=%s outcome=%s", build_id, node, outcome)
        return final

    def add_build_message(self, build_id: int, message: Message) -> None:
        """Append a message to a build (once: a message it already has is not repeated)."""
        with self._lock:
            build = self.store.get_build_by_id(build_id)
            if build is None or message in build.messages:
                return
            self.store.save_build(replace(build, messages=(*build.messages, message)))
            self._touch(build.project_id)

    def remove_build_message(self, build_id: int, message: Message) -> None:
        """Drop a message from a build (a waiting build's note that no worker serves its class)."""
        with self._lock:
            build = self.store.get_build_by_id(build_id)
            if build is None or message not in build.messages:
                return
            kept = tuple(m for m in build.messages if m != message)
            self.store.save_build(replace(build, messages=kept))
            self._touch(build.project_id)

    # notification webhooks

    def _notify(self, build_id: int) -> None:
        """Queue the webhooks of a build that just finished: the config's `notify.webhooks`, then
        the project's settings. Only records them (the notifier sends in the background); a
        problem here is logged, never raised into the build."""
        if self.notifier is None:
            return
        try:
            build = self.store.get_build_by_id(build_id)
            if build is None or build.lifecycle is not Lifecycle.FINISHED:
                return
            urls: list[tuple[str, str]] = []
            if build.config_text and "notify" in build.config_text:
                try:
                    config = config_mod.load_config(build.config_text, filename=CONFIG_PATH)
                    urls += [(url, "config") for url in config_mod.notify_webhooks(config)]
                except ConfigError:
                    pass  # the build's messages already say what is wrong with its config
            urls += [(hook.url, "project") for hook in self.settings.list_webhooks(build.project_id)]
            if urls:
                self.notifier.enqueue(build, urls)
        except Exception:
            log.exception("event=notify_error build_id=%s", build_id)
