"""Keep steps that read or write files for circlet (artifacts, caches, workspaces) inside the build.

Steps of the `run` kind can do what the server's user can; the steps circlet runs itself must
not become a way around that: a `store_artifacts: path: /` or a symlink to the server's secret
key would otherwise publish the server's files. Every path such a step touches is resolved
(symlinks followed) and must land in the build's own directories (core/filesets.allowed_roots);
files are opened without following a final symlink and checked again through /proc after the
open, so swapping a file for a symlink between the check and the open does not help either.

Under the step sandbox (runner/sandbox.py) the build also owns its `/tmp` folder (`host_path`
finds it), and the `tar` these steps run goes into the sandbox too (`tar_wrapper`): a step
could otherwise plant a symbolic link that tar, working for the runner, writes through (or,
swapped in after a check, reads through) to what the sandbox hides from the step.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from circlet.core.filesets import PathRefused, allowed_roots, within
from circlet.runner import sandbox


@dataclass(frozen=True, kw_only=True)
class Confinement:
    """The real (symlink-free) directories a build owns."""

    roots: tuple[PurePosixPath, ...]
    # Without the sandbox: the machine's /tmp, whose contents (not itself) are allowed too...
    shared: PurePosixPath | None = None
    # ...except these folders in it (circlet's data folder, when it lives there)
    excluded: tuple[PurePosixPath, ...] = ()

    @classmethod
    def for_node(cls, node_root: Path, workdir: Path) -> Confinement:
        """The node's folder and the job's working directory (core/filesets.allowed_roots), and
        `/tmp`: under the sandbox the build's own folder; without it, what is below the machine's
        /tmp (CircleCI's docs write `/tmp/artifacts`; a `run` step can read it anyway), minus
        circlet's data folder (`<data>/workspaces/<build>/node<i>` is `node_root`)."""
        real_root = PurePosixPath(os.path.realpath(node_root))
        real_workdir = PurePosixPath(os.path.realpath(workdir))
        roots = allowed_roots(real_root, real_workdir)
        if sandbox.current() is not None:
            tmp = PurePosixPath(os.path.realpath(sandbox.host_path(Path("/tmp"), node_root)))
            roots = (*roots, tmp) if not within(tmp, roots) else roots
            return cls(roots=roots)
        data_dir = PurePosixPath(os.path.realpath(node_root.parent.parent.parent))
        return cls(roots=roots, shared=PurePosixPath(os.path.realpath("/tmp")), excluded=(data_dir,))

    def allows(self, real: PurePosixPath) -> bool:
        """Whether the symlink-free `real` path is one this build may read or write."""
        if within(real, self.roots):
            return True
        shared = self.shared
        if shared is None or shared not in real.parents:
            return False
        return not within(real, self.excluded)

    def describe(self) -> str:
        shown = [str(r) for r in self.roots]
        if self.shared is not None:
            shown.append(f"below {self.shared}")
        return ", ".join(shown)

    def check(self, path: Path, what: str = "path") -> Path:
        """`path` with symlinks resolved, if that is inside the build; PathRefused otherwise.
        A path that does not exist (yet) is resolved as far as it exists."""
        real = os.path.realpath(path)
        if not self.allows(PurePosixPath(real)):
            shown = f"{path}" if str(path) == real else f"{path} (which resolves to {real})"
            raise PathRefused(
                f"Refusing {what} {shown}: it is outside this build's directories ({self.describe()})"
            )
        return Path(real)

    def open_file(self, path: Path) -> IO[bytes]:
        """Open a regular file for reading, refusing symlinks out of the build, FIFOs and devices
        (PathRefused) whatever the file became between a check and this open."""
        real = self.check(path, "file")
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise PathRefused(f"Cannot read {path}: {exc.strerror or exc}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PathRefused(f"Refusing {path}: not a regular file")
            opened = _opened_path(fd)
            if opened is not None and not self.allows(PurePosixPath(opened)):
                raise PathRefused(f"Refusing {path}: it moved outside this build's directories")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise


@dataclass(frozen=True, kw_only=True)
class Found:
    """A file found below a stored directory: its path as written (for names) and how it ends."""

    path: Path  # lexical: the stored directory joined with the relative path
    note: str | None = None  # why it is not stored (a skipped or refused link), None when it is
    refused: bool = False  # a symlink leading out of the build: the step fails


def walk_files(top: Path, confinement: Confinement) -> Iterator[Found]:
    """Every regular file below `top` (a directory), sorted, symlinks to files inside the build
    included; symlinks to directories are not followed (loops, and trees stored twice) and are
    reported with a note, symlinks leading out of the build as refused; special files are left out."""
    for folder, dirs, files in os.walk(top, followlinks=False):
        dirs.sort()
        base = Path(folder)
        for name in list(dirs):
            if os.path.islink(base / name):
                dirs.remove(name)
                yield Found(path=base / name, note="a symbolic link to a directory; not followed")
        for name in sorted(files):
            path = base / name
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISREG(mode):
                yield Found(path=path)
            elif stat.S_ISLNK(mode):
                try:
                    real = confinement.check(path, "symbolic link")
                except PathRefused as exc:
                    yield Found(path=path, note=exc.message, refused=True)
                    continue
                if real.is_file():
                    yield Found(path=path)
                elif not real.exists():
                    yield Found(path=path, note="a broken symbolic link; skipped")
            # sockets, FIFOs, devices: nothing to store


def tar_wrapper(home: Path) -> Callable[[list[str], Path], list[str]] | None:
    """How the file steps of a build whose HOME is `home` start tar (runner/archive.py `wrap`):
    in the step sandbox when one is configured, so that tar reads and writes only what the
    build's steps can; None (tar as is) without a sandbox, where steps can do all the runner can."""
    box = sandbox.current()
    if box is None:
        return None
    env = {"HOME": str(home)}
    return lambda argv, cwd: box.command(argv, cwd=str(cwd), env=env)


def _opened_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None  # no /proc: the O_NOFOLLOW open and the earlier check stand
