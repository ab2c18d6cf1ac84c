"""InMemoryBlobStore: the fake of core/blobs.py BlobStore (contract: tests/contract/test_blob_store.py)."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from circlet.core.blobs import BlobInfo, BlobNotFound, BlobStore, InvalidBlobKey, check_key, check_prefix
from circlet.core.model import Outcome, Project, VcsType
from circlet.core.plan import JobPlan, PlannedStep
from circlet.core.ports import RunRequest
from circlet.testing import RecordingReporter


class InMemoryBlobStore:
    """Blobs in a dict behind a lock, with the semantics of store/blobs_fs.py.

    `clock` gives `created_at`; the default is strictly increasing (a microsecond past the last
    when the wall clock has not moved), so "newest" is well defined in tests.
    """

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._blobs: dict[str, tuple[bytes, datetime]] = {}
        self._last = datetime.min.replace(tzinfo=UTC)

    def _now(self) -> datetime:
        if self._clock is not None:
            return self._clock()
        now = datetime.now(UTC)
        if now <= self._last:
            now = self._last + timedelta(microseconds=1)
        self._last = now
        return now

    def _check_free(self, key: str) -> None:
        """Refuse what the file-system adapter cannot hold: a key beside its own prefix."""
        if any(k.startswith(key + "/") for k in self._blobs):
            raise InvalidBlobKey(f"{key} is a prefix of other blobs")
        parts = key.split("/")
        for n in range(1, len(parts)):
            if "/".join(parts[:n]) in self._blobs:
                raise InvalidBlobKey(f"a leading part of {key} is a blob")

    def put(self, key: str, data: IO[bytes]) -> BlobInfo:
        check_key(key)
        content = data.read()
        with self._lock:
            self._check_free(key)
            self._blobs[key] = (content, self._now())
            return self._info(key)

    def put_if_absent(self, key: str, data: IO[bytes]) -> BlobInfo | None:
        check_key(key)
        with self._lock:
            if key in self._blobs:
                return None
        content = data.read()
        with self._lock:
            if key in self._blobs:
                return None
            self._check_free(key)
            self._blobs[key] = (content, self._now())
            return self._info(key)

    def open(self, key: str) -> IO[bytes]:
        check_key(key)
        with self._lock:
            found = self._blobs.get(key)
        if found is None:
            raise BlobNotFound(f"no blob {key!r}")
        return io.BytesIO(found[0])

    def stat(self, key: str) -> BlobInfo | None:
        check_key(key)
        with self._lock:
            return self._info(key) if key in self._blobs else None

    def list(self, prefix: str) -> list[BlobInfo]:
        check_prefix(prefix)
        with self._lock:
            return [self._info(k) for k in sorted(self._blobs) if k.startswith(prefix)]

    def delete_prefix(self, prefix: str) -> int:
        check_prefix(prefix, whole_segments=True)
        with self._lock:
            doomed = [k for k in self._blobs if k.startswith(prefix)]
            for key in doomed:
                del self._blobs[key]
            return len(doomed)

    def _info(self, key: str) -> BlobInfo:
        content, at = self._blobs[key]
        return BlobInfo(key=key, size=len(content), created_at=at)


def run_steps(
    steps: Sequence[PlannedStep],
    *,
    blobs: BlobStore | None,
    workspaces: Path,
    build_id: int = 42,
    build_num: int = 7,
    project: Project | None = None,
    working_directory: str = "~/project",
    workflow_id: str | None = None,
    upstream_build_ids: tuple[int, ...] = (),
    environment: dict[str, str] | None = None,
    branch: str | None = "main",
    keep_workspace: bool = False,
    parallelism: int = 1,
) -> tuple[Outcome, RecordingReporter]:
    """Run steps with a real JobRunner (no checkout source) and return what it reported."""
    from circlet.runner.run import JobRunner  # the runner is not needed by the fake itself

    plan = JobPlan(
        name="build", steps=tuple(steps), working_directory=working_directory, parallelism=parallelism
    )
    request = RunRequest(
        build_id=build_id,
        project=project
        or Project(id=1, vcs_type=VcsType.GITHUB, username="acme", reponame="widget", repo_url="/x"),
        build_num=build_num,
        revision="a" * 40,
        branch=branch,
        tag=None,
        plan=plan,
        environment=environment or {},
        workflow_id=workflow_id,
        upstream_build_ids=upstream_build_ids,
        parallelism=parallelism,
    )
    reporter = RecordingReporter()
    runner = JobRunner(
        workspace_root=workspaces,
        source=_NoSource(),
        reporter=reporter,
        blobs=blobs,
        keep_workspace=keep_workspace,
    )
    return runner.run(request), reporter


class _NoSource:
    def checkout(
        self, project: Project, sha: str, dest: Path, *, branch: str | None = None, tag: str | None = None
    ) -> None:
        raise AssertionError("these steps have no checkout")
