"""save_cache / restore_cache (config.md 3.4): tar archives of paths, per project, immutable.

A saved cache is one tar archive per path (`@parts/<build>-<node>/<n>.tar`) and, written last
with put_if_absent, its record `@meta.json` (core/blobkeys.py): the record commits the cache,
so a cache is there whole or not at all, and of two builds saving one key at once exactly one
wins (the loser's archives are deleted). A cancel kills tar at once: the step ends canceled,
its archives are deleted and no record is written. restore_cache lists records by key prefix and takes
the newest of the first candidate that has any. A build retried without cache
(RunRequest.no_dependency_cache, api-v1.1.md 8.2) skips every restore_cache; save_cache still saves.
A restore whose args say `"optional": True` (the 1.0 "Restore cache" step, core/phases.py) turns
its failures into warnings and succeeds: a broken cache must not fail every build of a branch
before "Save cache" can write a good one. 2.x restore_cache fails as before.

Paths below HOME are archived relative to HOME and restored into the restoring node's HOME
(HOME differs per build on circlet: the absolute path of the saving build means nothing to the
next one); other paths (an absolute working directory) are restored where they were, if they
are inside the restoring build's directories.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from circlet.core.blobkeys import (
    CACHE_META,
    cache_meta_key,
    cache_part_key,
    cache_parts_prefix,
    cache_search_prefix,
    parse_cache_meta_key,
)
from circlet.core.blobs import BlobInfo, BlobNotFound, BlobStore, InvalidBlobKey
from circlet.core.cachekey import KeyValues, arch_name, file_checksum, render
from circlet.core.errors import CircletError
from circlet.core.filesets import PathRefused
from circlet.core.model import ActionStatus
from circlet.runner.archive import ArchiveError, Stopped, pack, unpack
from circlet.runner.artifacts import confinement, failed, human_size
from circlet.runner.confine import tar_wrapper
from circlet.runner.steps import StepContext, StepResult
from circlet.runner.workspace import expand_path

log = logging.getLogger("circlet.runner.cache")

HOME = "~"  # a part's base: the node's HOME
ROOT = "/"  # ... or the file system's root
SKIPPED_RESTORE = "Skipping cache restore: this build was retried without cache"


class MissingFile(CircletError):
    """`{{ checksum "FILE" }}` of a file that is not there."""


def key_values(ctx: StepContext) -> KeyValues:
    request = ctx.request
    environment = dict(request.environment)
    environment.update({k: v for k, v in ctx.env.items() if k in ("CIRCLE_NODE_INDEX", "CIRCLE_NODE_TOTAL")})
    return KeyValues(
        branch=request.branch,
        build_num=request.build_num,
        revision=request.revision,
        environment=environment,
        epoch=int(time.time()),
        arch=arch_name(platform.system(), platform.machine()),
    )


def render_key(ctx: StepContext, template: str) -> str:
    """The key a template stands for (TemplateError, MissingFile)."""

    def checksum(name: str) -> str:
        path = expand_path(name, home=ctx.home, base=ctx.workdir)
        digest = hashlib.sha256()
        try:
            with confinement(ctx).open_file(path) as data:
                while chunk := data.read(1 << 20):
                    digest.update(chunk)
        except PathRefused as exc:
            if not path.exists():
                raise MissingFile(f"cannot checksum {path}: no such file") from None
            raise MissingFile(f"cannot checksum {path}: {exc.message}") from None
        return file_checksum(digest.digest())

    return render(template, key_values(ctx), checksum)


def _project_id(ctx: StepContext) -> int:
    return ctx.request.project.id or 0


# ---------------------------------------------------------------- save


def save_cache(ctx: StepContext) -> StepResult:
    args = ctx.step.args
    template, paths = args.get("key"), args.get("paths")
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(template, str) or not template or not paths:
        return failed(ctx, "save_cache needs a key and paths")
    if ctx.blobs is None:
        return failed(ctx, "Caches cannot be saved here: this runner has no blob store")
    try:
        key = render_key(ctx, template)
        meta_key = cache_meta_key(_project_id(ctx), key) if key else ""
    except (CircletError, InvalidBlobKey) as exc:
        return failed(ctx, f"Error computing cache key {template!r}: {exc.message}")
    if not key:
        return failed(ctx, f"Cache key {template!r} renders to nothing")
    existing = ctx.blobs.stat(meta_key)
    if existing is not None:
        ctx.log.line(f"Skipping cache generation, cache already exists for key: {key}")
        ctx.log.line(f"Found one created at {existing.created_at.isoformat(timespec='seconds')}")
        return StepResult(status=ActionStatus.SUCCESS)
    parts = _parts(ctx, [str(p) for p in paths])
    if isinstance(parts, StepResult):
        return parts
    if not parts:
        ctx.log.line("Warning: none of the paths to cache exist; no cache saved")
        return StepResult(status=ActionStatus.SUCCESS)
    ctx.log.line("Creating cache archive...")
    saver = f"{ctx.request.build_id}-{ctx.index}"
    started = time.monotonic()
    records: list[dict[str, Any]] = []
    try:
        with ctx.stopper() as stopper:
            for n, (base, member, shown, folder) in enumerate(parts):
                blob = cache_part_key(_project_id(ctx), key, saver, n)
                packed = pack(ctx.blobs, blob, folder, [member], wrap=tar_wrapper(ctx.home), stopper=stopper)
                if packed.warnings:
                    ctx.log.line(packed.warnings)
                size = packed.info.size if packed.info else 0
                records.append(
                    {
                        "blob": blob,
                        "base": base,
                        "path": member,
                        "shown": shown,
                        "size": size,
                        "compression": packed.compression,
                    }
                )
            if stopper.stopped:  # canceled after the last archive: do not commit
                raise Stopped("stopped")
    except Stopped:
        ctx.blobs.delete_prefix(cache_parts_prefix(_project_id(ctx), key, saver))
        ctx.log.line("Canceled: no cache saved")
        return StepResult(status=ActionStatus.CANCELED)
    except (ArchiveError, InvalidBlobKey, OSError) as exc:
        ctx.blobs.delete_prefix(cache_parts_prefix(_project_id(ctx), key, saver))
        return failed(ctx, f"Could not archive the cache: {exc}")
    meta = {
        "version": 1,
        "key": key,
        "build_id": ctx.request.build_id,
        "build_num": ctx.request.build_num,
        "node_index": ctx.index,
        "saved_at": datetime.now(UTC).isoformat(),
        "parts": records,
    }
    committed = ctx.blobs.put_if_absent(meta_key, io.BytesIO(json.dumps(meta).encode()))
    if committed is None:
        ctx.blobs.delete_prefix(cache_parts_prefix(_project_id(ctx), key, saver))
        ctx.log.line(f"Skipping cache generation, cache already exists for key: {key} (saved meanwhile)")
        return StepResult(status=ActionStatus.SUCCESS)
    size = sum(r["size"] for r in records)
    took = time.monotonic() - started
    ctx.log.line(f"Archive size: {human_size(size)} in {took:.2f}s")
    ctx.log.line(f"Stored Cache to {key}")
    for record in records:
        ctx.log.line(f"  * {record['shown']}")
    log.info(
        "event=cache_saved project_id=%s key=%r bytes=%s seconds=%.3f", _project_id(ctx), key, size, took
    )
    supersedes = args.get("supersedes")
    if isinstance(supersedes, str) and supersedes:
        _drop_superseded(ctx, supersedes)
    return StepResult(status=ActionStatus.SUCCESS)


SUPERSEDED_KEPT = 2  # the newest caches of a `supersedes` prefix kept: the one just saved, and one
# more for a restore that chose it just before


def _drop_superseded(ctx: StepContext, template: str) -> None:
    """Delete the caches whose key starts with the rendered `template` but the newest
    SUPERSEDED_KEPT (a 1.0 `cache_directories` cache is saved anew by every build of a branch:
    without this each would stay until CIRCLET_CACHE_DAYS). Best effort: a failure is logged."""
    assert ctx.blobs is not None
    project_id = _project_id(ctx)
    try:
        prefix = render_key(ctx, template)
        metas = [
            info
            for info in ctx.blobs.list(cache_search_prefix(project_id, prefix))
            if (parse_cache_meta_key(project_id, info.key) or "").startswith(prefix)
        ]
        metas.sort(key=lambda info: (info.created_at, info.key), reverse=True)
        for info in metas[SUPERSEDED_KEPT:]:
            ctx.blobs.delete_prefix(info.key[: -len(CACHE_META)])
    except (CircletError, OSError) as exc:
        log.warning("event=cache_supersede_failed prefix=%r error=%r", template, exc)
        return
    if len(metas) > SUPERSEDED_KEPT:
        ctx.log.line(f"Removed {len(metas) - SUPERSEDED_KEPT} older cache(s) of {prefix}")


def _parts(ctx: StepContext, paths: list[str]) -> list[tuple[str, str, str, Path]] | StepResult:
    """(base, member, shown, folder tar runs in) per existing path; a StepResult on refusal."""
    confined = confinement(ctx)
    home = PurePosixPath(os.path.normpath(ctx.home))
    found: list[tuple[str, str, str, Path]] = []
    for raw in paths:
        path = PurePosixPath(os.path.normpath(expand_path(raw, home=ctx.home, base=ctx.workdir)))
        try:
            confined.check(Path(path))
        except PathRefused as exc:
            return failed(ctx, exc.message)
        if not os.path.lexists(path):
            ctx.log.line(f"Warning: could not find path {path}; not cached")
            continue
        if home in path.parents:
            member = path.relative_to(home).as_posix()
            found.append((HOME, member, f"~/{member}", Path(home)))
        elif path == home:
            found.append((HOME, ".", "~", Path(home)))
        else:
            found.append((ROOT, path.as_posix().lstrip("/"), str(path), Path("/")))
    return found


# ---------------------------------------------------------------- restore


def find_cache(blobs: BlobStore, project_id: int, candidate: str) -> tuple[str, BlobInfo] | None:
    """The newest committed cache whose key starts with `candidate`, as (key, record info)."""
    best: tuple[str, BlobInfo] | None = None
    for info in blobs.list(cache_search_prefix(project_id, candidate)):
        key = parse_cache_meta_key(project_id, info.key)
        if key is None or not key.startswith(candidate):
            continue
        if best is None or (info.created_at, info.key) > (best[1].created_at, best[1].key):
            best = (key, info)
    return best


class _Failure(Exception):
    """restore_cache cannot go on; the message says why."""


def restore_cache(ctx: StepContext) -> StepResult:
    optional = ctx.step.args.get("optional") is True
    try:
        return _restore(ctx)
    except _Failure as exc:
        if not optional:
            return failed(ctx, str(exc))
        ctx.log.line(f"Warning: {exc}; continuing without the cache")
    except (CircletError, OSError) as exc:  # the blob store failing: an optional restore goes on
        if not optional:
            raise
        ctx.log.line(f"Warning: the cache cannot be restored ({exc}); continuing without the cache")
    log.warning("event=cache_restore_skipped project_id=%s", _project_id(ctx))
    return StepResult(status=ActionStatus.SUCCESS)


def _restore(ctx: StepContext) -> StepResult:
    args = ctx.step.args
    templates = ([args["key"]] if args.get("key") else []) + [k for k in args.get("keys") or [] if k]
    if not templates:
        raise _Failure("restore_cache needs key or keys")
    if ctx.request.no_dependency_cache:
        ctx.log.line(SKIPPED_RESTORE)
        return StepResult(status=ActionStatus.SUCCESS)
    if ctx.blobs is None:
        raise _Failure("Caches cannot be restored here: this runner has no blob store")
    hit: tuple[str, BlobInfo] | None = None
    for template in templates:
        try:
            candidate = render_key(ctx, str(template))
        except CircletError as exc:  # TemplateError, MissingFile
            raise _Failure(f"Error computing cache key {template!r}: {exc.message}") from None
        hit = find_cache(ctx.blobs, _project_id(ctx), candidate)
        if hit is not None:
            break
        ctx.log.line(f"No cache is found for key: {candidate}")
    if hit is None:
        ctx.log.line("Warning: no cache found for any key; continuing without one")
        return StepResult(status=ActionStatus.SUCCESS)
    key, info = hit
    try:
        with ctx.blobs.open(info.key) as stream:
            meta = json.loads(stream.read())
        return _unpack(ctx, key, meta)
    except (CircletError, ValueError, KeyError, TypeError) as exc:
        ctx.log.line(f"Warning: the cache at {key} cannot be read ({exc}); continuing without it")
        return StepResult(status=ActionStatus.SUCCESS)


def _unpack(ctx: StepContext, key: str, meta: dict[str, Any]) -> StepResult:
    assert ctx.blobs is not None
    ctx.log.line(f"Found a cache from build {meta['build_num']} at {key}")
    ctx.log.line(f"Size: {human_size(sum(int(p['size']) for p in meta['parts']))}")
    ctx.log.line("Cached paths:")
    for part in meta["parts"]:
        ctx.log.line(f"  * {part['shown']}")
    ctx.log.line("Unarchiving cache...")
    confined = confinement(ctx)
    started = time.monotonic()
    with ctx.stopper() as stopper:
        for part in meta["parts"]:
            if part["base"] == HOME:
                dest = Path(ctx.home)
            else:
                dest = Path("/")
                try:
                    confined.check(Path("/", part["path"]), "cache path")
                except PathRefused as exc:
                    ctx.log.line(f"Warning: {exc.message}; not restored")
                    continue
            try:
                with ctx.blobs.open(part["blob"]) as stream:  # (BlobNotFound: deleted since found)
                    said = unpack(
                        stream,
                        dest,
                        str(part.get("compression", "none")),
                        only=str(part["path"]),
                        wrap=tar_wrapper(ctx.home),
                        stopper=stopper,
                    )
            except Stopped:
                ctx.log.line("Canceled: the cache is partly restored")
                return StepResult(status=ActionStatus.CANCELED)
            except BlobNotFound:  # expired or superseded while restored: as no cache at all
                ctx.log.line(
                    f"Warning: the cache at {key} was deleted while restoring; continuing without it"
                )
                return StepResult(status=ActionStatus.SUCCESS)
            except (ArchiveError, CircletError, OSError) as exc:
                raise _Failure(f"Could not restore {part['shown']}: {exc}") from None
            if said:
                ctx.log.line(said)
    took = time.monotonic() - started
    ctx.log.line(f"Restored in {took:.2f}s")
    log.info("event=cache_restored project_id=%s key=%r seconds=%.3f", _project_id(ctx), key, took)
    return StepResult(status=ActionStatus.SUCCESS)
