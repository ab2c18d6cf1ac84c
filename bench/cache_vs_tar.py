"""save_cache / restore_cache of a 200 MB tree of 20,000 files against `tar` doing the same.

    .venv/bin/python bench/cache_vs_tar.py [--files 20000] [--size 10240] [--zstd]

Baseline: `tar cf <file> -C <home> project/deps` and `tar xf <file>` into an empty folder, on
the same file system. circlet: a real JobRunner whose save_cache step archives the same tree
into the filesystem blob store, and a second build whose restore_cache step unpacks it into its
own (fresh) HOME; the times are the actions' own start/end times. The target (issue #5) is
within 2x of tar. Run it once or twice, not in a loop: the machine is shared. circlet
compresses with `zstd -1` when the machine has zstd (runner/archive.py); --zstd also times a
bare `tar | zstd -1` pipeline for comparison.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from circlet.core.plan import PlannedStep, StepKind
from circlet.runner import archive
from circlet.store.blobs_fs import FileBlobStore
from circlet.testing.blobs import run_steps

OUT = Path(__file__).resolve().parent / "out"  # not /tmp: see bench/_common.py


def make_tree(root: Path, files: int, size: int) -> None:
    """`files` files of `size` bytes in 100 folders, half random, half text (compressible)."""
    text = (b"lorem ipsum dolor sit amet " * (size // 27 + 1))[: size // 2]
    for n in range(files):
        folder = root / f"d{n % 100:02d}"
        if n < 100:
            folder.mkdir(parents=True)
        (folder / f"f{n:05d}.bin").write_bytes(os.urandom(size - len(text)) + text)


def settle() -> None:
    """Write dirty pages out before a measurement, so no step pays for the previous one's."""
    subprocess.run(["sync"], check=False)


def timed(argv: list[str], **kwargs: object) -> float:
    settle()
    start = time.perf_counter()
    subprocess.run(argv, check=True, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - start


def show(label: str, seconds: float, total: int, baseline: float | None = None) -> None:
    ratio = f"   {seconds / baseline:.2f}x tar" if baseline else ""
    print(f"{label + ':':15s}{seconds:6.2f} s   ({total / seconds / 1e6:5.0f} MB/s){ratio}")


def action_seconds(reporter: object, step: int) -> float:
    action = reporter.finished[(step, 0)]  # type: ignore[attr-defined]
    return float((action.end_time - action.start_time).total_seconds())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=10_240)
    parser.add_argument("--zstd", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="cache-bench-", dir=OUT))
    try:
        workspaces = tmp / "ws"
        home = workspaces / "1" / "node0" / "home"
        make_tree(home / "project" / "deps", args.files, args.size)
        total = args.files * args.size
        print(f"tree: {args.files} files, {total / 1e6:.0f} MB, in {tmp}")

        baseline = tmp / "baseline.tar"
        tar_c = timed(["tar", "cf", str(baseline), "-C", str(home), "project/deps"])
        (tmp / "x").mkdir()
        tar_x = timed(["tar", "xf", str(baseline), "-C", str(tmp / "x")])
        shutil.rmtree(tmp / "x")
        baseline.unlink()

        blobs = FileBlobStore(tmp / "blobs")
        save = PlannedStep(kind=StepKind.SAVE_CACHE, name="save", args={"key": "bench", "paths": ["deps"]})
        settle()
        outcome, saved = run_steps(
            [save], blobs=blobs, workspaces=workspaces, build_id=1, keep_workspace=True
        )
        assert outcome.value == "success", saved.log(101)
        restore = PlannedStep(kind=StepKind.RESTORE_CACHE, name="restore", args={"key": "bench"})
        check = PlannedStep(kind=StepKind.RUN, name="count", command="find deps -type f | wc -l")
        settle()
        outcome, restored = run_steps([restore, check], blobs=blobs, workspaces=workspaces, build_id=2)
        assert outcome.value == "success", restored.log(101)
        assert restored.log(102).strip() == str(args.files), restored.log(102)
        save_s, restore_s = action_seconds(saved, 101), action_seconds(restored, 101)

        show("tar cf", tar_c, total)
        show("save_cache", save_s, total, tar_c)
        show("tar xf", tar_x, total)
        show("restore_cache", restore_s, total, tar_x)
        stored = sum(i.size for i in blobs.list("caches/"))
        print(f"cache blob: {stored / 1e6:.0f} MB ({archive.DEFAULT_COMPRESSION})")
        print(f"save+restore vs tar cf+xf: {(save_s + restore_s) / (tar_c + tar_x):.2f}x")
        if args.zstd and shutil.which("zstd"):
            packed = tmp / "z.tar.zst"
            cmd = f"tar cf - -C {home} project/deps | zstd -1 -q -o {packed}"
            zstd_s = timed(["sh", "-c", cmd])
            print(f"tar | zstd -1: {zstd_s:6.2f} s   {packed.stat().st_size / 1e6:.0f} MB (bare pipeline)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
