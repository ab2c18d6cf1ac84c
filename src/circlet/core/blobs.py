"""The blob store port: where artifacts, caches and workspace layers are kept.

A blob is an immutable-once-written byte stream under a key. Keys are `/`-separated segments
(`artifacts/12/0/out/report.html`); the store gives them no meaning beyond that, and `list` is a
plain string-prefix match over whole keys (as S3's ListObjectsV2 `Prefix`), so a prefix may end
in the middle of a segment (`caches/7/v1-deps` finds `caches/7/v1-deps-abc/meta.json`).

Adapters: store/blobs_fs.py (a directory, the default), testing/blobs.py (in memory); an
S3-compatible adapter and an HTTP adapter (remote workers reaching blobs through the server)
implement the same Protocol, and tests/contract/test_blob_store.py holds them all to it.

Which keys circlet writes (the layout) is in core/blobkeys.py. Pure: no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import IO, Protocol

from circlet.core.errors import InvalidRequest, NotFound

MAX_KEY_BYTES = 1024  # S3's limit
MAX_SEGMENT_BYTES = 255  # a file name on every common file system


class BlobNotFound(NotFound):
    """No blob has this key."""


class InvalidBlobKey(InvalidRequest):
    """A key that breaks the rules of `check_key`."""


@dataclass(frozen=True, kw_only=True)
class BlobInfo:
    """A stored blob: its key, size in bytes and when it was written (UTC)."""

    key: str
    size: int
    created_at: datetime


class BlobStore(Protocol):
    """Blobs by key. Thread-safe and process-safe (several runners and the server share one).

    Every write is atomic: a reader sees the whole new blob or none (never a partial one),
    also when the writer dies half-way. All methods block; streams are read and written in
    chunks, never held whole in memory. Keys are checked by `check_key` (InvalidBlobKey).
    A key should not also be the leading segments of another (`a` beside `a/b`): adapters on
    file systems refuse that with InvalidBlobKey; circlet's layout (core/blobkeys.py) never does it.
    """

    def put(self, key: str, data: IO[bytes]) -> BlobInfo:
        """Store `data` (read to its end) under `key`, replacing any blob there."""
        ...

    def put_if_absent(self, key: str, data: IO[bytes]) -> BlobInfo | None:
        """Store `data` under `key` unless a blob is there already: then None, and the stored
        blob is left untouched (`data` may or may not have been read). Of concurrent callers
        with the same key exactly one succeeds. This is how immutable things are committed."""
        ...

    def open(self, key: str) -> IO[bytes]:
        """A binary stream of the blob, to be closed by the caller; BlobNotFound if none.
        A blob replaced while open is read to its end as it was when opened."""
        ...

    def stat(self, key: str) -> BlobInfo | None:
        """The blob's info, or None when there is none."""
        ...

    def list(self, prefix: str) -> list[BlobInfo]:
        """Every blob whose key starts with `prefix` (a string prefix, may be ""), by key."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every blob whose key starts with `prefix` (must end with "/", so that
        `artifacts/1/` never takes `artifacts/12/` along); returns how many. Idempotent."""
        ...


def check_key(key: str) -> str:
    """The key if it is valid, else InvalidBlobKey saying why.

    Valid: non-empty, at most 1024 UTF-8 bytes, `/`-separated segments each of 1 to 255 bytes,
    none `.` or `..`, no NUL or other control character. So every key is also a safe relative
    file path and a valid S3 object key.
    """
    if not key:
        raise InvalidBlobKey("a blob key may not be empty")
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise InvalidBlobKey(f"blob key is {size} bytes long; the limit is {MAX_KEY_BYTES}")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise InvalidBlobKey(f"blob key {key!r} contains a control character")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidBlobKey(f"blob key {key!r} has an empty, '.' or '..' segment")
        if len(segment.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
            raise InvalidBlobKey(f"blob key {key!r} has a segment longer than {MAX_SEGMENT_BYTES} bytes")
    return key


def check_prefix(prefix: str, *, whole_segments: bool = False) -> str:
    """The prefix if a valid key could start with it (InvalidBlobKey otherwise). With
    `whole_segments` (delete_prefix) it must also end with `/`."""
    if whole_segments and not prefix.endswith("/"):
        raise InvalidBlobKey(f"prefix {prefix!r} must end with '/'")
    if prefix:
        check_key(prefix + "x")  # a prefix may end in "/" or in a partial segment (".", "v1-")
    return prefix
