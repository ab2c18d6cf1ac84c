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
"""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Iterator
from typing import IO
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from circlet.core import signing
from circlet.core.blobkeys import artifact_key, artifacts_prefix, parse_artifact_key
from circlet.core.blobs import BlobNotFound, InvalidBlobKey
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


@router.get(
    P + "/{build_num}/artifacts/{node_index}/{path:path}",
    summary="Download one artifact",
    responses=answers(
        200, None, "The file's bytes.", 403, 404, content={"application/octet-stream": {"schema": {}}}
    ),
)
def download(
    request: Request, vcs_type: str, username: str, reponame: str, build_num: str, node_index: str, path: str
) -> Response:
    """One artifact's bytes, streamed. A valid signature (`expires`, `sig` of the listed url)
    stands in for a token; otherwise the caller needs view-builds on the project."""
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
        info = blobs.stat(key)
        stream = blobs.open(key) if info is not None else None
    except (InvalidBlobKey, BlobNotFound):
        info, stream = None, None
    if info is None or stream is None:
        raise NotFound("Artifact not found")
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    if media_type.startswith("text/") or media_type in ("application/json", "application/javascript"):
        media_type += "; charset=utf-8"
    return StreamingResponse(
        read_chunks(stream),
        media_type=media_type,
        headers={
            "Content-Length": str(info.size),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
        },
    )


def read_chunks(stream: IO[bytes]) -> Iterator[bytes]:
    """The stream in 1 MiB pieces, closed when read to its end or when the response is dropped."""
    try:
        while chunk := stream.read(CHUNK):
            yield chunk
    finally:
        stream.close()


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
