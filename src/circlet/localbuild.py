"""`circlet build`: run a checkout's config once with the same runner, showing steps live.

The checkout step gets the working tree as it is now (committed HEAD plus uncommitted and
untracked, not ignored, files), so a developer can try a change before pushing it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from circlet.core import config as config_mod
from circlet.core import env as env_mod
from circlet.core.errors import ConfigError, InvalidRequest, RepositoryError
from circlet.core.model import Action, ActionStatus, Build, Message, Outcome, Project, VcsType, Why
from circlet.core.ports import LogWriter, RunRequest
from circlet.runner.run import JobRunner
from circlet.service import NO_SUCH_JOB
from circlet.store.blobs_fs import FileBlobStore

CONFIG_PATH = ".circleci/config.yml"

_MARKS = {
    ActionStatus.SUCCESS: "[green]✔[/]",
    ActionStatus.FAILED: "[red]✖[/]",
    ActionStatus.TIMEDOUT: "[red]⏱[/]",
    ActionStatus.CANCELED: "[yellow]■[/]",
    ActionStatus.INFRASTRUCTURE_FAIL: "[red]![/]",
    ActionStatus.RUNNING: "…",
}


def _git(tree: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RepositoryError(done.stderr.strip() or f"git {' '.join(args)} failed")
    return done.stdout


class WorkingTreeSource:
    """A CheckoutSource for one local working tree: checkout copies the tree as it is now."""

    def __init__(self, tree: Path) -> None:
        self.tree = tree

    def checkout(
        self, project: Project, sha: str, dest: Path, *, branch: str | None = None, tag: str | None = None
    ) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists() and any(dest.iterdir()):
            raise RepositoryError(f"Directory ({dest}) you are trying to checkout to is not empty")
        if (self.tree / ".git").exists():
            subprocess.run(
                ["git", "clone", "-q", "--no-hardlinks", str(self.tree), str(dest)],
                check=True,
                capture_output=True,
            )
            if branch:
                subprocess.run(
                    ["git", "-C", str(dest), "checkout", "-q", "-B", branch, sha],
                    check=True,
                    capture_output=True,
                )
            changed = _git(self.tree, "ls-files", "-z", "--modified", "--others", "--exclude-standard")
            deleted = set(_git(self.tree, "ls-files", "-z", "--deleted").split("\0"))
            for name in filter(None, changed.split("\0")):
                if name in deleted:
                    continue
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.tree / name, target)
            for name in filter(None, deleted):
                (dest / name).unlink(missing_ok=True)
        else:
            shutil.copytree(self.tree, dest, dirs_exist_ok=True)


class _ConsoleWriter:
    def __init__(self, reporter: ConsoleReporter, prefix: bytes) -> None:
        self.reporter = reporter
        self.prefix = prefix
        self.bytes = 0

    def write(self, data: bytes, at: datetime, stream: str = "out") -> None:
        self.bytes += len(data)
        self.reporter.emit(data, self.prefix)

    def close(self) -> None:
        self.reporter.emit(b"", self.prefix, end=True)


class ConsoleReporter:
    """A RunReporter that prints to the terminal as the build goes."""

    def __init__(self, console: Console, parallelism: int) -> None:
        self.console = console
        self.parallelism = parallelism
        self.lock = threading.Lock()
        self.outcome: Outcome | None = None
        self.messages: tuple[Message, ...] = ()
        self._at_line_start: dict[bytes, bool] = {}

    def emit(self, data: bytes, prefix: bytes, end: bool = False) -> None:
        with self.lock:
            out = sys.stdout.buffer
            if end:
                if not self._at_line_start.get(prefix, True):
                    out.write(b"\n")
                self._at_line_start[prefix] = True
                out.flush()
                return
            if prefix:
                lines = data.split(b"\n")
                start = self._at_line_start.get(prefix, True)
                for i, line in enumerate(lines):
                    if (i > 0 or start) and (line or i < len(lines) - 1):
                        out.write(prefix)
                    out.write(line)
                    if i < len(lines) - 1:
                        out.write(b"\n")
            else:
                out.write(data)
            if data:
                self._at_line_start[prefix] = data.endswith(b"\n")
            out.flush()

    def build_queued(self, build_id: int, at: datetime) -> None:
        return None

    def build_started(self, build_id: int, at: datetime, worker: str, node: int | None = None) -> bool:
        return True

    def action_started(self, build_id: int, action: Action) -> None:
        node = f" [dim](container {action.index})[/]" if self.parallelism > 1 else ""
        with self.lock:
            self.console.print(f"[bold cyan]▶ {escape(action.name)}[/]{node}")

    def log_writer(self, build_id: int, step: int, index: int) -> LogWriter:
        prefix = f"[{index}] ".encode() if self.parallelism > 1 else b""
        return _ConsoleWriter(self, prefix)

    def action_finished(self, build_id: int, action: Action) -> None:
        took = f"{(action.run_time_millis or 0) / 1000:.2f}s"
        code = f" exit {action.exit_code}" if action.exit_code not in (None, 0) else ""
        with self.lock:
            self.console.print(f"{_MARKS[action.status]} {escape(action.name)} [dim]({took}{code})[/]")

    def test_results(
        self, build_id: int, index: int, tests: list[dict[str, Any]], exceptions: list[dict[str, Any]]
    ) -> None:
        """Show the failing tests as they are found (the developer's first question)."""
        with self.lock:
            for test in tests:
                if test.get("result") in ("failure", "error"):
                    name = escape(f"{test.get('classname', '')} {test.get('name', '')}".strip())
                    where = f" [dim]({escape(str(test['file']))})[/]" if test.get("file") else ""
                    self.console.print(f"[red]✖ test {name}[/]{where}")

    def build_finished(
        self,
        build_id: int,
        outcome: Outcome,
        at: datetime,
        messages: tuple[Message, ...] = (),
        node: int | None = None,  # (a whole build here: JobRunner's node is None)
    ) -> None:
        self.outcome = outcome
        self.messages = messages


def run_local_build(
    tree: Path,
    *,
    job: str = "build",
    build_parameters: dict[str, Any] | None = None,
    console: Console | None = None,
) -> bool:
    """Run `job` of the tree's config; True when it succeeded."""
    # soft_wrap: lines are never cut at the terminal's (or a pipe's assumed) width.
    console = console or Console(stderr=False, highlight=False, soft_wrap=True)
    text = (tree / CONFIG_PATH).read_text() if (tree / CONFIG_PATH).is_file() else None
    if text is None:
        raise InvalidRequest(f"No {CONFIG_PATH} in {tree}")
    try:
        config = config_mod.load_config(text, filename=CONFIG_PATH)
        if job not in config.jobs:
            raise InvalidRequest(NO_SUCH_JOB.format(job=job))
        plan = config_mod.plan_job(config, job)
    except ConfigError as exc:
        for problem in exc.problems:
            console.print(f"[red]config error:[/] {escape(str(problem))}")
        return False
    is_repo = (tree / ".git").exists()
    sha = _git(tree, "rev-parse", "HEAD").strip() if is_repo else "0" * 40
    branch = _git(tree, "rev-parse", "--abbrev-ref", "HEAD").strip() if is_repo else "local"
    project = Project(id=0, vcs_type=VcsType.GITHUB, username="local", reponame=tree.name, repo_url=str(tree))
    build = Build(
        project_id=0,
        build_num=1,
        branch=branch if branch != "HEAD" else None,
        vcs_revision=sha,
        why=Why.LOCAL,
        build_parameters=build_parameters,
    )
    builtins = env_mod.builtin_environment(
        project=project,
        build=build,
        job_name=plan.name,
        base_url="http://localhost",
        working_directory=plan.working_directory,
    )
    environment = env_mod.job_environment(
        build_parameters=build_parameters, project_variables={}, builtins=builtins
    )
    reporter = ConsoleReporter(console, plan.parallelism)
    console.print(
        f"[bold]circlet build[/] {escape(str(tree))} job [bold]{escape(plan.name)}[/] at {sha[:12]}"
    )
    with tempfile.TemporaryDirectory(prefix="circlet-local-") as workspace:
        runner = JobRunner(
            workspace_root=Path(workspace),
            source=WorkingTreeSource(tree),
            reporter=reporter,
            worker="local",
            blobs=FileBlobStore(Path(workspace) / ".blobs"),  # artifacts, caches: for this run only
        )
        request = RunRequest(
            build_id=1,
            project=project,
            build_num=1,
            revision=sha,
            branch=build.branch,
            tag=None,
            plan=plan,
            environment=environment,
            parallelism=plan.parallelism,
        )
        started = datetime.now(UTC)
        try:
            outcome = runner.run(request)
        except KeyboardInterrupt:
            runner.cancel()
            outcome = Outcome.CANCELED
    for message in reporter.messages:
        console.print(f"[yellow]{message.type}:[/] {escape(message.message)}")
    took = (datetime.now(UTC) - started).total_seconds()
    colour = "green" if outcome is Outcome.SUCCESS else "red"
    console.print(f"[bold {colour}]{outcome.value}[/] in {took:.2f}s")
    return outcome is Outcome.SUCCESS
