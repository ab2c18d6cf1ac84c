"""A worker cut off from the network loses nothing (issue #6): real server, PostgreSQL, Redis and
worker processes, as test_workers.py, with one worker ("far") in a network namespace of its own.

The namespace reaches the host through a veth pair; setting the host's end down cuts far off the
way a pulled cable does: its packets vanish, no connection is refused or reset. The server and the
private Redis listen on the host's end of the pair only. Needs root and iproute2 (`ip netns`):
skipped without them outside CI, a failure under CI=true.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_workers import (  # type: ignore[import-not-found]
    LOST_AFTER,
    SLUG,
    TOKEN,
    Fleet,
    Redis,
    _db_workers,
    _repo,
    _steps_alive,
    _unavailable,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

OLD = "64.125"  # the lost build's step: `sleep 64.125`, a command line no other process has
NEW = "2.375"  # the retry's step, long enough for the watcher below to see it run
BACKOFF_MAX = 5.0  # remote/client.py: a report resent after the cable is mended comes this late


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


@dataclass(frozen=True, kw_only=True)
class Cable:
    """A network namespace and the veth pair joining it to the host (a /30 of 10.213.0.0/16)."""

    netns: str
    host_dev: str
    host_addr: str  # the host's end: the server and Redis listen here
    far_addr: str

    def cut(self) -> None:
        done = _ip("link", "set", self.host_dev, "down")
        assert done.returncode == 0, done.stderr

    def mend(self) -> None:
        done = _ip("link", "set", self.host_dev, "up")
        assert done.returncode == 0, done.stderr


@pytest.fixture
def cable() -> Iterator[Cable]:
    if shutil.which("ip") is None:
        _unavailable("iproute2's `ip`")
    pid = os.getpid()
    third, fourth = divmod(pid % 16384 * 4, 256)  # a /30 per test process
    net = f"10.213.{third}"
    made = Cable(
        netns=f"circlet-far-{pid}",
        host_dev=f"cf{pid}h",
        host_addr=f"{net}.{fourth + 1}",
        far_addr=f"{net}.{fourth + 2}",
    )
    _ip("netns", "delete", made.netns)  # left by a crashed run of a process with our pid
    _ip("link", "delete", made.host_dev)
    added = _ip("netns", "add", made.netns)
    if added.returncode != 0:
        _unavailable(f"network namespaces (`ip netns add` needs root): {added.stderr.strip()}")
    try:
        far_dev = f"cf{pid}n"
        for args in (
            ("link", "add", made.host_dev, "type", "veth", "peer", "name", far_dev, "netns", made.netns),
            ("addr", "add", f"{made.host_addr}/30", "dev", made.host_dev),
            ("link", "set", made.host_dev, "up"),
            ("-n", made.netns, "addr", "add", f"{made.far_addr}/30", "dev", far_dev),
            ("-n", made.netns, "link", "set", far_dev, "up"),
            ("-n", made.netns, "link", "set", "lo", "up"),
        ):
            done = _ip(*args)
            assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr}"
        yield made
    finally:
        _ip("netns", "delete", made.netns)  # the veth pair goes with it...
        _ip("link", "delete", made.host_dev)  # ...unless a process still holds the namespace


@pytest.fixture
def host_redis(tmp_path: Path, cable: Cable) -> Iterator[Redis]:
    broker = Redis(tmp_path / "redis", bind=cable.host_addr)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def fleet(tmp_path: Path, postgres_url: str, cable: Cable, host_redis: Redis) -> Iterator[Fleet]:
    """A server on the host's end of the cable; its project's one step sleeps long in build 1
    only, so that its retry finishes."""
    made = Fleet(tmp_path, postgres_url, host_redis.url)
    made.server.env["CIRCLET_HOST"] = cable.host_addr
    # (the host keeps reaching its own end while the link is down: the test, near and Redis too)
    made.server.base = f"http://{cable.host_addr}:{made.server.port}"
    try:
        made.start_server()
        command = f'if [ "$CIRCLE_BUILD_NUM" = 1 ]; then sleep {OLD}; else sleep {NEW}; fi'
        repo = _repo(tmp_path / "repo", [{"run": {"name": "slow once", "command": command}}])
        made.server.cli("project", "add", SLUG, "--repo", str(repo))
        yield made
    finally:
        cable.mend()  # (a cut-off worker's goodbye would wait for its timeout)
        made.stop()


def start_far_worker(fleet: Fleet, cable: Cable, name: str) -> None:
    """Fleet.start_worker, inside the namespace (`ip netns exec` becomes the worker: same pid,
    so Fleet.stop ends it)."""
    folder = fleet.root / name
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CIRCLET_")},
        "CIRCLET_DATA_DIR": str(folder),
        "CIRCLET_SANDBOX": fleet.env["CIRCLET_SANDBOX"],
        "CIRCLET_LOG_LEVEL": "info",
        "CIRCLET_WORKER_TOKEN": TOKEN,
        "CIRCLET_BROKER_URL": fleet.broker_url,
    }
    args = ["ip", "netns", "exec", cable.netns, sys.executable, "-m", "circlet.cli", "worker"]
    args += ["--server", fleet.server.base, "--name", name, "--slots", "2", "--resource-class", "medium"]
    with open(folder / "worker.log", "ab") as log:
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    fleet.workers[name] = proc
    wait_for(lambda: fleet.worker(name) is not None, 30, f"worker {name} to report")


@dataclass
class StepWatch:
    """Samples /proc in a thread: when the lost build's step was last seen, when the retry's
    first, and any sample that saw both running."""

    poll: float = 0.02
    old_last: float | None = None
    new_first: float | None = None
    both: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            old, new = bool(_steps_alive(OLD)), bool(_steps_alive(NEW))
            now = time.monotonic()
            if old:
                self.old_last = now
            if new and self.new_first is None:
                self.new_first = now
            if old and new:
                self.both.append(now)
            self._stop.wait(self.poll)

    def __enter__(self) -> StepWatch:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def _state(fleet: Fleet, name: str) -> str | None:
    status, rows = fleet.server.request("GET", "/api/v1.1/admin/workers")
    assert status == 200, rows
    return next((str(w["state"]) for w in rows if w["name"] == name), None)


def _summary(build: dict[str, Any]) -> tuple[Any, ...]:
    actions = tuple((s["name"], a["status"]) for s in build["steps"] for a in s["actions"])
    return build["outcome"], build["status"], build["lifecycle"], actions, len(build["messages"])


def test_cut_off_worker_fences_its_build_which_is_retried_elsewhere(
    fleet: Fleet, cable: Cable, postgres_url: str
) -> None:
    start_far_worker(fleet, cable, "far")
    num = fleet.trigger()
    wait_for(lambda: _steps_alive(OLD), 30, "the step to run on far")
    fleet.start_worker("near")  # only now: the build cannot have gone to near

    with StepWatch() as watch:
        cable.cut()
        cut_at = time.monotonic()
        lost = fleet.server.wait_finished(SLUG, num, timeout=60)
        lost_after_s = time.monotonic() - cut_at
        retry = fleet.server.wait_finished(SLUG, num + 1, timeout=60)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not _steps_alive(OLD), 30, "far to fence its step")
    logs = fleet.logs()
    before = _summary(fleet.build(num))

    # The server noticed within 60 s (a few, with lost_after 3 s) and named the worker.
    assert lost_after_s < LOST_AFTER + 10, logs
    assert lost["outcome"] == "infrastructure_fail", logs
    assert any(m["message"].startswith("worker far ") for m in lost["messages"]), lost["messages"]
    assert _state(fleet, "far") == "lost"
    # The retry: a new build, on near.
    assert (retry["retry_of"], retry["why"], retry["outcome"]) == (num, "auto-retry", "success"), logs
    assert _db_workers(postgres_url)[num + 1] == "near"
    # Far stopped its step itself (the cable is still cut: no server told it to), and before the
    # retry's step started: the job never ran twice at once.
    assert watch.new_first is not None, "the watcher never saw the retry's step run"
    assert not _steps_alive(OLD), (
        f"far's step still runs {time.monotonic() - cut_at:.1f} s after the cut\n{logs}"
    )
    assert watch.old_last is not None
    assert not watch.both, (
        f"the job ran twice at once: the retry's step started {watch.new_first - cut_at:.2f} s after "
        f"the cut, far's step was last seen {watch.old_last - cut_at:.2f} s after it\n{logs}"
    )
    assert "event=build_fenced" in (fleet.root / "far" / "worker.log").read_text(), logs

    # Mended: far speaks again and is listed alive; its late reports, if any, change nothing.
    cable.mend()
    wait_for(lambda: fleet.worker("far") is not None, 45, "far to heartbeat again", poll=0.2)
    time.sleep(BACKOFF_MAX + 1)
    after = fleet.build(num)
    assert _summary(after) == before, fleet.logs()
    assert (after["outcome"], after["status"]) == ("infrastructure_fail", "retried")
    status, builds = fleet.server.request("GET", f"/api/v1.1/project/{SLUG}")
    assert status == 200, builds
    assert sorted((b["build_num"], b["retry_of"]) for b in builds) == [(num, None), (num + 1, num)]
