"""The CheckoutSource of a remote worker: the revision comes from the server as a tar stream.

The server checks the revision out of its own mirror (gateway.py), so a worker needs no
repository credentials and no mirror. The archive is a working copy with its `.git`, as the
local executor's checkout makes it. It is extracted safely: no member may land outside the
destination (no absolute names, no `..`, nothing written through a symlink, no hard link to a
file outside), no device files, no setuid bits (tarfile's `data` filter); symlinks themselves
may point anywhere, as git may check such links out.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING

from circlet.core.errors import RepositoryError
from circlet.core.model import Project
from circlet.remote.blob_client import ChunkReader
from circlet.remote.errors import GatewayError

if TYPE_CHECKING:
    from circlet.remote.client import RunnerClient

log = logging.getLogger("circlet.remote.source")


def _member_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    if member.issym():
        return tarfile.tar_filter(member, dest)  # its own place is checked; its target is git's
    return tarfile.data_filter(member, dest)


def extract(stream: IO[bytes], dest: Path) -> int:
    """Extract a tar stream into the existing directory `dest`; returns the member count.
    RepositoryError naming the member when the archive tries to escape or is broken."""
    count = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as archive:
            for member in archive:
                archive.extract(member, dest, filter=_member_filter)
                count += 1
    except tarfile.FilterError as exc:
        raise RepositoryError(f"the source archive was refused: {exc}") from None
    except (tarfile.TarError, EOFError) as exc:
        raise RepositoryError(f"the source archive is broken: {exc}") from None
    return count


class RemoteCheckout:
    """CheckoutSource for one build on a remote worker (after the build's build_started)."""

    def __init__(self, client: RunnerClient, build_id: int) -> None:
        self._client = client
        self._build_id = build_id

    def checkout(
        self, project: Project, sha: str, dest: Path, *, branch: str | None = None, tag: str | None = None
    ) -> None:
        """Put a working copy of `sha` at `dest`, which must be absent or empty (a fetch into an
        existing repository is not offered remotely). RepositoryError on failure."""
        dest = Path(dest)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise RepositoryError(f"Directory ({dest}) you are trying to checkout to is not empty")
        params = {"project_id": project.id, "sha": sha}
        if branch is not None:
            params["branch"] = branch
        if tag is not None:
            params["tag"] = tag
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Extract next to dest and move it in place: a failed download leaves no half tree.
        scratch = Path(tempfile.mkdtemp(prefix=".circlet-checkout-", dir=dest.parent))
        try:
            headers = self._client.build_headers(self._build_id)
            path = f"/builds/{self._build_id}/source"
            try:
                with self._client.stream("GET", path, params=params, headers=headers) as answer:
                    count = extract(ChunkReader(answer.iter_bytes(1 << 16)), scratch)  # type: ignore[arg-type]
            except GatewayError as exc:
                raise RepositoryError(f"could not fetch {sha[:12]} from the server: {exc.message}") from None
            if dest.exists():
                dest.rmdir()
            scratch.rename(dest)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        log.info("event=remote_checkout build_id=%s sha=%s members=%s", self._build_id, sha, count)
