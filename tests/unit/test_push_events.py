"""Push events (core/push.py), table-driven, and Pushes/BranchPoller (poller.py) on fakes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from circlet.core.errors import InvalidRequest
from circlet.core.model import Project, VcsType, Why
from circlet.core.ports import BuildQuery
from circlet.core.push import (
    ZERO_SHA,
    PushEvent,
    event_kind,
    find_projects,
    parse_push,
    sign,
    url_key,
    verify,
)
from circlet.poller import BranchPoller, Pushes
from circlet.service import Circlet
from circlet.testing import (
    FakeSourceHost,
    InMemoryBuildStore,
    InMemoryLogStore,
    InMemoryProjectSettingsStore,
    RecordingDispatcher,
)
from circlet.testing.pipelines import InMemoryPipelineStore

SHA = "a" * 40
URL = "https://git.example/acme/widget.git"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(
            {
                "ref": "refs/heads/main",
                "after": SHA,
                "repository": {"full_name": "acme/widget", "clone_url": URL},
            },
            PushEvent(ref="refs/heads/main", after=SHA, full_name="acme/widget", urls=(URL,)),
            id="github",
        ),
        pytest.param(
            {"ref": "refs/tags/v1", "after": SHA.upper(), "repository": {"full_name": "a/b"}},
            PushEvent(ref="refs/tags/v1", after=SHA, full_name="a/b", urls=()),
            id="tag-upper-sha",
        ),
        pytest.param(
            {"ref": "refs/heads/x", "after": SHA, "deleted": True, "repository": {"full_name": "a/b"}},
            PushEvent(ref="refs/heads/x", after=ZERO_SHA, full_name="a/b", urls=()),
            id="deleted-flag",
        ),
        pytest.param(
            {
                "ref": "refs/heads/main",
                "after": SHA,
                "project": {"path_with_namespace": "g/p", "git_http_url": "https://gl/g/p.git"},
            },
            PushEvent(ref="refs/heads/main", after=SHA, full_name="g/p", urls=("https://gl/g/p.git",)),
            id="gitlab",
        ),
    ],
)
def test_parse_push(payload: dict[str, Any], expected: PushEvent) -> None:
    assert parse_push(payload) == expected


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param([], "must be a JSON object", id="not-object"),
        pytest.param(
            {"ref": "main", "after": SHA, "repository": {"full_name": "a/b"}}, "`ref`", id="bare-ref"
        ),
        pytest.param(
            {"ref": "refs/heads/m", "after": "abc", "repository": {"full_name": "a/b"}}, "`after`", id="short"
        ),
        pytest.param({"ref": "refs/heads/m", "after": SHA}, "`repository`", id="no-repository"),
    ],
)
def test_parse_push_errors(payload: object, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_push(payload)
    assert message in info.value.message


def test_event_properties() -> None:
    event = parse_push({"ref": "refs/heads/feature/x", "after": SHA, "repository": {"full_name": "a/b"}})
    assert (event.branch, event.tag, event.deleted) == ("feature/x", None, False)
    assert event_kind({}) == "push"
    assert event_kind({"x-gitea-event": "push"}) == "push"
    assert event_kind({"x-gitlab-event": "Tag Push Hook"}) == "Tag Push Hook"


BODY = b'{"ref": "refs/heads/main"}'


@pytest.mark.parametrize(
    ("headers", "ok"),
    [
        pytest.param({"x-hub-signature-256": sign("s", BODY)}, True, id="hub"),
        pytest.param({"x-hub-signature-256": sign("s", BODY).upper()}, True, id="hub-upper-hex"),
        pytest.param({"x-hub-signature-256": sign("t", BODY)}, False, id="hub-wrong"),
        pytest.param({"x-gitea-signature": sign("s", BODY)[7:]}, True, id="gitea"),
        pytest.param({"x-gogs-signature": "00"}, False, id="gogs-wrong"),
        pytest.param({"x-gitlab-token": "s"}, True, id="gitlab"),
        pytest.param({"x-gitlab-token": "S"}, False, id="gitlab-wrong"),
        pytest.param({}, False, id="unsigned"),
    ],
)
def test_verify(headers: dict[str, str], ok: bool) -> None:
    assert (verify("s", BODY, headers) is None) is ok


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://github.com/Acme/Widget.git", "git@github.com:acme/widget.git"),
        ("https://user:pw@github.com:443/acme/widget/", "ssh://git@github.com/acme/widget"),
        ("/srv/git/widget.git", "/srv/git/widget"),
    ],
)
def test_url_key_equal_forms(a: str, b: str) -> None:
    assert url_key(a) == url_key(b)


def test_url_key_tells_repositories_apart() -> None:
    assert url_key("https://github.com/acme/widget") != url_key("https://gitlab.com/acme/widget")
    assert url_key("/srv/git/widget") != url_key("/srv/git/gadget")


def _project(pid: int, slug: str, url: str) -> Project:
    vcs, user, repo = slug.split("/")
    return Project(id=pid, vcs_type=VcsType.parse(vcs), username=user, reponame=repo, repo_url=url)


def test_find_projects_by_url_then_by_name() -> None:
    a = _project(1, "gh/acme/widget", "/srv/widget")
    b = _project(2, "bb/acme/widget", "https://bitbucket.org/acme/widget")
    c = _project(3, "gh/acme/gadget", "git@github.com:acme/gadget.git")
    event = parse_push(
        {
            "ref": "refs/heads/m",
            "after": SHA,
            "repository": {"full_name": "acme/gadget", "ssh_url": c.repo_url},
        }
    )
    assert find_projects([a, b, c], event) == [c]
    by_name = parse_push({"ref": "refs/heads/m", "after": SHA, "repository": {"full_name": "ACME/widget"}})
    assert find_projects([a, b, c], by_name) == [a, b]


# ------------------------------------------------------------------ Pushes and the poller on fakes


@pytest.fixture
def world() -> Iterator[tuple[Circlet, FakeSourceHost, Project]]:
    source = FakeSourceHost()
    source.add_commit(URL, files={"Makefile": "test:\n\ttrue\n"}, message="First")
    svc = Circlet(
        store=InMemoryBuildStore(),
        logs=InMemoryLogStore(),
        source=source,
        dispatcher=RecordingDispatcher(),
        settings=InMemoryProjectSettingsStore(),
        base_url="http://ci.example",
        pipelines=InMemoryPipelineStore(),  # trigger_pipeline as the server runs it
    )
    project = svc.add_project(vcs_type="gh", username="acme", reponame="widget", repo_url=URL)
    yield svc, source, project
    svc.journal.close()


def _made(svc: Circlet, project: Project) -> list[tuple[str | None, str | None, str | None]]:
    found = svc.list_builds(BuildQuery(project_ids=(project.id or 0,), limit=100))
    return [(b.branch, b.vcs_tag, b.vcs_revision) for b in reversed(found)]


def test_the_first_poll_learns_then_moves_build(world: tuple[Circlet, FakeSourceHost, Project]) -> None:
    svc, source, project = world
    pushes = Pushes(svc)
    poller = BranchPoller(pushes, interval=0)
    assert poller.poll_all() == []  # learns main only
    # (a tag push builds only with a circle.yml deployment section for it: config.md 12.1)
    release = "deployment:\n  release:\n    tag: /v.*/\n    commands: [echo release]\n"
    second = source.add_commit(URL, files={"a": "1", "circle.yml": release}, message="Second")
    source.tag(URL, "v1", second)
    made = poller.poll_all()
    assert [b.why for b in made] == [Why.PUSH, Why.PUSH]
    assert _made(svc, project) == [("main", None, second), (None, "v1", second)]
    assert poller.poll_all() == []  # nothing moved


def test_a_restarted_poller_builds_branches_that_moved_while_it_was_away(
    world: tuple[Circlet, FakeSourceHost, Project],
) -> None:
    svc, source, project = world
    pushes = Pushes(svc)
    pushes.push(
        project,
        parse_push(
            {
                "ref": "refs/heads/main",
                "after": source.resolve(project),
                "repository": {"full_name": "acme/widget"},
            }
        ),
    )
    moved = source.add_commit(URL, files={"b": "1"}, message="While away")
    source.add_commit(URL, branch="never-built", files={"c": "1"}, message="Other")
    fresh = BranchPoller(Pushes(svc), interval=0)  # a new server: no memory of refs
    made = fresh.poll_all()
    assert [(b.branch, b.vcs_revision) for b in made] == [("main", moved)]  # not never-built


def test_a_deleted_ref_builds_nothing(world: tuple[Circlet, FakeSourceHost, Project]) -> None:
    svc, _, project = world
    event = parse_push({"ref": "refs/heads/x", "after": ZERO_SHA, "repository": {"full_name": "acme/widget"}})
    assert Pushes(svc).push(project, event) is None
    assert _made(svc, project) == []


def test_secret_for(world: tuple[Circlet, FakeSourceHost, Project]) -> None:
    svc, _, project = world
    assert Pushes(svc).secret_for(project) is None
    assert Pushes(svc, server_secret="server").secret_for(project) == "server"
    svc.set_env_var(project, "CIRCLET_PUSH_SECRET", "own")
    assert Pushes(svc, server_secret="server").secret_for(project) == "own"
    build = svc.trigger(project)
    request = next(r for r in svc.dispatcher.submitted if r.build_id == build.id)  # type: ignore[attr-defined]
    assert "CIRCLET_PUSH_SECRET" not in request.environment
