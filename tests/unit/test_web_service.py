"""The service methods the web page reads through (token by hash, a project's tokens, a build
by id), on the in-memory fakes of our ports."""

from __future__ import annotations

from circlet.core.model import Build, Scope
from circlet.service import Circlet, hash_token
from circlet.testing import (
    FakeSourceHost,
    InMemoryBuildStore,
    InMemoryLogStore,
    InMemoryProjectSettingsStore,
    RecordingDispatcher,
)


def _service() -> Circlet:
    source = FakeSourceHost()
    for url in ("/r/w", "/r/g"):
        source.add_commit(url, files={"README.md": "hi\n"}, message="First")
    return Circlet(
        store=InMemoryBuildStore(),
        logs=InMemoryLogStore(),
        source=source,
        dispatcher=RecordingDispatcher(),
        settings=InMemoryProjectSettingsStore(),
        base_url="https://ci.example.com/",
    )


def test_token_by_hash_finds_live_tokens_only() -> None:
    svc = _service()
    user = svc.ensure_user("ada")
    token, secret = svc.create_token(user=user)
    found = svc.token_by_hash(hash_token(secret))
    assert found is not None and found.id == token.id and found.user_id == user.id
    assert svc.token_by_hash(hash_token("not-a-secret")) is None
    assert token.id is not None and svc.revoke_token(token.id)
    assert svc.token_by_hash(hash_token(secret)) is None


def test_project_tokens_are_the_projects_live_ones() -> None:
    svc = _service()
    widget = svc.add_project(vcs_type="gh", username="acme", reponame="widget", repo_url="/r/w")
    gadget = svc.add_project(vcs_type="gh", username="acme", reponame="gadget", repo_url="/r/g")
    kept, _ = svc.create_token(project=widget, scope=Scope.VIEW_BUILDS, label="kept")
    revoked, _ = svc.create_token(project=widget)
    svc.create_token(project=gadget)
    svc.create_token(user=svc.ensure_user("ada"))
    assert revoked.id is not None and svc.revoke_token(revoked.id)
    assert [t.label for t in svc.project_tokens(widget)] == ["kept"]
    assert [t.id for t in svc.project_tokens(widget)] == [kept.id]


def test_build_by_id_reads_the_store_now() -> None:
    svc = _service()
    project = svc.add_project(vcs_type="gh", username="acme", reponame="widget", repo_url="/r/w")
    build = svc.store.create_build(Build(project_id=project.id or 0, branch="main"))
    assert build.id is not None
    found = svc.build_by_id(build.id)
    assert found is not None and found.build_num == build.build_num and not found.finished
    assert svc.build_by_id(build.id + 1000) is None
