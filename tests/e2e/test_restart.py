"""End to end: a server killed with SIGKILL leaves no step behind.

The server's runner processes read its commands on their stdin; when the server dies the pipe
closes and each runner cancels what it runs. The restart recovery itself (builds left running
become infrastructure_fail, waiting ones run) is covered in test_server.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from circlet.harness import ServerProcess, config_yaml, make_repo

pytestmark = pytest.mark.timeout(90)

SLUG = "gh/acme/widget"
P = f"/api/v1.1/project/{SLUG}"


def alive(pid: int) -> bool:
    """A zombie awaiting its reaper counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def runner_processes(data_dir: Path) -> list[int]:
    """Live runner processes (circlet.executors.child) working for the server of `data_dir`."""
    marker = str(data_dir / "workspaces").encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"circlet.executors.child" in argv and marker in argv and alive(int(entry)):
            found.append(int(entry))
    return found


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def pidfile(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "sleep.pid"
    yield path
    if path.exists() and path.read_text().strip():  # never leave the sleep behind
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(path.read_text()), signal.SIGKILL)


@pytest.fixture
def server(tmp_path: Path, pidfile: Path) -> Iterator[ServerProcess]:
    repo = tmp_path / "widget"
    step = {"run": {"name": "long", "command": f"sleep 300 & echo $! > {pidfile}; wait"}}
    make_repo(repo, {".circleci/config.yml": config_yaml([step])})
    srv = ServerProcess(tmp_path / "data", slots=1)
    srv.start()
    try:
        srv.cli("project", "add", SLUG, "--repo", str(repo))
        srv.make_token()
        yield srv
    finally:
        srv.stop()
        for pid in runner_processes(srv.data_dir):
            os.kill(pid, signal.SIGKILL)


def _start_long_build(srv: ServerProcess, pidfile: Path) -> int:
    assert srv.request("POST", P + "/tree/main")[0] == 201
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "", 20, "the step to start")
    return int(pidfile.read_text())


def test_sigkill_of_the_server_kills_the_running_step(server: ServerProcess, pidfile: Path) -> None:
    sleep_pid = _start_long_build(server, pidfile)
    assert runner_processes(server.data_dir)
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGKILL)  # the server alone, as the OOM killer would
    server.proc.wait(5)

    wait_for(lambda: not alive(sleep_pid), 5, "the step's sleep to die after the server")
    wait_for(lambda: not runner_processes(server.data_dir), 5, "the runner process to exit")

    server.start()
    build = server.wait_finished(SLUG, 1)
    assert (build["outcome"], build["status"]) == ("infrastructure_fail", "infrastructure_fail")
