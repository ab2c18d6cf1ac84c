"""Artifacts over HTTP (api-v1.1.md 9.5): the list of a build's artifacts and each file's download.

Artifacts live in the blob store under artifacts/<build_id>/<node>/<path> (core/blobkeys.py),
so listing is one `list` of the build's prefix. Each `url` is absolute and signed like
`output_url` (core/signing.py), so a browser link works without a token; without (or with an
expired) signature the download takes the API's auth like every project endpoint: the token
in `Circle-Token`, in Basic auth, or in `?circle-token=`, also when a client appends
`?circle-token=T` raw to a URL that already has a query.

Files are streamed from the blob store in 1 MiB reads, never loaded whole. They are the
build's own files: served with their guessed Content-Type, `nosniff`, and a `sandbox` content
security policy so that an HTML artifact cannot run script as the API's origin.

Downloads resume (RFC 9110 14): `HEAD` answers GET's status and headers without a body, and a
single `Range: bytes=A-B | A- | -N` gets 206 with those bytes (a seek when the blob's stream
can, else skipped by reading), or 416 `{"message"}` with `Content-Range: bytes */SIZE` when it
starts past the end. A malformed Range, or several ranges, is ignored: 200 with the whole file.
Every answer carries `ETag` (size and write time) and `Last-Modified`; an `If-Range` naming
neither (or a weak tag) also gets the whole file, so a resume never splices two versions.
"""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Iterator
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import IO, Literal
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from circlet.core import signing
from circlet.core.blobkeys import artifact_key, artifacts_prefix, parse_artifact_key
from circlet.core.blobs import BlobInfo, BlobNotFound, BlobStore, InvalidBlobKey
from circlet.core.errors import NotFound
from circlet.core.model import Build, Project, Scope
from circlet.http.deps import project_access, services, token_secret
from circlet.http.responses import json_response
from circlet.http.schemas import answers
from circlet.http.signatures import signed_project

router = APIRouter()

P = "/project/{vcs_type}/{username}/{reponame}"
URL_LIFETIME = 7 * 24 * 3600  # seconds a signed artifact url stays valid (as output_url)
CHUNK = 1 << 20
MAX_NUMBER = 2**63 - 1
UNSATISFIABLE: Literal["unsatisfiable"] = "unsatisfiable"
BEYOND = 2**64  # stands for any byte position with more than 20 digits (past every blob's end)


def artifact_path(project: Project, build_num: int, node_index: int, path: str) -> str:
    """The canonical (signed) path of an artifact's download, its name not yet percent-encoded."""
    return (
        f"/api/v1.1/project/{project.vcs_type.value}/{project.username}/{project.reponame}"
        f"/{build_num}/artifacts/{node_index}/{path}"
    )


def artifact_url(base_url: str, secret: bytes, project: Project, build_num: int, node: int, path: str) -> str:
    """The absolute, signed download URL of an artifact."""
    canonical = artifact_path(project, build_num, node, path)
    # Expiry rounded to the hour so that repeated lists of a build give the same URLs.
    expires = (int(time.time()) // 3600 + 1) * 3600 + URL_LIFETIME
    sig = signing.sign(secret, canonical, expires)
    return f"{base_url.rstrip('/')}{quote(canonical, safe='/')}?expires={expires}&sig={sig}"


def artifacts_response(request: Request, project: Project, build: Build) -> Response:
    """The v1.1 artifact list of a build: node by node, then by path (api.py's hook)."""
    svc = services(request)
    blobs = svc.circlet.blobs
    found: list[tuple[int, str]] = []
    if blobs is not None and build.id is not None:
        for info in blobs.list(artifacts_prefix(build.id)):
            parsed = parse_artifact_key(info.key)
            if parsed is not None:
                found.append(parsed)
    found.sort()
    base, secret = svc.links.base_url, svc.links.secret
    return json_response(
        request,
        [
            {
                "path": path,
                "pretty_path": path,
                "node_index": node,
                "url": artifact_url(base, secret, project, build.build_num, node, path),
            }
            for node, path in found
        ],
    )


RANGE_HEADERS = {
    "Accept-Ranges": {"description": "Always `bytes`.", "schema": {"const": "bytes"}},
    "ETag": {"description": "A strong tag of this version of the file.", "schema": {"type": "string"}},
    "Last-Modified": {"description": "When the file was stored.", "schema": {"type": "string"}},
}
DOWNLOAD_ANSWERS = answers(
    200,
    None,
    "The file's bytes. `HEAD` on the same URL answers the same headers without them.",
    403,
    404,
    headers=RANGE_HEADERS,
    content={"application/octet-stream": {"schema": {}}},
) | {
    206: {
        "description": "The bytes of a single `Range: bytes=A-B`, `bytes=A-` or `bytes=-N` "
        "(unless `If-Range` names another version); `Content-Range: bytes A-B/SIZE`.",
        "headers": RANGE_HEADERS
        | {"Content-Range": {"description": "`bytes A-B/SIZE`", "schema": {"type": "string"}}},
        "content": {"application/octet-stream": {"schema": {}}},
    },
    416: {
        "description": "The range starts past the end of the file; `Content-Range: bytes */SIZE`.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Message"}}},
    },
}
RANGE_PARAMETERS = {
    "parameters": [
        {
            "name": "Range",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "One byte range: `bytes=A-B`, `bytes=A-` or `bytes=-N`. "
            "Anything else (several ranges, a malformed value) is ignored.",
        },
        {
            "name": "If-Range",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "The `ETag` or `Last-Modified` of the version the client holds: "
            "Range is honoured only if it still names the file.",
        },
    ]
}


@router.get(
    P + "/{build_num}/artifacts/{node_index}/{path:path}",
    summary="Download one artifact",
    responses=DOWNLOAD_ANSWERS,
    openapi_extra=RANGE_PARAMETERS,
)
def download(
    request: Request, vcs_type: str, username: str, reponame: str, build_num: str, node_index: str, path: str
) -> Response:
    """One artifact's bytes, streamed, whole or one byte range; on `HEAD` only the headers. A
    valid signature (`expires`, `sig` of the listed url) stands in for a token; otherwise the
    caller needs view-builds on the project."""
    svc = services(request)
    number, node = _number(build_num), _number(node_index)
    project = _signed_project(request, vcs_type, username, reponame, number, node, path)
    if project is None:
        project, _ = project_access(request, vcs_type, username, reponame, Scope.VIEW_BUILDS)
    build = svc.circlet.get_build(project, number)
    blobs = svc.circlet.blobs
    if blobs is None or build.id is None:
        raise NotFound("Artifact not found")
    try:
        key = artifact_key(build.id, node, path)
    except InvalidBlobKey:
        raise NotFound("Artifact not found") from None
    info, stream = _opened(blobs, key, headers_only=request.method == "HEAD")
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    if media_type.startswith("text/") or media_type in ("application/json", "application/javascript"):
        media_type += "; charset=utf-8"
    etag, last_modified = entity_tag(info), http_date(info.created_at)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Last-Modified": last_modified,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
    }
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    span = None
    if wanted is not None and (if_range is None or if_range_holds(if_range, info)):
        span = byte_range(wanted, info.size)
    if span == UNSATISFIABLE:
        if stream is not None:
            stream.close()
        headers["Content-Range"] = f"bytes */{info.size}"
        message = f"Range not satisfiable: the artifact is {info.size} bytes long"
        return json_response(request, {"message": message}, 416, headers=headers)
    status, first, stop = 200, 0, info.size
    if span is not None:
        status, (first, stop) = 206, span
        headers["Content-Range"] = f"bytes {first}-{stop - 1}/{info.size}"
    headers["Content-Length"] = str(stop - first)
    if stream is None:  # HEAD
        return Response(b"", status_code=status, media_type=media_type, headers=headers)
    return StreamingResponse(
        read_chunks(stream, first, stop), status_code=status, media_type=media_type, headers=headers
    )


def _opened(blobs: BlobStore, key: str, *, headers_only: bool) -> tuple[BlobInfo, IO[bytes] | None]:
    """The blob's info and, unless `headers_only`, an open stream of exactly that version: the
    blob is looked at before and after it is opened, and opened again if it was replaced in
    between (two store_artifacts steps of a build writing one name), so the ETag, length and
    range sent always describe the bytes sent. NotFound when there is none."""
    for _ in range(5):
        info = blobs.stat(key)
        if info is None:
            break
        if headers_only:
            return info, None
        try:
            stream = blobs.open(key)
        except BlobNotFound:  # deleted meanwhile
            break
        if blobs.stat(key) == info:
            return info, stream
        stream.close()  # replaced while being opened: look again
    raise NotFound("Artifact not found")


# HEAD of a download: the same handler (it leaves the body out), not in the OpenAPI document.
router.add_api_route(
    P + "/{build_num}/artifacts/{node_index}/{path:path}", download, methods=["HEAD"], include_in_schema=False
)


def read_chunks(stream: IO[bytes], start: int = 0, stop: int | None = None) -> Iterator[bytes]:
    """Bytes `start` to `stop` (exclusive; None: the end) of the stream in 1 MiB pieces, closed
    when done or when the response is dropped. Reaches `start` by seeking when the stream can,
    else by reading and dropping what comes before it."""
    try:
        if start and stream.seekable():
            stream.seek(start)
        else:
            skip = start
            while skip > 0 and (chunk := stream.read(min(CHUNK, skip))):
                skip -= len(chunk)
        left = None if stop is None else stop - start
        while left is None or left > 0:
            chunk = stream.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk
    finally:
        stream.close()


def byte_range(header: str, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """The `(start, stop)` (stop exclusive) a `Range` header asks of `size` bytes (RFC 9110 14.1.2):
    UNSATISFIABLE when it starts past the end (or asks anything of an empty file, or the last 0
    bytes); None when it is to be ignored (the whole file): not `bytes`, malformed, an A-B with
    B < A, or several ranges."""
    unit, eq, spec = header.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    parts = [part.strip() for part in spec.split(",") if part.strip()]
    if len(parts) != 1:
        return None
    first_text, dash, last_text = parts[0].partition("-")
    first, last = _position(first_text), _position(last_text)
    if not dash or (first_text and first is None) or (last_text and last is None):
        return None
    if first is None:  # bytes=-N: the last N bytes
        if last is None:
            return None
        if last == 0 or size == 0:
            return UNSATISFIABLE
        return max(size - last, 0), size
    if last is not None and last < first:
        return None
    if first >= size:
        return UNSATISFIABLE
    return first, size if last is None else min(last + 1, size)


def entity_tag(info: BlobInfo) -> str:
    """A strong ETag of a blob: its size and write time in microseconds. A blob is replaced only
    whole (BlobStore.put), so a new version gets a new time."""
    micros = int(info.created_at.timestamp() * 1_000_000)
    return f'"{info.size:x}-{micros:x}"'


def http_date(when: datetime) -> str:
    return format_datetime(when.replace(microsecond=0), usegmt=True)


def if_range_holds(value: str, info: BlobInfo) -> bool:
    """Whether `If-Range` names this version of the blob: its ETag (strong comparison, so never a
    weak `W/` tag), or its Last-Modified date to the second."""
    value = value.strip()
    if value.startswith(("W/", '"')):
        return value == entity_tag(info)
    try:
        date = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return False
    return date.tzinfo is not None and date == info.created_at.replace(microsecond=0)


def _position(text: str) -> int | None:
    """A byte position of a Range header (ASCII digits only), or None."""
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0")
    return BEYOND if len(digits) > 20 else int(digits or "0")


def _number(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_NUMBER:
        raise NotFound("Artifact not found")
    return int(text)


def _signed_project(
    request: Request, vcs_type: str, username: str, reponame: str, build_num: int, node: int, path: str
) -> Project | None:
    """The project when the request carries a valid signature for this artifact, else None.

    A client that appends `?circle-token=T` to a URL with a query makes the signature read
    `SIG?circle-token=T`: the signature is cut there and the token kept for the API's auth.
    """
    sig = request.query_params.get("sig", "")
    expires = request.query_params.get("expires", "")
    if "?" in sig:
        sig, _, tail = sig.partition("?")
        token = dict(parse_qsl(tail)).get("circle-token")
        if token and token_secret(request) is None:
            request.state.token = services(request).circlet.authenticate(token)
    return signed_project(
        request,
        vcs_type,
        username,
        reponame,
        sig,
        expires,
        lambda project: artifact_path(project, build_num, node, path),
    )
