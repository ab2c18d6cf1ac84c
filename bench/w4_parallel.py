"""W4, parallel jobs: a workflow of 8 independent jobs, each one step `sleep 1`, triggered once.

Wall time from the trigger request until the last job's build has its stop_time, against the
ideal (1 s: all 8 at once). The local executor runs at most CIRCLET_SLOTS builds at once (default:
the CPU count), so the figure is printed for 2, 4 and 8 slots: with fewer slots than jobs the
jobs queue (2 slots: 4 rounds, ~4 s). Peers run all 8 at once (BENCHMARKS.md: Laminar 1.07 s).

Run: .venv/bin/python bench/w4_parallel.py [rounds]
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _common import Bench, P, median

JOBS = 8


def config() -> str:
    jobs = {
        f"job{i}": {"docker": [{"image": "cimg/base:stable"}], "steps": [{"run": "sleep 1"}]}
        for i in range(JOBS)
    }
    doc = {"version": 2, "jobs": jobs, "workflows": {"version": 2, "all": {"jobs": list(jobs)}}}
    return yaml.safe_dump(doc, sort_keys=False)


def stop_time(build: dict[str, Any]) -> float:
    return datetime.fromisoformat(build["stop_time"].replace("Z", "+00:00")).timestamp()


def one_round(bench: Bench, seen: set[int]) -> float:
    sent = time.time()
    status, body = bench.server.request("POST", P + "/build", {"branch": "main"})
    assert status == 200, body
    deadline = time.monotonic() + 120
    while True:
        _, builds = bench.server.request("GET", P + f"?limit={JOBS * 2}&shallow=true")
        mine = [b for b in builds if b["build_num"] not in seen]
        if len(mine) == JOBS and all(b["lifecycle"] == "finished" for b in mine):
            break
        assert time.monotonic() < deadline, "the workflow did not finish"
        time.sleep(0.02)
    seen.update(b["build_num"] for b in mine)
    full = [bench.server.request("GET", f"{P}/{b['build_num']}")[1] for b in mine]
    assert all(b["outcome"] == "success" for b in full), [b["outcome"] for b in full]
    return max(stop_time(b) for b in full) - sent


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(f"W4 a workflow of {JOBS} jobs of `sleep 1`, trigger -> last stop_time (median of {rounds})")
    for slots in (2, 4, 8):
        bench = Bench(slots=slots)
        try:
            bench.set_config(config())
            seen: set[int] = set()
            one_round(bench, seen)  # warm the mirror and the runner processes
            walls = [one_round(bench, seen) for _ in range(rounds)]
        finally:
            bench.close()
        wall = median(walls)
        print(f"  {slots} slots: {wall:.2f} s = {wall / 1.0:.2f}x the ideal (1 s)")
    print("  peers (BENCHMARKS.md): Laminar 1.07 s, act 1.23 s; target: within 1.05x of the ideal")


if __name__ == "__main__":
    main()
