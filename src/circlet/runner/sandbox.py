"""Run each step under bubblewrap, so that it cannot read what its worker holds.

With a sandbox configured (CIRCLET_SANDBOX=bwrap; the default of `circlet worker`), StepProcess
starts every step as

    env --ignore-signal=TERM bwrap --die-with-parent --unshare-pid --unshare-ipc
        --ro-bind / / --dev /dev --proc /proc            read-only system, fresh /dev and /proc
        --tmpfs <hidden dir> | --ro-bind /dev/null <hidden file>   ... (data folder, credentials)
        --bind <build dir> <build dir>                   the build's own workspace, writable
        --bind <runtime dir> <runtime dir>               its step scripts and BASH_ENV
        --bind <build dir>/tmp /tmp                      a /tmp of the build's own
        [--cap-drop ALL]                                 when the worker runs as root
        --chdir <cwd> -- env --default-signal=TERM <the step's argv>

What a step can no longer see: the processes of the worker (a fresh PID namespace: /proc shows
the step's own processes only, not /proc/<worker>/environ or cmdline), the worker's data folder
(other builds' workspaces and logs, the server's secret key on a single machine), the files
`hidden` names (the worker's credentials file, ~/.ssh, cloud credentials). Its environment is the
job's alone (it always was: runner/workspace.py). It can still use the network.

Cancel and timeouts work as without a sandbox: bwrap leads the step's process group and every
process of the step stays in that group, so TERM reaches the step's shell (the outer bwrap
ignores TERM, which `env` resets for the step, so a TERM trap still runs and its output is
logged), and KILL takes the whole group; if bwrap dies, --die-with-parent and the PID namespace
take every process of the step along. A consequence: processes a step leaves running (`srv &`)
end with the step; use a `background: true` step for services other steps need.

/tmp is `<build dir>/tmp`, kept from step to step like the container's /tmp on CircleCI; a
runner-side step reading a path below /tmp (store_artifacts, store_test_results) maps it with
`host_path`. The `tar` of the cache and workspace steps runs in the sandbox as well
(runner/confine.py tar_wrapper), so a link a step planted cannot lead it out. Cost: some 5-10 ms
per step on a loaded 2-core machine (measured, docs/security.md).
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("circlet.runner.sandbox")

BWRAP = "/usr/bin/bwrap"
ENV = "/usr/bin/env"
RUNTIME_PREFIX = "circlet-build-"  # runner/run.py names per-build runtime folders so
TMP_NAME = "tmp"  # <build dir>/tmp is the steps' /tmp
# Places where credentials usually live, relative to the worker's HOME; hidden when present.
HOME_SECRETS = (
    ".ssh",
    ".aws",
    ".azure",
    ".config/gcloud",
    ".config/circlet",
    ".docker",
    ".kube",
    ".gnupg",
    ".netrc",
    ".git-credentials",
    ".pgpass",
    ".pypirc",
)


@dataclass(frozen=True, kw_only=True)
class Sandbox:
    """How steps are wrapped. `workspace_root` holds the builds' folders: a step sees its own
    build's folder (writable) and no other. `hidden` paths (folders or files) are invisible."""

    workspace_root: Path
    hidden: tuple[Path, ...] = ()
    bwrap: str = BWRAP
    env_program: str = ENV
    drop_caps: bool = field(default_factory=lambda: os.geteuid() == 0)

    def command(self, args: Sequence[str], *, cwd: str, env: Mapping[str, str]) -> list[str]:
        """The argv that runs `args` in `cwd` inside the sandbox (with `env`, passed by the
        caller to the process it starts). Makes the build's /tmp folder when it lacks one."""
        own = self._own_dirs(args, cwd, env)
        argv = [self.env_program, "--ignore-signal=TERM", self.bwrap, "--die-with-parent"]
        argv += ["--unshare-pid", "--unshare-ipc", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        # /tmp first: a data folder below /tmp (tests) is then mounted over it, not hidden by it.
        build = next((p for p in own if self._in_root(p)), None)
        if build is not None:
            tmp = build / TMP_NAME
            tmp.mkdir(exist_ok=True)
            argv += ["--bind", str(tmp), "/tmp"]
        else:
            argv += ["--tmpfs", "/tmp"]
        for path in (*self.hidden, self.workspace_root):  # the root after: a hidden data folder holds it
            if path.is_dir():
                argv += ["--tmpfs", str(path)]
            elif path.exists():
                argv += ["--ro-bind", "/dev/null", str(path)]
        for path in own:
            argv += ["--bind", str(path), str(path)]
        if self.drop_caps:
            argv += ["--cap-drop", "ALL"]
        argv += ["--chdir", cwd, "--", self.env_program, "--default-signal=TERM", *args]
        return argv

    def _in_root(self, path: Path) -> bool:
        return path.parent == self.workspace_root

    def _own_dirs(self, args: Sequence[str], cwd: str, env: Mapping[str, str]) -> list[Path]:
        """The step's build folder (below workspace_root) and runtime folder (circlet-build-*),
        found from where the runner put the step: its cwd, HOME, task data, BASH_ENV, script."""
        candidates = [cwd, env.get("HOME"), env.get("CIRCLE_INTERNAL_TASK_DATA"), env.get("BASH_ENV")]
        if args:
            candidates.append(args[-1])
        found: list[Path] = []
        for text in candidates:
            if not text or not os.path.isabs(text):
                continue
            path = Path(os.path.normpath(text))
            own: Path | None = None
            if path.is_relative_to(self.workspace_root) and path != self.workspace_root:
                own = self.workspace_root / path.relative_to(self.workspace_root).parts[0]
            else:
                own = next((p for p in (path, *path.parents) if p.name.startswith(RUNTIME_PREFIX)), None)
            if own is not None and own not in found and own.is_dir():
                found.append(own)
        return found


def host_path(path: Path, node_root: Path) -> Path:
    """Where the runner finds a file a sandboxed step of the node at `node_root` wrote at `path`:
    the same place, except below /tmp (the build's own /tmp folder) unless it is also below the
    workspace root (mounted over /tmp at its own path: a data folder below /tmp)."""
    if _CURRENT is None or not path.is_absolute() or not path.is_relative_to("/tmp"):
        return path
    if path.is_relative_to(_CURRENT.workspace_root):
        return path
    return node_root.parent / TMP_NAME / path.relative_to("/tmp")


# ---------------------------------------------------------------- the process's sandbox

_CURRENT: Sandbox | None = None


def configure(sandbox: Sandbox | None) -> None:
    """Set the sandbox every StepProcess of this process uses from now on (None: no sandbox).
    Called once at start by `circlet worker` (and a runner process when CIRCLET_SANDBOX=bwrap)."""
    global _CURRENT
    _CURRENT = sandbox
    log.info("event=sandbox_configured sandbox=%s", "bwrap" if sandbox else "none")


def current() -> Sandbox | None:
    return _CURRENT


def default_hidden(*, data_dir: Path, extra: Sequence[Path] = ()) -> tuple[Path, ...]:
    """What a step must not see by default: the data folder (other builds' workspaces and logs,
    the secret key), the runtime folder of the worker's user, credential places in its HOME,
    and `extra` (the worker's credentials file, CIRCLET_CONFIG)."""
    home = Path(os.environ.get("HOME") or Path.home())
    paths = [data_dir, *(home / name for name in HOME_SECRETS), *extra]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        paths.append(Path(runtime))
    return tuple(dict.fromkeys(Path(os.path.abspath(p)) for p in paths))


def choose(setting: str, *, worker: bool) -> bool:
    """Whether steps run sandboxed: CIRCLET_SANDBOX if set, else yes on a worker (`circlet
    worker`: other people's builds next to credentials) and no for the local executor."""
    return setting == "bwrap" if setting else worker


class SandboxError(RuntimeError):
    """The sandbox was asked for and does not work here; the message says why and what to do."""


def enable(
    setting: str,
    *,
    worker: bool,
    workspace_root: Path,
    data_dir: Path | None = None,
    extra_hidden: Sequence[Path] = (),
) -> Sandbox | None:
    """The one call a runner process makes at start: decide (CIRCLET_SANDBOX `setting`, see
    `choose`), build the sandbox (hiding `data_dir`, default: the parent of `workspace_root`,
    and `extra_hidden`, e.g. the worker's credentials file), check that bwrap works here, and
    configure it for every step of this process. SandboxError when it was asked for and cannot
    work; None (and nothing configured) when no sandbox is wanted."""
    if not choose(setting, worker=worker):
        configure(None)
        return None
    root = Path(os.path.abspath(workspace_root))
    hidden = default_hidden(data_dir=Path(data_dir) if data_dir else root.parent, extra=extra_hidden)
    box = Sandbox(workspace_root=root, hidden=hidden)
    problem = probe(box)
    if problem is not None:
        raise SandboxError(f"the step sandbox does not work here: {problem}")
    configure(box)
    return box


def probe(sandbox: Sandbox) -> str | None:
    """None when the sandbox works on this machine, else what is wrong (for a clear refusal
    at start: a missing bwrap, a kernel without unprivileged namespaces...)."""
    if not os.access(sandbox.bwrap, os.X_OK):
        return f"{sandbox.bwrap} is missing: install bubblewrap or set CIRCLET_SANDBOX=none"
    root = sandbox.workspace_root
    root.mkdir(parents=True, exist_ok=True)
    argv = sandbox.command(["/bin/true"], cwd=str(root), env={})
    try:
        done = subprocess.run(argv, capture_output=True, timeout=30, env={"PATH": os.defpath}, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap did not run: {exc}"
    if done.returncode != 0:
        return f"bwrap failed ({done.returncode}): {done.stderr.decode(errors='replace').strip()}"
    return None
