"""Circlet.list_views: a page of summaries finds previous builds on the page itself, with the
same answers as one view per build (and fewer store queries)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from circlet.core.model import Build, Lifecycle, Outcome, Project, Why
from circlet.core.ports import BuildQuery
from circlet.service import Circlet
from circlet.testing import (
    FakeSourceHost,
    InMemoryBuildStore,
    InMemoryLogStore,
    InMemoryProjectSettingsStore,
    RecordingDispatcher,
)


class CountingStore(InMemoryBuildStore):
    def __init__(self) -> None:
        super().__init__()
        self.previous_calls = 0

    def previous_build(self, *args: Any, **kwargs: Any) -> Build | None:
        self.previous_calls += 1
        return super().previous_build(*args, **kwargs)


def history(store: CountingStore, projects: list[Project], seed: int) -> None:
    rng = random.Random(seed)
    made: dict[int, int] = {}  # project id -> builds made
    for _ in range(120):
        project = rng.choice(projects)
        lifecycle = rng.choice([Lifecycle.FINISHED] * 4 + [Lifecycle.RUNNING, Lifecycle.NOT_RUN])
        outcome = rng.choice(list(Outcome)) if lifecycle is Lifecycle.FINISHED else None
        made[project.id or 0] = made.get(project.id or 0, 0) + 1
        retry_of = (
            rng.randrange(1, made[project.id or 0])
            if made[project.id or 0] > 1 and rng.random() < 0.2
            else None
        )
        store.create_build(
            Build(
                project_id=project.id or 0,
                branch=rng.choice(["main", "dev", None]),
                job_name=rng.choice(["build", None, "test"]),
                lifecycle=lifecycle,
                outcome=outcome,
                retry_of=retry_of,
                why=rng.choice([Why.RETRY, Why.AUTO_RETRY]) if retry_of else Why.API,
            )
        )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("one_project", [True, False])
def test_same_views_as_one_by_one(seed: int, one_project: bool) -> None:
    store = CountingStore()
    source = FakeSourceHost()
    for name in ("widget", "gadget"):
        source.add_commit(f"https://git.example/{name}", files={"README": "x"}, message="First")
    svc = Circlet(
        store=store,
        logs=InMemoryLogStore(),
        source=source,
        dispatcher=RecordingDispatcher(),
        settings=InMemoryProjectSettingsStore(),
        base_url="https://ci.example.com",
    )
    projects = [
        svc.add_project(vcs_type="gh", username="acme", reponame=name, repo_url=f"https://git.example/{name}")
        for name in ("widget", "gadget")
    ]
    history(store, projects, seed)
    by_id = {p.id or 0: p for p in projects}
    ids = (projects[0].id or 0,) if one_project else tuple(by_id)
    for offset in (0, 13, 90):
        page = svc.list_builds(BuildQuery(project_ids=ids, limit=30, offset=offset))
        store.previous_calls = 0
        expected = [svc.view(by_id[b.project_id], b, details=False) for b in page]
        one_by_one = store.previous_calls
        store.previous_calls = 0

        assert svc.list_views(by_id, page, whole=True) == expected
        assert store.previous_calls < one_by_one or not page
        assert svc.list_views(by_id, page, whole=False) == expected
    failed = svc.list_builds(BuildQuery(project_ids=ids, outcomes=(Outcome.FAILED,), limit=30))
    assert svc.list_views(by_id, failed, whole=False) == [
        svc.view(by_id[b.project_id], b, details=False) for b in failed
    ]
