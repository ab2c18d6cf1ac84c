"""Reading builds: the read verbs of the `Circlet` facade.

Builds and their v1.1 status, views as the API shows them (one, or a page with fewer queries),
actions, logs, test results, project overviews with their branches, and webhook deliveries.
`ViewVerbs` is mixed into `service.Circlet` (callers use these methods on a Circlet, never this
class alone). Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from circlet.core.errors import InvalidRequest, NotFound
from circlet.core.model import Action, Build, BuildView, Lifecycle, Outcome, Project, Scope, User, Why
from circlet.core.permissions import allowed_scopes
from circlet.core.ports import BuildQuery, BuildStore, LogChunk, LogStore, Notifier, ProjectSettingsStore
from circlet.core.projects import (
    BranchOverview,
    BuildBrief,
    Delivery,
    ProjectOverview,
    PublicSshKey,
    Role,
)
from circlet.core.status import derive_status
from circlet.journal import ActionJournal
from circlet.pipelines import Workflows

OVERVIEW_WINDOW = 500  # newest builds of a project whose branches /projects lists
DEFAULT_JOB = "build"
_ASK = object()  # (view: "not known yet, ask the store")


class ViewVerbs:
    """Builds, actions, logs and overviews as the API, web page and notifier read them."""

    store: BuildStore
    logs: LogStore
    settings: ProjectSettingsStore
    journal: ActionJournal
    notifier: Notifier | None
    workflows: Workflows | None

    if TYPE_CHECKING:  # provided by AccountVerbs and ProjectSettingsVerbs

        def user(self, user_id: int | None) -> User | None: ...

        def role_of(self, project: Project, user: User) -> Role | None: ...

        def public_ssh_keys(self, project: Project) -> list[PublicSshKey]: ...

    def get_build(self, project: Project, build_num: int) -> Build:
        build = self.store.get_build(project.id or 0, build_num)
        if build is None:
            raise NotFound("Build not found")
        return build

    def build_by_id(self, build_id: int) -> Build | None:
        """The build with this id as stored now (fresh: no cache); None when it is gone."""
        return self.store.get_build_by_id(build_id)

    def status_of(self, build: Build, retries: list[Build] | None = None) -> str:
        """The v1.1 status; for a build that finished through build_finished, the one decided
        then (only `retried` can still change it: an infrastructure failure retried by circlet).
        `retries`: the build's retries when known (else the store is asked when it matters)."""
        decided = build.extra.get("status")
        if isinstance(decided, str) and build.outcome is not Outcome.INFRASTRUCTURE_FAIL:
            return decided
        previous_outcome = None
        if build.outcome is Outcome.SUCCESS:
            prev = self.store.previous_build(
                build.project_id, build.branch, build.job_name, build.build_num, finished_only=True
            )
            previous_outcome = prev.outcome if prev else None
        auto_retried = False
        if build.outcome is Outcome.INFRASTRUCTURE_FAIL:
            if retries is None:
                retries = self.store.retries_of(build.project_id, build.build_num)
            auto_retried = any(r.why is Why.AUTO_RETRY for r in retries)
        return derive_status(
            build.lifecycle, build.outcome, previous_outcome=previous_outcome, auto_retried=auto_retried
        )

    def view(
        self,
        project: Project,
        build: Build,
        *,
        details: bool = True,
        shallow: bool = False,
        previous: object = _ASK,  # Build | None, or _ASK
        previous_ok: object = _ASK,
        retries: list[Build] | None = None,
    ) -> BuildView:
        """Gather what the API shows for a build: details add the actions; a shallow view (lists
        with shallow=true) skips the related builds it does not show. `previous`/`previous_ok`:
        the builds already known (list_views), else the store is asked; `retries` likewise."""
        status = self.status_of(build, retries)
        user = self.user(build.user_id)
        if shallow:
            return BuildView(project=project, build=build, status=status, user=user)
        if previous is _ASK:
            previous = self.store.previous_build(
                build.project_id, build.branch, build.job_name, build.build_num
            )
        if previous_ok is _ASK:
            previous_ok = self.store.previous_build(
                build.project_id,
                build.branch,
                build.job_name,
                build.build_num,
                finished_only=True,
                outcome=Outcome.SUCCESS,
            )
        assert previous is None or isinstance(previous, Build)
        assert previous_ok is None or isinstance(previous_ok, Build)
        if retries is None:
            retries = self.store.retries_of(build.project_id, build.build_num)
        return BuildView(
            project=project,
            build=build,
            status=status,
            actions=self.actions(build) if details else (),
            previous=previous,
            previous_status=self.status_of(previous) if previous else None,
            previous_successful=previous_ok,
            retries=tuple(r.build_num for r in retries),
            user=user,
            canceler=self.user(build.canceler_id),
        )

    def list_builds(self, query: BuildQuery) -> list[Build]:
        return self.store.list_builds(query)

    def list_views(
        self, projects: Mapping[int, Project], builds: list[Build], *, whole: bool
    ) -> list[BuildView]:
        """Summaries' views of a page of builds (`view(details=False)` each), with fewer queries.

        `whole`: the page holds every build of its projects between its first and last (a list
        without lifecycle/outcome filter, newest first). Then a build's previous build, and its
        previous successful one, of the same branch and job are found on the page when they are
        there (the store is asked only for the oldest of each branch and job)."""
        nums: dict[int, list[int]] = {}
        for build in builds:
            nums.setdefault(build.project_id, []).append(build.build_num)
        retries = {
            (project_id, num): found
            for project_id, numbers in nums.items()
            for num, found in self.store.retries_of_many(project_id, numbers).items()
        }

        def retries_of(build: Build) -> list[Build]:
            return retries.get((build.project_id, build.build_num), [])

        if not whole:
            return [
                self.view(projects[b.project_id], b, details=False, retries=retries_of(b)) for b in builds
            ]
        found_previous: dict[int, Build | None] = {}
        found_ok: dict[int, Build] = {}
        seen: dict[tuple[int, str | None, str], Build] = {}  # newest-first: the last one of a line
        seen_ok: dict[tuple[int, str | None, str], list[Build]] = {}  # waiting for a success
        for build in sorted(builds, key=lambda b: (b.project_id, -b.build_num)):
            line = (build.project_id, build.branch, build.job_name or DEFAULT_JOB)
            newer = seen.get(line)
            if newer is not None:
                found_previous[newer.id or 0] = build
            seen[line] = build
            waiting = seen_ok.setdefault(line, [])
            if build.lifecycle is Lifecycle.FINISHED and build.outcome is Outcome.SUCCESS:
                for later in waiting:
                    found_ok[later.id or 0] = build
                waiting.clear()
            waiting.append(build)
        return [
            self.view(
                projects[b.project_id],
                b,
                details=False,
                previous=found_previous.get(b.id or 0, _ASK),
                previous_ok=found_ok.get(b.id or 0, _ASK),
                retries=retries_of(b),
            )
            for b in builds
        ]

    def actions(self, build: Build) -> tuple[Action, ...]:
        """The build's actions, including records not yet written (ordered by step, index)."""
        stored = {(a.step, a.index): a for a in self.store.list_actions(build.id or 0)}
        for action in self.journal.pending(build.id or 0):
            stored[(action.step, action.index)] = action
        return tuple(action for _, action in sorted(stored.items()))

    def action(self, build: Build, step: int, index: int) -> Action:
        pending = [a for a in self.journal.pending(build.id or 0) if (a.step, a.index) == (step, index)]
        action = pending[0] if pending else self.store.get_action(build.id or 0, step, index)
        if action is None:
            raise NotFound(f"Build {build.build_num} has no step {step} on container {index}")
        return action

    def log_chunks(self, build: Build, step: int, index: int, *, offset: int = 0) -> Iterator[LogChunk]:
        return self.logs.chunks(build.id or 0, step, index, offset=offset)

    def overview(
        self, project: Project, user: User | None, *, token_scope: Scope = Scope.ALL, branches: bool = True
    ) -> ProjectOverview:
        """A project as /projects and /settings show it to `user` (None: a project token of
        `token_scope`; the caller checked access). Branches come from the project's newest
        OVERVIEW_WINDOW builds."""
        pid = project.id or 0
        if user is None:
            following, scopes = False, allowed_scopes(None, token_scope=token_scope)
        else:
            following = pid in self.settings.followed_projects(user.id or 0)
            scopes = allowed_scopes(self.role_of(project, user), user_admin=user.admin, oss=project.oss)
        return ProjectOverview(
            project=project,
            following=following,
            scopes=tuple(scopes),
            has_usable_key=bool(self.settings.list_checkout_keys(pid)),
            ssh_keys=tuple(self.public_ssh_keys(project)),
            branches=tuple(self._branches(project)) if branches else (),
        )

    def _branches(self, project: Project) -> list[BranchOverview]:
        pid = project.id or 0
        window = self.store.list_builds(BuildQuery(project_ids=(pid,), limit=OVERVIEW_WINDOW))
        by_branch: dict[str, list[Build]] = {}
        for build in window:  # newest first
            if build.branch is not None:
                by_branch.setdefault(build.branch, []).append(build)
        overviews = []
        for branch, builds in sorted(by_branch.items()):
            running = self.store.list_builds(
                BuildQuery(project_ids=(pid,), branch=branch, lifecycles=(Lifecycle.RUNNING,), limit=100)
            )
            success = self.store.list_builds(
                BuildQuery(project_ids=(pid,), branch=branch, outcomes=(Outcome.SUCCESS,), limit=1)
            )
            non_success = self.store.list_builds(
                BuildQuery(
                    project_ids=(pid,),
                    branch=branch,
                    lifecycles=(Lifecycle.FINISHED,),
                    outcomes=tuple(o for o in Outcome if o is not Outcome.SUCCESS),
                    limit=1,
                )
            )
            logins = []
            for build in builds:
                user = self.user(build.user_id)
                if user is not None and user.login not in logins:
                    logins.append(user.login)
            overviews.append(
                BranchOverview(
                    name=branch,
                    recent=tuple(self._brief(b) for b in builds[:5]),
                    running=tuple(self._brief(b) for b in running),
                    last_success=self._brief(success[0]) if success else None,
                    last_non_success=self._brief(non_success[0]) if non_success else None,
                    pusher_logins=tuple(logins),
                    latest_workflows=self.workflows.latest(builds) if self.workflows is not None else (),
                )
            )
        return overviews

    def _brief(self, build: Build) -> BuildBrief:
        return BuildBrief(build=build, status=self.status_of(build))

    def tests_of(self, build: Build) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The build's test cases and unreadable reports, as GET .../:build_num/tests shows them."""
        return self.store.test_results(build.id or 0)

    # notification webhooks (the notifier reads its payloads through view_of)

    def view_of(self, build_id: int) -> BuildView | None:
        """The full view of a build by id, as GET P/:build_num shows it; None when it is gone.
        The notifier reads payloads through this."""
        build = self.store.get_build_by_id(build_id)
        project = self.store.get_project_by_id(build.project_id) if build is not None else None
        if build is None or project is None:
            return None
        return self.view(project, build)

    def list_deliveries(
        self, *, project: Project | None = None, build_num: int | None = None, limit: int = 100
    ) -> list[tuple[Delivery, Build | None, Project | None]]:
        """Webhook deliveries, newest first, each with its build and project (for admins).
        build_num needs the project; NotFound for an unknown build."""
        if self.notifier is None:
            return []
        if build_num is not None:
            if project is None:
                raise InvalidRequest("build_num needs the project")
            found = self.notifier.list_deliveries(build_id=self.get_build(project, build_num).id, limit=limit)
        else:
            found = self.notifier.list_deliveries(project_id=project.id if project else None, limit=limit)
        builds: dict[int, Build | None] = {}
        projects: dict[int, Project | None] = {}
        rows: list[tuple[Delivery, Build | None, Project | None]] = []
        for delivery in found:
            if delivery.build_id not in builds:
                builds[delivery.build_id] = self.store.get_build_by_id(delivery.build_id)
            build = builds[delivery.build_id]
            if build is not None and build.project_id not in projects:
                projects[build.project_id] = self.store.get_project_by_id(build.project_id)
            rows.append((delivery, build, projects.get(build.project_id) if build is not None else None))
        return rows
