"""A cancel stops the file steps' own tar/zstd at once (runner/archive.py Stopper): real JobRunners,
real tar and zstd, real files, a FileBlobStore that moves blobs slowly (as a remote store over a
slow link would), so that the archive is still being made when the cancel comes."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from circlet.core.blobkeys import caches_prefix
from circlet.core.blobs import BlobInfo
from circlet.core.model import ActionStatus, Outcome, Project, VcsType
from circlet.core.plan import JobPlan, PlannedStep, StepKind
from circlet.core.ports import RunRequest
from circlet.runner import archive, sandbox
from circlet.runner.run import JobRunner
from circlet.runner.sandbox import Sandbox
from circlet.runner.steps import NodeProcesses
from circlet.store.blobs_fs import FileBlobStore
from circlet.testing import RecordingReporter

SLOW_CHUNK = 256 << 10  # bytes moved per SLOW_DELAY: ~5 MB/s
SLOW_DELAY = 0.05
MAKE_DATA = "mkdir -p deps && for i in 1 2 3 4 5 6 7 8; do head -c 3M /dev/urandom > deps/$i; done"
WORKFLOW = "5f0c1a8e-0000-4000-8000-000000000002"


class _Slow(io.RawIOBase):
    """A stream read at ~5 MB/s; no descriptor, so it is copied in chunks."""

    def __init__(self, inner: IO[bytes], moving: threading.Event) -> None:
        super().__init__()
        self._inner = inner
        self._moving = moving

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        time.sleep(SLOW_DELAY)
        data = self._inner.read(min(len(buffer), SLOW_CHUNK))
        buffer[: len(data)] = data
        self._moving.set()
        return len(data)

    def close(self) -> None:
        self._inner.close()
        super().close()


class SlowStore(FileBlobStore):
    """A FileBlobStore whose archives (`.tar` keys) go in and out slowly while `slow` is on."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.slow = False
        self.moving = threading.Event()  # a slow archive has started moving

    def _slowed(self, key: str, data: IO[bytes]) -> IO[bytes]:
        if not (self.slow and key.endswith(".tar")):
            return data
        return io.BufferedReader(_Slow(data, self.moving), buffer_size=SLOW_CHUNK)

    def put(self, key: str, data: IO[bytes]) -> BlobInfo:
        return super().put(key, self._slowed(key, data))

    def put_if_absent(self, key: str, data: IO[bytes]) -> BlobInfo | None:
        return super().put_if_absent(key, self._slowed(key, data))

    def open(self, key: str) -> IO[bytes]:
        return self._slowed(key, super().open(key))


class _NoSource:
    def checkout(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("no checkout in these builds")


def run(command: str) -> PlannedStep:
    return PlannedStep(kind=StepKind.RUN, name=command, command=command)


def save(key: str, *paths: str) -> PlannedStep:
    return PlannedStep(kind=StepKind.SAVE_CACHE, name="Saving Cache", args={"key": key, "paths": list(paths)})


def restore(*keys: str) -> PlannedStep:
    return PlannedStep(kind=StepKind.RESTORE_CACHE, name="Restoring Cache", args={"keys": list(keys)})


def persist(root: str, *paths: str) -> PlannedStep:
    args = {"root": root, "paths": list(paths)}
    return PlannedStep(kind=StepKind.PERSIST_TO_WORKSPACE, name="Persisting to Workspace", args=args)


def attach(at: str) -> PlannedStep:
    return PlannedStep(kind=StepKind.ATTACH_WORKSPACE, name="Attaching Workspace", args={"at": at})


@pytest.fixture
def blobs(tmp_path: Path) -> SlowStore:
    return SlowStore(tmp_path / "blobs")


@pytest.fixture(params=["plain", "bwrap"])
def box(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """tar as is, or in the step sandbox (runner/confine.py tar_wrapper: bwrap's own children)."""
    if request.param == "bwrap":
        if shutil.which("bwrap") is None:
            pytest.skip("no bwrap on this machine")
        sandbox.configure(Sandbox(workspace_root=tmp_path / "ws"))
    try:
        yield str(request.param)
    finally:
        sandbox.configure(None)


class Build:
    """One build on a JobRunner of its own, run on a thread so that the test can cancel it."""

    def __init__(self, blobs: SlowStore, tmp_path: Path, build_id: int, steps: list[PlannedStep], **kw: Any):
        self.reporter = RecordingReporter()
        self.runner = JobRunner(
            workspace_root=tmp_path / "ws", source=_NoSource(), reporter=self.reporter, blobs=blobs
        )
        self.request = RunRequest(
            build_id=build_id,
            project=Project(id=1, vcs_type=VcsType.GITHUB, username="acme", reponame="widget", repo_url="/x"),
            build_num=build_id,
            revision="a" * 40,
            branch="main",
            tag=None,
            plan=JobPlan(name="build", steps=tuple(steps), working_directory="~/project"),
            environment={},
            workflow_id=kw.get("workflow_id"),
            upstream_build_ids=kw.get("upstream_build_ids", ()),
        )
        self.outcome: list[Outcome] = []
        self.thread = threading.Thread(target=lambda: self.outcome.append(self.runner.run(self.request)))

    def run(self) -> Outcome:
        self.thread.start()
        self.thread.join(30)
        return self.outcome[0]

    def cancel_while_moving(self, blobs: SlowStore, folder: Path) -> float:
        """Start, cancel once an archive moves and its tar runs; seconds from cancel to the end."""
        self.thread.start()
        wait_for(blobs.moving.is_set)
        assert archivers(folder), "no tar running for this build"
        asked = time.monotonic()
        self.runner.cancel()
        self.thread.join(10)
        took = time.monotonic() - asked
        assert self.outcome == [Outcome.CANCELED]
        return took


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def archivers(folder: Path) -> list[str]:
    """The processes (zombies too) that are this test's tar or zstd: children of this process
    named so, or any whose command line or working directory is in `folder`."""
    found: list[str] = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                seen = f.read().decode("utf-8", "replace").split("\0")
        except OSError:
            continue  # gone meanwhile
        with contextlib.suppress(OSError):  # another user's, or gone
            seen.append(os.readlink(f"/proc/{entry}/cwd"))
        name = stat[stat.index(b"(") + 1 : stat.rindex(b")")].decode()
        ppid = int(stat[stat.rindex(b")") + 1 :].split()[1])
        if (ppid == me and name in ("tar", "zstd")) or any(str(folder) in text for text in seen):
            found.append(f"{entry} {name} {' '.join(seen)}")
    return found


def test_a_cancel_stops_save_cache_mid_archive_and_saves_nothing(
    blobs: SlowStore, tmp_path: Path, box: str
) -> None:
    blobs.slow = True
    build = Build(blobs, tmp_path, 1, [run(MAKE_DATA), save("big", "deps")])
    took = build.cancel_while_moving(blobs, tmp_path)
    assert took < 1.5
    action = build.reporter.finished[(102, 0)]
    assert action.status is ActionStatus.CANCELED
    log = build.reporter.log(102)
    assert "Canceled: no cache saved" in log and "Could not" not in log
    assert archivers(tmp_path) == []
    assert blobs.list(caches_prefix(1)) == []  # no part, no record
    assert os.listdir(blobs.root / "tmp") == []  # no half-written blob either
    blobs.slow = False
    again = Build(blobs, tmp_path, 2, [restore("big")])
    assert again.run() is Outcome.SUCCESS
    assert "No cache is found for key: big" in again.reporter.log(101)


def test_a_cancel_stops_restore_cache_mid_extract(blobs: SlowStore, tmp_path: Path, box: str) -> None:
    first = Build(blobs, tmp_path, 1, [run(MAKE_DATA), save("big", "deps")])
    assert first.run() is Outcome.SUCCESS, first.reporter.log(102)
    assert "Stored Cache to big" in first.reporter.log(102)
    blobs.slow = True
    build = Build(blobs, tmp_path, 2, [restore("big"), run("echo never")])
    took = build.cancel_while_moving(blobs, tmp_path)
    assert took < 1.5
    assert build.reporter.finished[(101, 0)].status is ActionStatus.CANCELED
    log = build.reporter.log(101)
    assert "Canceled: the cache is partly restored" in log and "Could not" not in log
    assert build.reporter.steps() == [0, 101]
    assert archivers(tmp_path) == []


def test_a_cancel_stops_persist_to_workspace_and_records_no_layer(blobs: SlowStore, tmp_path: Path) -> None:
    blobs.slow = True
    build = Build(blobs, tmp_path, 1, [run(MAKE_DATA), persist(".", "deps")], workflow_id=WORKFLOW)
    took = build.cancel_while_moving(blobs, tmp_path)
    assert took < 1.5
    assert build.reporter.finished[(102, 0)].status is ActionStatus.CANCELED
    log = build.reporter.log(102)
    assert "Canceled: nothing persisted to the workspace" in log and "Could not" not in log
    assert archivers(tmp_path) == []
    assert blobs.list("") == []  # neither the truncated archive nor a record
    blobs.slow = False
    downstream = Build(blobs, tmp_path, 2, [attach("w")], workflow_id=WORKFLOW, upstream_build_ids=(1,))
    assert downstream.run() is Outcome.SUCCESS
    assert "No workspace layers to attach" in downstream.reporter.log(101)


def test_a_cancel_stops_attach_workspace_mid_extract(blobs: SlowStore, tmp_path: Path) -> None:
    first = Build(blobs, tmp_path, 1, [run(MAKE_DATA), persist(".", "deps")], workflow_id=WORKFLOW)
    assert first.run() is Outcome.SUCCESS, first.reporter.log(102)
    blobs.slow = True
    build = Build(blobs, tmp_path, 2, [attach("w")], workflow_id=WORKFLOW, upstream_build_ids=(1,))
    took = build.cancel_while_moving(blobs, tmp_path)
    assert took < 1.5
    assert build.reporter.finished[(101, 0)].status is ActionStatus.CANCELED
    assert "Canceled: the workspace is partly attached" in build.reporter.log(101)
    assert archivers(tmp_path) == []


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_a_pack_stopped_from_another_thread_stores_no_blob(tmp_path: Path, compression: str) -> None:
    if compression == "zstd" and archive.ZSTD is None:
        pytest.skip("no zstd on this machine")
    blobs = SlowStore(tmp_path / "blobs")
    blobs.slow = True
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_bytes(os.urandom(8 << 20))
    stopper = archive.Stopper()
    threading.Timer(0.3, stopper.stop).start()
    started = time.monotonic()
    with pytest.raises(archive.Stopped):
        archive.pack(blobs, "a/b.tar", source, ["f"], compression=compression, stopper=stopper)
    assert time.monotonic() - started < 1.5
    assert blobs.list("") == [] and os.listdir(blobs.root / "tmp") == []
    assert archivers(tmp_path) == []
    # A stopper stopped before: its processes die at once, unpack too.
    blobs.slow = False
    archive.pack(blobs, "a/b.tar", source, ["f"], compression=compression)
    with blobs.open("a/b.tar") as stream, pytest.raises(archive.Stopped):
        archive.unpack(stream, tmp_path / "dest", compression, stopper=stopper)
    assert archivers(tmp_path) == []


def test_on_cancel_calls_back_once_while_the_block_runs() -> None:
    calls: list[str] = []
    processes = NodeProcesses()
    with processes.on_cancel(lambda: calls.append("a")):
        pass
    with processes.on_cancel(lambda: calls.append("b")):
        processes.cancel()
        processes.stop_background()
        assert calls == ["b"]
    with processes.on_cancel(lambda: calls.append("c")):  # already canceled: at once
        assert calls == ["b", "c"]
    stopping = NodeProcesses()
    with stopping.on_cancel(lambda: calls.append("d")):
        stopping.stop_background()
    assert calls == ["b", "c", "d"]
