"""The BlobStore port (core/blobs.py) over the runner gateway, for one build on a remote worker.

Uploads stream from the caller's file (resent from its start after a connection problem when
the file can seek, else sent once); downloads stream to the caller. The server enforces which
keys the build may touch (remote/blobs.py): a refusal is PermissionDenied.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any

from circlet.core.blobs import BlobInfo, BlobNotFound, check_key, check_prefix
from circlet.core.errors import PermissionDenied
from circlet.remote.errors import GatewayError
from circlet.remote.wire import decode_info

if TYPE_CHECKING:
    from circlet.remote.client import RunnerClient

CHUNK = 1 << 20


class ChunkReader:
    """A readable binary stream (`read`) over an iterator of byte chunks, e.g. a streaming answer."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readable(self) -> bool:
        return True


class _Download(ChunkReader):
    """A blob's download; close() releases the connection."""

    def __init__(self, context: Any, answer: Any) -> None:
        super().__init__(answer.iter_bytes(CHUNK))
        self._context = context
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._context.__exit__(None, None, None)

    def __enter__(self) -> _Download:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HttpBlobStore:
    """BlobStore of one build, through the server."""

    def __init__(self, client: RunnerClient, build_id: int) -> None:
        self._client = client
        self._build_id = build_id
        self._base = f"/builds/{build_id}"

    def _headers(self) -> dict[str, str]:
        return self._client.build_headers(self._build_id)

    def _refused(self, exc: GatewayError) -> Exception:
        if exc.status == 403:
            return PermissionDenied(exc.message)
        return exc

    def _upload(self, key: str, data: IO[bytes], if_absent: bool) -> BlobInfo | None:
        check_key(key)
        start = data.tell() if data.seekable() else None
        attempts = 0

        def body() -> Iterator[bytes]:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                if start is None:
                    raise GatewayError(f"could not store blob {key!r}: the upload broke and cannot restart")
                data.seek(start)
            while chunk := data.read(CHUNK):
                yield chunk

        params = {"if_absent": "true"} if if_absent else None
        try:
            answer = self._client.call(
                "PUT",
                f"{self._base}/blobs/{key}",
                content=body,
                params=params,
                headers=self._headers(),
                ok=(409,),
            )
        except GatewayError as exc:
            raise self._refused(exc) from None
        if answer.status_code == 409:
            return None
        return decode_info(answer.json())

    def put(self, key: str, data: IO[bytes]) -> BlobInfo:
        info = self._upload(key, data, False)
        assert info is not None
        return info

    def put_if_absent(self, key: str, data: IO[bytes]) -> BlobInfo | None:
        return self._upload(key, data, True)

    def open(self, key: str) -> IO[bytes]:
        check_key(key)
        context = self._client.stream("GET", f"{self._base}/blobs/{key}", headers=self._headers())
        try:
            answer = context.__enter__()
        except GatewayError as exc:
            if exc.status == 404:
                raise BlobNotFound(f"no blob {key!r}") from None
            raise self._refused(exc) from None
        return _Download(context, answer)  # type: ignore[return-value]

    def stat(self, key: str) -> BlobInfo | None:
        check_key(key)
        try:
            answer = self._client.call(
                "GET", f"{self._base}/blob-info/{key}", headers=self._headers(), ok=(404,)
            )
        except GatewayError as exc:
            raise self._refused(exc) from None
        return None if answer.status_code == 404 else decode_info(answer.json())

    def list(self, prefix: str) -> list[BlobInfo]:
        check_prefix(prefix)
        try:
            answer = self._client.call(
                "GET", f"{self._base}/blobs", params={"prefix": prefix}, headers=self._headers()
            )
        except GatewayError as exc:
            raise self._refused(exc) from None
        return [decode_info(item) for item in answer.json()]

    def delete_prefix(self, prefix: str) -> int:
        check_prefix(prefix, whole_segments=True)
        try:
            answer = self._client.call(
                "DELETE", f"{self._base}/blobs", params={"prefix": prefix}, headers=self._headers()
            )
        except GatewayError as exc:
            raise self._refused(exc) from None
        return int(answer.json()["deleted"])
