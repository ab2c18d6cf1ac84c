"""The runner gateway (remote/gateway.py) and its client (remote/client.py) against a real server.

The contract test runs one RunReporter-level scenario twice: against the service directly (in
this process) and through RunnerClient -> HTTP -> gateway -> service of a real `circlet serve`,
then compares the two builds as the API shows them. Other tests: live output within a second,
resends across a server restart, the source tarball, authentication.
"""

from __future__ import annotations

import asyncio
import io
import os
import sqlite3
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from circlet.bootstrap import build_services
from circlet.core.blobs import BlobNotFound
from circlet.core.errors import PermissionDenied, RepositoryError
from circlet.core.model import Action, ActionStatus, Message, Outcome
from circlet.core.ports import RunReporter
from circlet.core.workers import WorkerInfo
from circlet.harness import ServerProcess, config_yaml, make_repo
from circlet.http.app import create_app
from circlet.remote import frames, tokens
from circlet.remote.client import RunnerClient
from circlet.remote.errors import GatewayError
from circlet.remote.source import extract
from circlet.settings import load_settings

WORKER_TOKEN = "wt-" + "0123456789abcdef"
SLUG = "gh/acme/widget"
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# ---------------------------------------------------------------- the scenario


def scenario(reporter: RunReporter, build_id: int) -> None:
    """A failing build with set-up output on both streams, a failing step, test results."""
    reporter.build_queued(build_id, at(0))
    assert reporter.build_started(build_id, at(1), "worker-a")
    spin = Action(
        step=0, index=0, name="Spin up Environment", type="infrastructure", status=ActionStatus.RUNNING,
        start_time=at(1),
    )  # fmt: skip
    reporter.action_started(build_id, spin)
    writer = reporter.log_writer(build_id, 0, 0)
    writer.write(b"Executor: docker\n", at(1.1))
    writer.write(b"a warning\n", at(1.2), "err")
    writer.write(b"x" * 300_000 + b"\n", at(1.3))  # bigger than one pipe read
    writer.close()
    reporter.action_finished(
        build_id, replace(spin, status=ActionStatus.SUCCESS, end_time=at(2), exit_code=0, has_output=True)
    )
    run = Action(
        step=101, index=0, name="make test", type="test", status=ActionStatus.RUNNING, start_time=at(2),
        bash_command="make test", source="config",
    )  # fmt: skip
    reporter.action_started(build_id, run)
    writer = reporter.log_writer(build_id, 101, 0)
    for n in range(50):
        writer.write(f"line {n}\n".encode(), at(2 + n / 100))
    writer.close()
    reporter.action_finished(
        build_id, replace(run, status=ActionStatus.FAILED, end_time=at(3), exit_code=2, has_output=True)
    )
    case = {
        "classname": "widget.Test", "name": "test_one", "file": "t.py", "result": "failure",
        "run_time": 0.5, "message": "assert 1 == 2", "source": "unknown", "source_type": "unknown",
    }  # fmt: skip
    reporter.test_results(build_id, 0, [case], [])
    reporter.build_finished(
        build_id, Outcome.FAILED, at(4), (Message(type="error", message="make test failed"),)
    )


VOLATILE = {"build_url", "output_url", "queued_at", "usage_queued_at", "vcs_url", "compare", "circle_yml"}
# ... and what differs by how the build was triggered (a user's API call behind a busy build there,
# the service alone here), not by how it was reported
VOLATILE |= {"previous", "build_parameters", "user"}


def shape(value: Any) -> Any:
    """The view without what differs between two servers (URLs, trigger times)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return value


def api_view(get: Any, build_num: int) -> dict[str, Any]:
    """The build, its tests and every action's output, as an API client reads them."""
    build = get(f"/api/v1.1/project/{SLUG}/{build_num}")
    outputs = {
        f"{a['step']}-{a['index']}": [(c["type"], c["message"]) for c in get(_path(a["output_url"]))]
        for step in build["steps"]
        for a in step["actions"]
        if a["has_output"]
    }
    tests = get(f"/api/v1.1/project/{SLUG}/{build_num}/tests")
    return {"build": shape(build), "outputs": outputs, "tests": tests}


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


class Local:
    """The app in this process, called through httpx's ASGI transport (one call at a time)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://local") as made:
                return await made.request(method, path, **kwargs)

        return asyncio.run(call())

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("repo") / "widget"
    sha = make_repo(path, {".circleci/config.yml": config_yaml([{"run": "sleep 60"}]), "README": "hi\n"})
    return path, sha


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, repo: tuple[Path, str]) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("server")
    with ServerProcess(data, slots=1, env={"CIRCLET_WORKER_TOKEN": WORKER_TOKEN}) as proc:
        proc.cli("project", "add", SLUG, "--repo", str(repo[0]))
        proc.make_token()
        # Build 1 holds the only slot (sleep 60), so builds triggered after it wait for us.
        status, _ = proc.request("POST", f"/api/v1.1/project/{SLUG}/tree/main")
        assert status == 201
        wait_for(lambda: proc.request("GET", f"/api/v1.1/project/{SLUG}/1")[1]["lifecycle"] == "running")
        yield proc


def wait_for(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def waiting_build(server: ServerProcess) -> tuple[int, int]:
    """Trigger a build that waits behind build 1; (build_num, build id)."""
    status, build = server.request("POST", f"/api/v1.1/project/{SLUG}/tree/main")
    assert status == 201, build
    with sqlite3.connect(f"file:{server.data_dir / 'circlet.db'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT id FROM builds WHERE build_num = ?", (build["build_num"],)).fetchone()
    return build["build_num"], row[0]


@pytest.fixture
def client(server: ServerProcess) -> Iterator[RunnerClient]:
    with RunnerClient(server.base, WORKER_TOKEN, retry_for=30) as made:
        yield made


def direct(tmp_path: Path, repo: Path) -> tuple[Any, Local, str]:
    settings = load_settings(
        {"CIRCLET_DATA_DIR": str(tmp_path / "direct")}, slots=1, worker_token=WORKER_TOKEN
    )
    app = build_services(settings)
    circlet = app.circlet
    circlet.add_project(vcs_type="gh", username="acme", reponame="widget", repo_url=str(repo))
    _, secret = circlet.create_token(user=circlet.ensure_user("admin", admin=True))
    return app, Local(create_app(app.services)), secret


# ---------------------------------------------------------------- the contract


def test_a_build_reported_through_the_gateway_looks_as_one_reported_directly(
    tmp_path: Path, repo: tuple[Path, str], server: ServerProcess, client: RunnerClient
) -> None:
    app, local, secret = direct(tmp_path, repo[0])
    here = app.circlet.trigger(app.circlet.get_project("gh", "acme", "widget"), branch="main")
    scenario(app.circlet, here.id or 0)

    def get_local(path: str) -> Any:
        answer = local.get(path, headers={"Circle-Token": secret, "Accept": "application/json"})
        assert answer.status_code == 200, answer.text
        return answer.json()

    expected = api_view(get_local, here.build_num)

    build_num, build_id = waiting_build(server)
    scenario(client.reporter(), build_id)

    def get_remote(path: str) -> Any:
        status, body = server.request("GET", path)
        assert status == 200, body
        return body

    got = api_view(get_remote, build_num)
    assert got["build"]["outcome"] == "failed" and got["tests"]["tests"][0]["name"] == "test_one"
    assert got["outputs"]["0-0"][2][1] == "x" * 300_000 + "\n"
    expected["build"]["build_num"] = got["build"]["build_num"]
    differing = {
        k: (got["build"].get(k), v) for k, v in expected["build"].items() if got["build"].get(k) != v
    }
    assert not differing
    assert got == expected


def test_output_reaches_api_readers_within_a_second(server: ServerProcess, client: RunnerClient) -> None:
    build_num, build_id = waiting_build(server)
    reporter = client.reporter()
    assert reporter.build_started(build_id, at(1), "worker-b")
    action = Action(
        step=101, index=0, name="slow", type="test", status=ActionStatus.RUNNING, start_time=at(1)
    )
    reporter.action_started(build_id, action)
    writer = reporter.log_writer(build_id, 101, 0)
    path = f"/api/v1.1/project/{SLUG}/{build_num}/output/101/0"
    for n in range(3):
        line = f"progress {n}\n"
        writer.write(line.encode(), datetime.now(UTC))
        printed = time.monotonic()
        wait_for(lambda line=line: line in output_text(server, path), 5)
        assert time.monotonic() - printed < 1.0
    build = server.request("GET", f"/api/v1.1/project/{SLUG}/{build_num}")[1]
    assert [a["status"] for s in build["steps"] for a in s["actions"]] == ["running"]  # the held start went
    writer.close()
    reporter.action_finished(
        build_id, replace(action, status=ActionStatus.SUCCESS, end_time=at(2), exit_code=0)
    )
    reporter.build_finished(build_id, Outcome.SUCCESS, at(3))
    assert server.request("GET", f"/api/v1.1/project/{SLUG}/{build_num}")[1]["outcome"] == "success"


def output_text(server: ServerProcess, path: str) -> str:
    """The action's output so far ("" while the API does not know the action yet)."""
    status, chunks = server.request("GET", path)
    return "".join(c["message"] for c in chunks) if status == 200 else ""


def test_the_source_is_a_working_copy_of_the_builds_revision(
    tmp_path: Path, repo: tuple[Path, str], server: ServerProcess, client: RunnerClient
) -> None:
    _, build_id = waiting_build(server)
    assert client.reporter().build_started(build_id, at(1), "worker-c")
    project = server_project(server)
    dest = tmp_path / "checkout" / "project"
    client.checkout_source(build_id).checkout(project, repo[1], dest, branch="main")
    assert (dest / "README").read_text() == "hi\n"
    head = subprocess.run(["git", "-C", str(dest), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert head.stdout.strip() == repo[1]
    branch = subprocess.run(
        ["git", "-C", str(dest), "branch", "--show-current"], capture_output=True, text=True
    )
    assert branch.stdout.strip() == "main"
    with pytest.raises(RepositoryError, match="another project or revision"):
        client.checkout_source(build_id).checkout(project, "b" * 40, tmp_path / "other")
    assert not (tmp_path / "other").exists()
    client.reporter().build_finished(build_id, Outcome.SUCCESS, at(3))


def server_project(server: ServerProcess) -> Any:
    from circlet.core.model import Project, VcsType

    with sqlite3.connect(f"file:{server.data_dir / 'circlet.db'}?mode=ro", uri=True) as db:
        project_id = db.execute("SELECT id FROM projects WHERE reponame = 'widget'").fetchone()[0]
    return Project(id=project_id, vcs_type=VcsType.GITHUB, username="acme", reponame="widget", repo_url="/x")


def test_a_build_token_writes_its_own_build_only(server: ServerProcess, client: RunnerClient) -> None:
    _, first = waiting_build(server)
    _, second = waiting_build(server)
    reporter = client.reporter()
    assert reporter.build_started(first, at(1), "worker-d")
    token = client.build_headers(first)
    action = Action(step=101, index=0, name="x", type="test", status=ActionStatus.RUNNING, start_time=at(1))
    from circlet.executors.protocol import encode_action

    body = {"action": encode_action(action)}
    with pytest.raises(GatewayError) as refused:
        client.call("POST", f"/builds/{second}/actions/started", json=body, headers=token, retry_for=0)
    assert refused.value.status == 403 and f"build {second}" in refused.value.message
    with pytest.raises(GatewayError) as unsigned:  # no build token at all
        client.call("POST", f"/builds/{first}/actions/started", json=body, retry_for=0)
    assert unsigned.value.status == 403
    answer = httpx.post(
        f"{server.base}/internal/runner/v1/builds/{first}/queued",
        json={"at": T0.isoformat()},
        headers={"Authorization": "Bearer wrong"},
    )
    assert answer.status_code == 401 and "worker token" in answer.json()["message"]
    reporter.build_finished(first, Outcome.SUCCESS, at(3))


def test_blobs_through_the_gateway_within_the_builds_reach(
    server: ServerProcess, client: RunnerClient
) -> None:
    _, build_id = waiting_build(server)
    assert client.reporter().build_started(build_id, at(1), "worker-e")
    blobs = client.blob_store(build_id)
    key = f"artifacts/{build_id}/0/report.html"
    payload = b"<html>" + b"z" * 3_000_000 + b"</html>"
    info = blobs.put(key, io.BytesIO(payload))
    assert info.key == key and info.size == len(payload)
    assert blobs.put_if_absent(key, io.BytesIO(b"other")) is None  # committed things stay
    with blobs.open(key) as stream:
        assert stream.read() == payload
    stat = blobs.stat(key)
    assert stat is not None and stat.size == len(payload)
    assert blobs.stat(f"artifacts/{build_id}/0/none") is None
    assert [b.key for b in blobs.list(f"artifacts/{build_id}/")] == [key]
    with pytest.raises(BlobNotFound):
        blobs.open(f"artifacts/{build_id}/0/none")
    with pytest.raises(PermissionDenied):  # another build's artifacts
        blobs.put(f"artifacts/{build_id + 1}/0/x", io.BytesIO(b"x"))
    with pytest.raises(PermissionDenied):  # another project's caches
        blobs.list("caches/999/")
    assert blobs.delete_prefix(f"artifacts/{build_id}/") == 1
    assert blobs.list(f"artifacts/{build_id}/") == []
    token = client.build_headers(build_id)[tokens.BUILD_TOKEN_HEADER]
    client.reporter().build_finished(build_id, Outcome.SUCCESS, at(3))
    client.set_build_token(build_id, token)  # a worker that kept it: the server was told the end
    with pytest.raises(PermissionDenied, match="has finished"):  # a late worker writes nothing
        blobs.put(f"artifacts/{build_id}/0/late.txt", io.BytesIO(b"late"))
    assert blobs.list(f"artifacts/{build_id}/") == []  # reading stays allowed


def test_a_container_starts_and_finishes_by_its_node(server: ServerProcess, client: RunnerClient) -> None:
    build_num, build_id = waiting_build(server)
    with pytest.raises(GatewayError) as refused:
        body = {"at": T0.isoformat(), "worker": "worker-g", "node": -1}
        client.call("POST", f"/builds/{build_id}/started", json=body, retry_for=0)
    assert refused.value.status == 400 and "container index" in refused.value.message
    reporter = client.reporter()
    assert reporter.build_started(build_id, at(1), "worker-g", node=0)  # the only container
    reporter.build_finished(build_id, Outcome.SUCCESS, at(3), node=0)
    finished = server.wait_finished(SLUG, build_num)
    assert (finished["outcome"], finished["lifecycle"]) == ("success", "finished")


def test_a_build_saves_caches_but_cannot_replace_or_delete_them(
    server: ServerProcess, client: RunnerClient
) -> None:
    from circlet.core import blobkeys

    _, build_id = waiting_build(server)
    assert client.reporter().build_started(build_id, at(1), "worker-f")
    blobs = client.blob_store(build_id)
    with sqlite3.connect(f"file:{server.data_dir / 'circlet.db'}?mode=ro", uri=True) as db:
        project_id = db.execute("SELECT project_id FROM builds WHERE id = ?", (build_id,)).fetchone()[0]
    part = blobkeys.cache_part_key(project_id, "v1-deps", f"{build_id}-0", 0)
    meta = blobkeys.cache_meta_key(project_id, "v1-deps")
    blobs.put(part, io.BytesIO(b"tar"))  # its own archives: written as save_cache does
    assert blobs.put_if_absent(meta, io.BytesIO(b"{}")) is not None  # the commit
    with pytest.raises(PermissionDenied, match="may not replace or delete"):
        blobs.put(meta, io.BytesIO(b"poisoned"))  # a saved cache is immutable
    with pytest.raises(PermissionDenied):
        blobs.delete_prefix(blobkeys.caches_prefix(project_id))  # every cache of the project
    other = blobkeys.cache_parts_prefix(project_id, "v1-deps", f"{build_id + 1}-0")
    with pytest.raises(PermissionDenied):
        blobs.put(other + "0.tar", io.BytesIO(b"x"))  # another build's archives
    assert blobs.delete_prefix(blobkeys.cache_parts_prefix(project_id, "v1-deps", f"{build_id}-0")) == 1
    with blobs.open(meta) as stream:
        assert stream.read() == b"{}"
    client.reporter().build_finished(build_id, Outcome.SUCCESS, at(3))


def test_a_heartbeat_is_answered_with_the_builds_to_stop(server: ServerProcess, client: RunnerClient) -> None:
    _, running = waiting_build(server)
    _, finished = waiting_build(server)
    reporter = client.reporter()
    for build_id in (running, finished):
        assert reporter.build_started(build_id, at(1), "h:1")
    reporter.build_finished(finished, Outcome.SUCCESS, at(2))  # e.g. canceled on the server
    info = WorkerInfo(name="h:1", host="h", pid=1, resource_classes=("medium",), slots=2, busy=2,
                      running=(running, finished))  # fmt: skip
    assert client.heartbeat(info).cancel == (finished,)
    reporter.build_finished(running, Outcome.SUCCESS, at(3))


def test_reports_wait_for_a_server_that_restarts(server: ServerProcess, client: RunnerClient) -> None:
    """A call made while the server is down goes through once it is back (same port)."""
    server.stop()
    done = threading.Event()
    errors: list[BaseException] = []

    def report() -> None:
        try:
            client.reporter().build_queued(999_999, at(0))  # an unknown build: a harmless no-op
        except BaseException as exc:
            errors.append(exc)
        done.set()

    thread = threading.Thread(target=report)
    thread.start()
    time.sleep(1.0)
    assert not done.is_set()  # still resending
    server.start()
    assert done.wait(30) and not errors, errors
    thread.join()


# ---------------------------------------------------------------- in process: refusals, resends


def test_without_a_worker_token_the_gateway_refuses_everything(
    tmp_path: Path, repo: tuple[Path, str]
) -> None:
    settings = load_settings({"CIRCLET_DATA_DIR": str(tmp_path / "off")})
    local = Local(create_app(build_services(settings).services))
    answer = local.post(
        "/internal/runner/v1/heartbeat", json={}, headers={"Authorization": "Bearer anything"}
    )
    assert answer.status_code == 403
    assert "CIRCLET_WORKER_TOKEN" in answer.json()["message"]


def test_a_resent_log_batch_is_not_written_twice_and_a_gap_is_refused(
    tmp_path: Path, repo: tuple[Path, str]
) -> None:
    app, local, _ = direct(tmp_path, repo[0])
    build = app.circlet.trigger(app.circlet.get_project("gh", "acme", "widget"), branch="main")
    auth = {"Authorization": f"Bearer {WORKER_TOKEN}"}
    base = f"/internal/runner/v1/builds/{build.id}"
    started = local.post(f"{base}/started", json={"at": T0.isoformat(), "worker": "w"}, headers=auth).json()
    headers = {**auth, "X-Circlet-Build-Token": started["build_token"]}
    body = frames.pack(b"hello ", T0) + frames.pack(b"world\n", T0, "err")
    for _ in range(2):  # the second is a resend of the first: nothing new
        answer = local.post(f"{base}/logs/101/0", params={"offset": 0}, content=body, headers=headers)
        assert answer.json() == {"size": 12}
    overlap = frames.pack(b"world\nmore\n", T0)  # starts at 6: half known, half new
    assert local.post(
        f"{base}/logs/101/0", params={"offset": 6}, content=overlap, headers=headers
    ).json() == {"size": 17}
    gap = local.post(f"{base}/logs/101/0", params={"offset": 40}, content=body, headers=headers)
    assert gap.status_code == 409 and gap.json()["size"] == 17
    assert app.circlet.logs.read(build.id or 0, 101, 0) == b"hello world\nmore\n"
    broken = local.post(f"{base}/logs/101/0", params={"offset": 17}, content=body[:-3], headers=headers)
    assert broken.status_code == 400 and "cut short" in broken.json()["message"]


# ---------------------------------------------------------------- safe extraction of the source


def tar_of(*members: tuple[str, str, str]) -> io.BytesIO:
    """A tar with (kind, name, data-or-target) members: kind file, symlink or hardlink."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for kind, name, value in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(value)
                archive.addfile(info, io.BytesIO(value.encode()))
                continue
            info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            info.linkname = value
            archive.addfile(info)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    "members",
    [
        pytest.param([("file", "../escaped", "x")], id="dot-dot"),
        pytest.param(
            [("symlink", "link", "../outside"), ("file", "link/escaped", "x")], id="through-symlink"
        ),
        pytest.param([("hardlink", "passwd", "/etc/passwd")], id="hardlink-outside"),
    ],
)
def test_a_source_archive_cannot_write_outside_its_folder(tmp_path: Path, members: Any) -> None:
    dest = tmp_path / "box" / "dest"
    dest.mkdir(parents=True)
    (tmp_path / "box" / "outside").mkdir()
    with pytest.raises(RepositoryError, match="refused"):
        extract(tar_of(*members), dest)
    assert not (tmp_path / "box" / "escaped").exists()
    assert not (tmp_path / "box" / "outside" / "escaped").exists()


def test_a_source_archive_may_hold_symlinks_pointing_anywhere(tmp_path: Path) -> None:
    members = [("file", "src/a.txt", "a"), ("symlink", "tool", "/usr/bin/env"), ("symlink", "up", "../x")]
    members.append(("file", "/tmp/absolute-name", "b"))  # made relative: it lands inside
    assert extract(tar_of(*members), tmp_path) == 4
    assert (tmp_path / "tmp" / "absolute-name").read_text() == "b"
    assert os.readlink(tmp_path / "tool") == "/usr/bin/env"
    assert (tmp_path / "src" / "a.txt").read_text() == "a"
