"""The blob store in a directory (the default adapter of core/blobs.py BlobStore).

    <root>/objects/<key>     one file per blob; the key's segments are directories
    <root>/tmp/              blobs being written, and prefixes being deleted

Writes go to a temporary file in <root>/tmp and are moved into place with rename (put) or
link (put_if_absent: link fails if the name exists, so exactly one concurrent writer wins),
so a reader never sees a partial blob, whatever process writes it and even if it dies.
Deletion renames the prefix's directory into <root>/tmp first, so it disappears at once.
Several processes (the server and its runner processes) may share one root. No fsync: a
machine crash may lose the newest blobs (they are artifacts and caches, made again by a
rebuild), never leave a torn one in place of an older one on ext4/xfs.

A blob's `created_at` is its file's modification time: when its writing ended.

What a process killed half-way leaves in <root>/tmp (a partial write, a prefix it was deleting)
is removed when a store opens the root, once it is older than STALE_SECONDS (a younger one may
be another process's write in progress).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import logging
import os
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from circlet.core.blobs import BlobInfo, BlobNotFound, InvalidBlobKey, check_key, check_prefix

log = logging.getLogger("circlet.store.blobs_fs")

CHUNK = 1 << 20
STALE_SECONDS = 24 * 3600


class FileBlobStore:
    """A BlobStore on a local (or shared network) file system. Thread- and process-safe."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._objects = self.root / "objects"
        self._tmp = self.root / "tmp"
        self._objects.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        self.sweep()

    def __repr__(self) -> str:
        return f"FileBlobStore({str(self.root)!r})"

    # ---------------------------------------------------------------- writes

    def put(self, key: str, data: IO[bytes]) -> BlobInfo:
        path = self._path(key)
        tmp = self._write_temp(data)
        try:
            self._place(tmp, path, replace=True)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return self._info(key, path)

    def put_if_absent(self, key: str, data: IO[bytes]) -> BlobInfo | None:
        path = self._path(key)
        if path.exists():
            return None
        tmp = self._write_temp(data)
        try:
            placed = self._place(tmp, path, replace=False)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return self._info(key, path) if placed else None

    def delete_prefix(self, prefix: str) -> int:
        check_prefix(prefix, whole_segments=True)
        target = self._objects / prefix.rstrip("/")
        trash = self._tmp / f"trash-{uuid.uuid4().hex}"
        try:
            os.rename(target, trash)
        except FileNotFoundError:
            return 0
        except NotADirectoryError:
            return 0
        count = sum(len(files) for _, _, files in os.walk(trash))
        shutil.rmtree(trash, ignore_errors=True)
        self._prune(target.parent)
        return count

    def sweep(self, older_than: float = STALE_SECONDS) -> int:
        """Remove what dead writers and deleters left in tmp/ (entries older than `older_than`
        seconds); returns how many entries went."""
        limit = time.time() - older_than
        removed = 0
        for entry in os.scandir(self._tmp):
            try:
                if entry.stat(follow_symlinks=False).st_mtime >= limit:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                continue
        if removed:
            log.info("event=blob_tmp_swept root=%s entries=%s", self.root, removed)
        return removed

    # ---------------------------------------------------------------- reads

    def open(self, key: str) -> IO[bytes]:
        path = self._path(key)
        try:
            return open(path, "rb")  # the caller closes it
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(f"no blob {key!r}") from None

    def stat(self, key: str) -> BlobInfo | None:
        path = self._path(key)
        try:
            return self._info(key, path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def list(self, prefix: str) -> list[BlobInfo]:
        check_prefix(prefix)
        folder, _, partial = prefix.rpartition("/")
        start = self._objects / folder if folder else self._objects
        found: list[BlobInfo] = []
        try:
            entries = list(os.scandir(start))
        except (FileNotFoundError, NotADirectoryError):
            return []
        base = f"{folder}/" if folder else ""
        for entry in entries:
            if entry.name.startswith(partial):
                self._collect(entry, base + entry.name, found)
        found.sort(key=lambda info: info.key)
        return found

    # ---------------------------------------------------------------- helpers

    def _path(self, key: str) -> Path:
        return self._objects / check_key(key)

    def _write_temp(self, data: IO[bytes]) -> str:
        fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix="put-")
        try:
            with os.fdopen(fd, "wb") as out:
                _copy(data, out)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return tmp

    def _place(self, tmp: str, path: Path, *, replace: bool) -> bool:
        """Move/link the temporary file to `path`; False if it exists (replace=False)."""
        for _ in range(5):  # a concurrent delete_prefix may remove a fresh parent: retry
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                if replace:
                    os.replace(tmp, path)
                else:
                    os.link(tmp, path)
                return True
            except FileExistsError:
                if replace or path.is_dir():
                    raise InvalidBlobKey(
                        f"{path.relative_to(self._objects)} is a prefix of other blobs"
                    ) from None
                return False
            except IsADirectoryError:
                raise InvalidBlobKey(
                    f"{path.relative_to(self._objects)} is a prefix of other blobs"
                ) from None
            except NotADirectoryError:
                raise InvalidBlobKey(
                    f"a leading part of {path.relative_to(self._objects)} is a blob"
                ) from None
            except FileNotFoundError:
                continue
        raise OSError(errno.ENOENT, f"could not place blob {path}")

    def _info(self, key: str, path: Path) -> BlobInfo:
        st = os.stat(path)
        if not os.path.isfile(path):
            raise IsADirectoryError(str(path))
        return BlobInfo(
            key=key, size=st.st_size, created_at=datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC)
        )

    def _collect(self, entry: os.DirEntry[str], key: str, found: builtins.list[BlobInfo]) -> None:
        try:
            if entry.is_dir(follow_symlinks=False):
                for child in os.scandir(entry.path):
                    self._collect(child, f"{key}/{child.name}", found)
            elif entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                found.append(
                    BlobInfo(
                        key=key, size=st.st_size, created_at=datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC)
                    )
                )
        except FileNotFoundError:  # deleted while listed
            pass

    def _prune(self, folder: Path) -> None:
        """Remove empty directories from `folder` up to (not including) objects/."""
        while folder != self._objects and self._objects in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent


def _copy(data: IO[bytes], out: IO[bytes]) -> None:
    """Copy to the end of `data`: in the kernel when `data` is a regular file, else in chunks."""
    try:
        fd = data.fileno()
        regular = os.path.isfile(f"/proc/self/fd/{fd}") and data.tell() == 0
    except (OSError, ValueError, AttributeError):
        regular = False
    if regular:
        out.flush()
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            sent = os.sendfile(out.fileno(), fd, offset, min(size - offset, 1 << 30))
            if sent == 0:
                break
            offset += sent
        data.seek(offset)
        return
    while chunk := data.read(CHUNK):
        out.write(chunk)
