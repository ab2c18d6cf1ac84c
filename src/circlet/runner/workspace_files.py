"""persist_to_workspace / attach_workspace (config.md 3.7): files carried between workflow jobs.

Each persist_to_workspace step adds a layer to the workflow's workspace: a tar archive of the
matched paths relative to `root`, and then a record (JSON: who made it, which files) that makes
it visible (core/blobkeys.py). attach_workspace applies the layers of the job's upstream jobs
(RunRequest.upstream_build_ids, from the workflow) into `at`, oldest record first, so the
later-finished layer wins where two hold the same file, with a warning (DECISION config.md 3.7).
A cancel kills tar at once and the step ends canceled; a canceled layer gets no record, so it
is never applied (a half-made archive is not even stored: runner/archive.py).
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from circlet.core.blobkeys import is_layer_record, layer_keys, layers_prefix, workspace_id
from circlet.core.blobs import BlobInfo, InvalidBlobKey
from circlet.core.errors import CircletError
from circlet.core.filesets import PathRefused, workspace_glob
from circlet.core.model import ActionStatus
from circlet.runner.archive import ArchiveError, Stopped, pack, unpack
from circlet.runner.artifacts import confinement, failed, human_size, step_path
from circlet.runner.confine import tar_wrapper
from circlet.runner.steps import StepContext, StepResult

log = logging.getLogger("circlet.runner.workspace_files")

CONFLICTS_SHOWN = 20


def _files(root: Path, members: list[str]) -> list[str]:
    """Every file and link below the members, relative to root (the layer's record)."""
    out: list[str] = []
    for member in members:
        path = root / member
        if path.is_dir() and not path.is_symlink():
            for folder, dirs, files in os.walk(path):
                rel = os.path.relpath(folder, root)
                for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
                    out.append(os.path.normpath(os.path.join(rel, name)))
        else:
            out.append(os.path.normpath(member))
    return sorted(set(out))


def persist_to_workspace(ctx: StepContext) -> StepResult:
    args = ctx.step.args
    raw_root, patterns = args.get("root"), args.get("paths")
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(raw_root, str) or not raw_root or not patterns:
        return failed(ctx, "persist_to_workspace needs a root and paths")
    if ctx.blobs is None:
        return failed(ctx, "The workspace cannot be persisted here: this runner has no blob store")
    confined = confinement(ctx)
    root = step_path(ctx, raw_root)
    members: list[str] = []
    try:
        confined.check(root, "workspace root")
        if not root.is_dir():
            return failed(ctx, f"The workspace root {root} is not a directory")
        for pattern in patterns:
            matches = sorted(glob.glob(workspace_glob(str(pattern)), root_dir=root, include_hidden=True))
            if not matches:
                return failed(ctx, f"The specified paths did not match any files in {root}: {pattern}")
            for match in matches:
                confined.check(root / match, "workspace path")
                if match not in members:
                    members.append(match)
    except PathRefused as exc:
        return failed(ctx, exc.message)
    workspace = workspace_id(ctx.request.workflow_id, ctx.request.build_id)
    try:
        archive, record = layer_keys(workspace, ctx.request.build_id, ctx.number, ctx.index)
        ctx.log.line(f"Creating workspace archive of {root}: {', '.join(members)}")
        with ctx.stopper() as stopper:
            packed = pack(ctx.blobs, archive, root, members, wrap=tar_wrapper(ctx.home), stopper=stopper)
        if stopper.stopped:  # canceled just after: the layer is not recorded
            raise Stopped("stopped")
    except Stopped:
        ctx.log.line("Canceled: nothing persisted to the workspace")
        return StepResult(status=ActionStatus.CANCELED)
    except (ArchiveError, InvalidBlobKey, OSError) as exc:
        return failed(ctx, f"Could not archive the workspace: {exc}")
    if packed.warnings:
        ctx.log.line(packed.warnings)
    files = _files(root, members)
    body = {
        "version": 1,
        "workspace": workspace,
        "build_id": ctx.request.build_id,
        "build_num": ctx.request.build_num,
        "job": ctx.request.plan.name,
        "node_index": ctx.index,
        "step": ctx.number,
        "archive": archive,
        "compression": packed.compression,
        "size": packed.info.size if packed.info else 0,
        "persisted_at": datetime.now(UTC).isoformat(),
        "files": files,
    }
    ctx.blobs.put(record, io.BytesIO(json.dumps(body).encode()))
    size = packed.info.size if packed.info else 0
    ctx.log.line(f"Stored {len(files)} files ({human_size(size)}) in the workspace layer of this job")
    log.info(
        "event=workspace_persisted workspace=%s build_id=%s files=%s",
        workspace,
        ctx.request.build_id,
        len(files),
    )
    return StepResult(status=ActionStatus.SUCCESS)


def attach_workspace(ctx: StepContext) -> StepResult:
    raw_at = ctx.step.args.get("at")
    if not isinstance(raw_at, str) or not raw_at:
        return failed(ctx, "attach_workspace needs at")
    if ctx.blobs is None:
        return failed(ctx, "The workspace cannot be attached here: this runner has no blob store")
    at = step_path(ctx, raw_at)
    try:
        confinement(ctx).check(at, "attach point")
    except PathRefused as exc:
        return failed(ctx, exc.message)
    request = ctx.request
    found: list[BlobInfo] = []
    for upstream in request.upstream_build_ids:
        prefix = layers_prefix(workspace_id(request.workflow_id, upstream), upstream)
        found.extend(info for info in ctx.blobs.list(prefix) if is_layer_record(info.key))
    found.sort(key=lambda info: (info.created_at, info.key))
    if not found:
        ctx.log.line(
            f"No workspace layers to attach ("
            f"{len(request.upstream_build_ids)} upstream jobs); {at} is left as is"
        )
        at.mkdir(parents=True, exist_ok=True)
        return StepResult(status=ActionStatus.SUCCESS)
    layers: list[dict[str, Any]] = []
    try:
        for info in found:
            with ctx.blobs.open(info.key) as stream:
                layers.append(json.loads(stream.read()))
    except (CircletError, ValueError) as exc:
        return failed(ctx, f"Could not read the workspace layers: {exc}")
    _warn_conflicts(ctx, layers)
    ctx.log.line(f"Attaching the workspace at {at}: {len(layers)} layer{'s' if len(layers) != 1 else ''}")
    with ctx.stopper() as stopper:
        for layer in layers:
            ctx.log.line(f"  from build {layer['build_num']} ({layer['job']}): {len(layer['files'])} files")
            compression = str(layer.get("compression", "none"))
            try:
                with ctx.blobs.open(layer["archive"]) as stream:
                    said = unpack(stream, at, compression, wrap=tar_wrapper(ctx.home), stopper=stopper)
            except Stopped:
                ctx.log.line("Canceled: the workspace is partly attached")
                return StepResult(status=ActionStatus.CANCELED)
            except (ArchiveError, CircletError, OSError) as exc:
                return failed(ctx, f"Could not apply the layer of build {layer['build_num']}: {exc}")
            if said:
                ctx.log.line(said)
    return StepResult(status=ActionStatus.SUCCESS)


def _warn_conflicts(ctx: StepContext, layers: list[dict[str, Any]]) -> None:
    """Say which files later layers of other builds replace (the later-finished one wins)."""
    owner: dict[str, int] = {}
    conflicts: list[str] = []
    for layer in layers:
        build = int(layer["build_num"])
        for name in layer["files"]:
            first = owner.get(name)
            if first is not None and first != build:
                conflicts.append(
                    f"Warning: {name} is in the workspace layers of builds {first} and {build}; "
                    f"the later-finished (build {build}) wins"
                )
            owner[name] = build
    for line in conflicts[:CONFLICTS_SHOWN]:
        ctx.log.line(line)
    if len(conflicts) > CONFLICTS_SHOWN:
        ctx.log.line(f"Warning: ... and {len(conflicts) - CONFLICTS_SHOWN} more files in several layers")
