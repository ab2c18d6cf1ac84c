"""Shared set-up for the benchmarks: a live server on loopback and a real repository."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from circlet.harness import ServerProcess, commit_files, config_yaml, make_repo

PROJECT = "gh/bench/repo"
# Like the default data folder (~/.local/share/circlet), not /tmp: on some machines /tmp sits on a
# layer where creating a file costs 10-20x more, which would measure the sandbox, not circlet.
OUT = Path(__file__).resolve().parent / "out"
P = f"/api/v1.1/project/{PROJECT}"


class Bench:
    """A server with one project whose config can be replaced between runs."""

    def __init__(self, slots: int = 2) -> None:
        OUT.mkdir(exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix="circlet-bench-", dir=OUT))
        self.repo = self.tmp / "repo"
        make_repo(self.repo, {".circleci/config.yml": config_yaml([{"run": "true"}]), "README": "x\n"})
        self.server = ServerProcess(self.tmp / "data", slots=slots).start()
        self.server.cli("project", "add", PROJECT, "--repo", str(self.repo))
        self.server.make_token()

    def set_steps(self, steps: list[Any]) -> None:
        self.set_config(config_yaml(steps))

    def set_config(self, text: str) -> None:
        commit_files(self.repo, {".circleci/config.yml": text}, message="bench")

    def trigger(self) -> int:
        status, body = self.server.request("POST", P + "/tree/main")
        assert status == 201, body
        return int(body["build_num"])

    def run_once(self, poll: float = 0.002, timeout: float = 600) -> tuple[float, dict[str, Any]]:
        """Trigger, then poll until the API shows the build finished; (wall seconds, build).
        The build gets `_sent_at`: the wall-clock time the trigger request was sent."""
        sent_at = time.time()
        start = time.perf_counter()
        num = self.trigger()
        deadline = start + timeout
        while True:  # poll the cheap shallow summary, as a watching client would
            _, (latest,) = self.server.request("GET", P + "?limit=1&shallow=true")
            if latest["build_num"] == num and latest["lifecycle"] == "finished":
                break
            if time.perf_counter() > deadline:
                raise TimeoutError(f"build {num} did not finish")
            time.sleep(poll)
        wall = time.perf_counter() - start
        build = self.server.request("GET", f"{P}/{num}")[1]
        build["_sent_at"] = sent_at
        return wall, build

    def server_peak_rss_mib(self) -> float:
        assert self.server.proc is not None
        return peak_rss_mib(self.server.proc.pid)

    def runner_peak_rss_mib(self) -> float:
        """The largest peak among the server's runner processes (its direct children)."""
        assert self.server.proc is not None
        children = (
            Path(f"/proc/{self.server.proc.pid}/task/{self.server.proc.pid}/children").read_text().split()
        )
        return max((peak_rss_mib(int(pid)) for pid in children), default=float("nan"))

    def close(self) -> None:
        self.server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def trigger_to_stop(build: dict[str, Any]) -> float:
    """Seconds from sending the trigger request to the build's stop_time (same machine clock)."""
    from datetime import datetime

    stop = datetime.fromisoformat(build["stop_time"].replace("Z", "+00:00")).timestamp()
    return stop - float(build["_sent_at"])


def median(values: list[float]) -> float:
    return statistics.median(values)
