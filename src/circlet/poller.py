"""Push-like triggers: push webhooks (http/hooks.py) and the branch poller, both through Pushes.

A push builds as CircleCI builds a push: `Circlet.trigger_pipeline(..., why=Why.PUSH)`, so a
head commit asking `[ci skip]` records a build that did not run, and workflows' branch and tag
filters apply. Branch pushes build the pushed commit (`revision=after`); tag pushes build the
tag; deleted refs build nothing. docs/push-triggers.md is the user's view.

Concurrency: Pushes is thread-safe; pushes of one project are handled one at a time (a lock per
project), so a webhook and the poller seeing the same move make one build, not two. The poller
is one daemon thread that polls every project, one after the other, every `interval` seconds.
"""

from __future__ import annotations

import logging
import threading

from circlet.core.errors import CircletError, NotFound
from circlet.core.model import Build, Project, Why
from circlet.core.ports import BuildQuery
from circlet.core.push import SECRET_VAR, PushEvent
from circlet.service import Circlet

log = logging.getLogger("circlet.poller")

RECENT_TAG_BUILDS = 30  # builds looked at to tell whether a tag's commit was built already


class Pushes:
    """Turns ref moves into builds and remembers the last commit seen on each ref.

    `server_secret` (CIRCLET_PUSH_SECRET) is the push secret of projects without their own
    project variable CIRCLET_PUSH_SECRET; "" = none.
    """

    def __init__(self, circlet: Circlet, *, server_secret: str = "") -> None:
        self.circlet = circlet
        self.server_secret = server_secret
        self._guard = threading.Lock()
        self._locks: dict[int, threading.Lock] = {}
        self._seen: dict[int, dict[str, str]] = {}  # project id -> ref -> commit

    def secret_for(self, project: Project) -> str | None:
        """The secret a push delivery for `project` must be signed with; None = unsigned is fine."""
        try:
            return self.circlet.get_env_var(project, SECRET_VAR).value or None
        except NotFound:
            return self.server_secret or None

    def push(self, project: Project, event: PushEvent) -> Build | None:
        """Build a pushed ref (a webhook delivery). Returns the first build made, None when the
        ref was deleted or nothing matched it. Blocking (fetches); InvalidRequest when the
        repository cannot be fetched or lacks the commit."""
        with self._lock(project):
            seen = self._seen.get(project.id or 0)  # None until the poller's first round
            if event.deleted:
                if seen is not None:
                    seen.pop(event.ref, None)
                return None
            build = self._trigger(project, event.ref, event.after)
            if seen is not None:
                seen[event.ref] = event.after
            return build

    def poll(self, project: Project) -> list[Build]:
        """Fetch the project and build every branch or tag that moved since the last poll.

        The first poll of a project after a start only learns the refs, except that a branch
        whose newest build is of another commit is built (it moved while circlet was down);
        branches never built and existing tags are not. Blocking; CircletError when the
        repository cannot be fetched."""
        refs = self.circlet.refs(project)
        made: list[Build] = []
        with self._lock(project):
            seen = self._seen.get(project.id or 0)
            for ref, sha in sorted(refs.items()):
                if seen is not None and seen.get(ref) == sha:
                    continue
                if seen is None and not self._moved_while_away(project, ref, sha):
                    continue
                if seen is not None and self._built(project, ref, sha):
                    continue  # a webhook delivery built it already
                try:
                    build = self._trigger(project, ref, sha)
                except CircletError as exc:  # moved again meanwhile, a broken ref...
                    log.warning(
                        "event=poll_trigger_failed project=%s ref=%s error=%s", project.slug, ref, exc
                    )
                    continue
                if build is not None:
                    made.append(build)
            self._seen[project.id or 0] = dict(refs)
        return made

    # ------------------------------------------------------------ helpers

    def _trigger(self, project: Project, ref: str, sha: str) -> Build | None:
        if ref.startswith("refs/tags/"):
            tag = ref.removeprefix("refs/tags/")
            build = self.circlet.trigger_pipeline(project, tag=tag, why=Why.PUSH)
        else:
            branch = ref.removeprefix("refs/heads/")
            build = self.circlet.trigger_pipeline(project, branch=branch, revision=sha, why=Why.PUSH)
        log.info(
            "event=push_triggered project=%s ref=%s sha=%s build_num=%s",
            project.slug,
            ref,
            sha[:12],
            build.build_num if build else None,
        )
        return build

    def _newest(self, project: Project, branch: str) -> Build | None:
        """The branch's newest build of a push or trigger (scheduled runs build heads too, but a
        push of the commit they built must still build: docs/schedules.md)."""
        found = self.circlet.list_builds(BuildQuery(project_ids=(project.id or 0,), branch=branch, limit=20))
        return next((b for b in found if b.why is not Why.SCHEDULE), None)

    def _moved_while_away(self, project: Project, ref: str, sha: str) -> bool:
        if not ref.startswith("refs/heads/"):
            return False
        newest = self._newest(project, ref.removeprefix("refs/heads/"))
        return newest is not None and newest.vcs_revision != sha

    def _built(self, project: Project, ref: str, sha: str) -> bool:
        if ref.startswith("refs/heads/"):
            newest = self._newest(project, ref.removeprefix("refs/heads/"))
            return newest is not None and newest.vcs_revision == sha
        tag = ref.removeprefix("refs/tags/")
        recent = self.circlet.list_builds(BuildQuery(project_ids=(project.id or 0,), limit=RECENT_TAG_BUILDS))
        return any(b.vcs_tag == tag and b.vcs_revision == sha for b in recent)

    def _lock(self, project: Project) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(project.id or 0, threading.Lock())


class BranchPoller:
    """A thread that polls every project every `interval` seconds (0 or less: never starts)."""

    def __init__(self, pushes: Pushes, *, interval: float) -> None:
        self.pushes = pushes
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start polling (the first round at once). Idempotent; does nothing when interval <= 0."""
        if self.interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="circlet-poller", daemon=True)
        self._thread.start()
        log.info("event=poller_started interval=%s", self.interval)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the poll in progress (a fetch may take up to git's timeout). Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def poll_all(self) -> list[Build]:
        """One round: every project in turn; a project that cannot be fetched is logged and skipped."""
        made: list[Build] = []
        for project in self.pushes.circlet.list_projects():
            if self._stop.is_set():
                break
            try:
                made.extend(self.pushes.poll(project))
            except CircletError as exc:
                log.warning("event=poll_failed project=%s error=%s", project.slug, exc)
            except Exception:  # a bug must not end polling for every project
                log.exception("event=poll_crashed project=%s", project.slug)
        return made

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.poll_all()
            self._stop.wait(self.interval)
