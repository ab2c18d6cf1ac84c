"""The gateway's blob routes: the server's BlobStore (core/blobs.py), as far as one build may see.

A build's runner may read its own artifacts (`artifacts/<build>/`), its project's caches
(`caches/<project>/`) and its workspace (`workspaces/<workspace>/`). It may write and delete its
own artifacts, its own workspace layers (`workspaces/<workspace>/<build>/`) and the archives it
saves for a cache (`caches/<project>/<key>/@parts/<build>-<node>/`); the rest of its project's
caches it may only create (if_absent: the commit record), never replace or delete, as caches are
immutable once saved. Once the build has finished, nothing more (a late worker that was given
up on). Anything else is 403. Bodies stream both ways.

    GET    /builds/{id}/blobs?prefix=P          -> [BlobInfo]
    DELETE /builds/{id}/blobs?prefix=P          -> {"deleted": n}
    GET    /builds/{id}/blobs/{key}             -> the bytes (404 when absent)
    PUT    /builds/{id}/blobs/{key}[?if_absent=true]  -> 201 BlobInfo (409 when present, if_absent)
    GET    /builds/{id}/blob-info/{key}         -> BlobInfo (404 when absent)
"""

from __future__ import annotations

import tempfile
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from circlet.core import blobkeys
from circlet.core.blobs import BlobStore, check_key, check_prefix
from circlet.core.errors import NotFound, PermissionDenied
from circlet.core.model import Build, Lifecycle
from circlet.http.artifacts import read_chunks
from circlet.remote.auth import runner_build
from circlet.remote.wire import encode_info

router = APIRouter(include_in_schema=False)
SPOOL_IN_MEMORY = 8 << 20  # bytes of an upload kept in memory before it goes to a temporary file


READ, WRITE, CREATE = "read", "write", "create"  # create: put_if_absent


def prefixes(build: Build) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(readable, writable) key prefixes of a build's runner. Writable also holds (checked by
    `_allow`) the cache archives of its own saves; creatable, its project's caches."""
    build_id = build.id or 0
    workflow = build.extra.get("workflow_id")
    workspace = blobkeys.workspace_id(workflow if isinstance(workflow, str) else None, build_id)
    artifacts, caches = blobkeys.artifacts_prefix(build_id), blobkeys.caches_prefix(build.project_id)
    workspace_prefix = f"{blobkeys.WORKSPACES}/{workspace}/"
    return (artifacts, caches, workspace_prefix), (artifacts, blobkeys.layers_prefix(workspace, build_id))


def _own_cache_parts(build: Build, key: str) -> bool:
    """True for a key (or prefix) below the archives this build saves for a cache:
    caches/<project>/<encoded key>/@parts/<build>-<node>/ (`@` never occurs in an encoded key)."""
    caches = blobkeys.caches_prefix(build.project_id)
    if not key.startswith(caches):
        return False
    _, sep, tail = key.partition(f"/{blobkeys.CACHE_PARTS}/")
    saver, slash, _ = tail.partition("/")
    head, dash, node = saver.partition("-")
    return bool(sep and slash and dash) and head == str(build.id) and node.isdigit()


def _allow(build: Build, prefix: str, mode: str) -> None:
    if mode != READ and build.lifecycle in (Lifecycle.FINISHED, Lifecycle.NOT_RUN):
        raise PermissionDenied(f"build {build.id} has finished: its runner may no longer write blobs")
    readable, writable = prefixes(build)
    if mode == READ:
        ok = any(prefix.startswith(allowed) for allowed in readable)
    else:
        ok = any(prefix.startswith(allowed) for allowed in writable) or _own_cache_parts(build, prefix)
        if mode == CREATE:
            ok = ok or prefix.startswith(blobkeys.caches_prefix(build.project_id))
    if not ok:
        what = {READ: "read", WRITE: "replace or delete", CREATE: "write"}[mode]
        raise PermissionDenied(f"build {build.id} may not {what} blobs under {prefix!r}")


def _store(request: Request, build_id: int) -> tuple[BlobStore, Build]:
    found, build = runner_build(request, build_id)
    store = found.circlet.blobs
    if store is None:
        raise NotFound("this server keeps no blobs")
    return store, build


@router.get("/builds/{build_id}/blobs")
def list_blobs(request: Request, build_id: int, prefix: str) -> list[dict[str, Any]]:
    store, build = _store(request, build_id)
    _allow(build, check_prefix(prefix), READ)
    return [encode_info(info) for info in store.list(prefix)]


@router.delete("/builds/{build_id}/blobs")
def delete_blobs(request: Request, build_id: int, prefix: str) -> dict[str, Any]:
    store, build = _store(request, build_id)
    _allow(build, check_prefix(prefix, whole_segments=True), WRITE)
    return {"deleted": store.delete_prefix(prefix)}


@router.get("/builds/{build_id}/blob-info/{key:path}")
def stat_blob(request: Request, build_id: int, key: str) -> dict[str, Any]:
    store, build = _store(request, build_id)
    _allow(build, check_key(key), READ)
    info = store.stat(key)
    if info is None:
        raise NotFound(f"no blob {key!r}")
    return encode_info(info)


@router.get("/builds/{build_id}/blobs/{key:path}")
def get_blob(request: Request, build_id: int, key: str) -> StreamingResponse:
    store, build = _store(request, build_id)
    _allow(build, check_key(key), READ)
    return StreamingResponse(read_chunks(store.open(key)), media_type="application/octet-stream")


@router.put("/builds/{build_id}/blobs/{key:path}")
async def put_blob(request: Request, build_id: int, key: str, if_absent: bool = False) -> Response:
    store, build = await run_in_threadpool(_store, request, build_id)
    _allow(build, check_key(key), CREATE if if_absent else WRITE)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        async for piece in request.stream():
            spool.write(piece)  # memory, or the page cache once rolled over: never a long wait
        spool.seek(0)
        if if_absent:
            info = await run_in_threadpool(store.put_if_absent, key, spool)
            if info is None:
                return JSONResponse({"message": f"blob {key!r} exists already"}, status_code=409)
        else:
            info = await run_in_threadpool(store.put, key, spool)
    return JSONResponse(encode_info(info), status_code=201)
