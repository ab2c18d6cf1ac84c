"""store_artifacts (config.md 3.5): copy files of the build to the blob store, one blob per file.

Artifacts are kept per build and node under artifacts/<build_id>/<node>/<name> (core/blobkeys),
which is all the API needs to list and serve them: no table. The step never fails for a missing
path (a warning, as CircleCI); it fails, storing nothing more, for a path outside the build's
directories, and after storing the rest for symbolic links that lead out of them. A cancel
stops it between files (the files being stored then are finished): it ends canceled, keeping
what it stored.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from circlet.core.blobkeys import artifact_key
from circlet.core.blobs import BlobInfo, InvalidBlobKey
from circlet.core.filesets import PathRefused, artifact_name, destination_prefix
from circlet.core.model import ActionStatus
from circlet.runner import sandbox
from circlet.runner.confine import Confinement, Found, walk_files
from circlet.runner.steps import StepContext, StepResult
from circlet.runner.workspace import expand_path

log = logging.getLogger("circlet.runner.artifacts")

LISTED = 50  # files named one by one in the step's output; the rest are counted
UPLOADERS = 4  # files stored at once


def confinement(ctx: StepContext) -> Confinement:
    return Confinement.for_node(ctx.workspace.root, ctx.workdir)


def failed(ctx: StepContext, message: str) -> StepResult:
    """Say why in the step's output; the step failed."""
    ctx.log.line(message)
    return StepResult(status=ActionStatus.FAILED)


def step_path(ctx: StepContext, raw: str) -> Path:
    """Where the runner finds the path a step names (`~`, relative, absolute): the same place,
    except `/tmp/...` under the sandbox, which is the build's own /tmp folder."""
    return sandbox.host_path(expand_path(raw, home=ctx.home, base=ctx.workdir), ctx.workspace.root)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def store_artifacts(ctx: StepContext) -> StepResult:
    """Store the file or directory `path` under `destination` (or the obsolete `prefix`)."""
    args = ctx.step.args
    raw = args.get("path")
    if not isinstance(raw, str) or not raw:
        ctx.log.line("Warning: store_artifacts needs a path; nothing stored")
        return StepResult(status=ActionStatus.SUCCESS)
    if ctx.blobs is None:
        return failed(ctx, "Artifacts cannot be stored here: this runner has no blob store")
    confined = confinement(ctx)
    target = step_path(ctx, raw)
    seen = expand_path(raw, home=ctx.home, base=ctx.workdir)  # as the step knows it, for names
    try:
        destination = destination_prefix(args.get("destination") or args.get("prefix"))
        confined.check(target)
    except PathRefused as exc:
        return failed(ctx, exc.message)
    if not target.exists():
        ctx.log.line(f"Warning: artifact path {target} does not exist; nothing stored")
        return StepResult(status=ActionStatus.SUCCESS)
    single = not target.is_dir()
    home = PurePosixPath(ctx.home)
    ctx.log.line(f"Uploading {target}" + (f" to {destination}" if destination else ""))
    stored = skipped = refused = 0
    total = 0
    found = [Found(path=target)] if single else list(walk_files(target, confined))
    blobs, build_id, node = ctx.blobs, ctx.request.build_id, ctx.index
    canceled = threading.Event()

    def upload(item: Found) -> tuple[str, BlobInfo | None, str | None, bool]:
        """(name, stored blob or None, what to say, refused?) of one file; runs on a pool thread."""
        if canceled.is_set():
            return "", None, None, False
        if item.note is not None:
            verb = "Refused" if item.refused else "Skipped"
            return "", None, f"  {verb} {item.path}: {item.note}", item.refused
        name = artifact_name(
            PurePosixPath(seen) / item.path.relative_to(target),
            PurePosixPath(seen),
            home=home,
            destination=destination,
            single_file=single,
        )
        try:
            with confined.open_file(item.path) as data:
                return name, blobs.put(artifact_key(build_id, node, name), data), None, False
        except PathRefused as exc:
            return name, None, f"  {exc.message}", True
        except InvalidBlobKey as exc:
            return name, None, f"  Skipped {item.path}: cannot be named {name!r} ({exc.message})", False

    # Files go up a few at a time: per file the cost is mostly waiting (file system, network).
    with (
        ctx.processes.on_cancel(canceled.set),
        ThreadPoolExecutor(max_workers=UPLOADERS, thread_name_prefix="circlet-artifacts") as pool,
    ):
        for name, info, said, was_refused in pool.map(upload, found):
            if canceled.is_set():
                break
            if info is None:
                refused += was_refused
                skipped += not was_refused
                if said:
                    ctx.log.line(said)
                continue
            stored += 1
            total += info.size
            if stored <= LISTED:
                ctx.log.line(f"  {name} ({human_size(info.size)})")
    if canceled.is_set():
        ctx.log.line("Canceled: no more artifacts stored")
        return StepResult(status=ActionStatus.CANCELED)
    if stored > LISTED:
        ctx.log.line(f"  ... and {stored - LISTED} more")
    ctx.log.line(f"Uploaded {stored} artifact{'s' if stored != 1 else ''} ({human_size(total)})")
    log.info(
        "event=artifacts_stored build_id=%s node=%s files=%s bytes=%s refused=%s skipped=%s",
        ctx.request.build_id,
        ctx.index,
        stored,
        total,
        refused,
        skipped,
    )
    if refused:
        ctx.log.line(
            f"{refused} path{'s' if refused != 1 else ''} refused: "
            "store_artifacts only stores files inside this build's directories"
        )
        return StepResult(status=ActionStatus.FAILED)
    return StepResult(status=ActionStatus.SUCCESS)
