"""Where a build runs on this host: one directory per build, one per node inside it.

<workspace_root>/<build_id>/node<i>/
    home/           HOME for the steps, so `~/project` (the default working directory) is
                    private to this build and node instead of shared by every build of the
                    server's user (DECISION; config.md 4 says "the runner user's home")
    task-data/      CIRCLE_INTERNAL_TASK_DATA (config.md 8)
<runtime>/node<i>/  small files circlet makes for every step, on a memory file system when
                    the machine has one (see runtime_base); else the node directory itself
    .bash_env       BASH_ENV / CIRCLE_SHELL_ENV (config.md 3.1), empty at start
    steps/          the scripts of run steps, one file per step
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circlet.agent import command_script

# What steps inherit from the server's own environment; everything else (database URLs, tokens...)
# stays out of the build. HOME is not inherited: it is the node's home.
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "TMPDIR")
FALLBACK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def build_dir(workspace_root: Path, build_id: int) -> Path:
    return workspace_root / str(build_id)


def runtime_base() -> Path | None:
    """A writable memory file system for per-step files, or None.

    A step script is a new file per step; on a disk file system that has been deleting build
    workspaces (ext4 with `discard`) creating one costs 0.2-0.7 ms, a third of a short step's
    cost, against 0.02 ms on tmpfs. $XDG_RUNTIME_DIR is the standard per-user tmpfs; /dev/shm
    is on nearly every Linux.
    """
    for candidate in (os.environ.get("XDG_RUNTIME_DIR"), "/dev/shm"):
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return Path(candidate)
    return None


@dataclass(frozen=True, kw_only=True)
class NodeWorkspace:
    """The directories of one node of one build."""

    root: Path
    runtime: Path | None = None  # where scripts and BASH_ENV go (default: root)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def bash_env(self) -> Path:
        return (self.runtime or self.root) / ".bash_env"

    @property
    def scripts(self) -> Path:
        return (self.runtime or self.root) / "steps"

    @property
    def task_data(self) -> Path:
        return self.root / "task-data"

    @property
    def bin(self) -> Path:
        """Holds `circleci` and `circleci-agent`, first on the steps' PATH (on the disk, not on
        tmpfs: /dev/shm is often mounted noexec)."""
        return self.root / "bin"

    @property
    def halt_file(self) -> Path:
        """`circleci step halt` creates it; the runner runs no further step then."""
        return (self.runtime or self.root) / "halt"

    @property
    def artifacts_1_0(self) -> Path:
        """$CIRCLE_ARTIFACTS of a 1.0 build (CircleCI's /tmp/circle-artifacts.XXXX)."""
        return self.root / "circle-artifacts"

    @property
    def test_reports_1_0(self) -> Path:
        """$CIRCLE_TEST_REPORTS of a 1.0 build (CircleCI's /tmp/circle-junit.XXXX)."""
        return self.root / "circle-junit"

    def create(self, timings: list[dict[str, Any]] | None = None) -> None:
        """Make the directories, an empty BASH_ENV file, the `circleci` command and, with timings,
        results.json for `circleci tests split`; OSError if the disk says no."""
        for path in (self.home, self.scripts, self.task_data, self.bin):
            path.mkdir(parents=True, exist_ok=True)
        self.bash_env.write_bytes(b"")
        script = command_script(sys.executable)
        for name in ("circleci", "circleci-agent"):
            (self.bin / name).write_text(script)
            (self.bin / name).chmod(0o755)
        if timings is not None:
            folder = self.task_data / "circle-test-results"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "results.json").write_text(
                json.dumps({"tests": timings, "files": [], "exceptions": []})
            )

    def script(self, step: int) -> Path:
        return self.scripts / f"step-{step}.sh"


def expand_path(path: str, *, home: Path, base: Path) -> Path:
    """A config path as a directory: `~` is $HOME, relative paths are below `base`; nothing else
    (no `$VAR`) is expanded (config.md 2)."""
    if path == "~":
        return home
    if path.startswith("~/"):
        return home / path[2:]
    return base / path  # an absolute `path` replaces `base`


def host_environment(home: Path) -> dict[str, str]:
    """The part of the server's environment steps start from, with HOME set to the node's home."""
    env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    env.setdefault("PATH", FALLBACK_PATH)
    env["HOME"] = str(home)
    return env


def remove_tree(path: Path) -> None:
    """Delete a workspace, including read-only directories builds like to leave (Go module cache)."""

    def make_writable_and_retry(func: Callable[..., Any], target: str, _exc: object) -> None:
        try:
            parent = os.path.dirname(target)
            os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, os.stat(target).st_mode | stat.S_IRWXU)
            func(target)
        except OSError:
            pass

    if not path.exists():
        return
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=make_writable_and_retry)
    else:
        shutil.rmtree(path, onerror=make_writable_and_retry)
