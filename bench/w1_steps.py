"""W1, step overhead: a job of 100 `run: true` steps vs bare bash starting the same 100 processes.

Rounds alternate bare bash and circlet so that drift of the machine hits both; each round gives
a ratio and the median ratio is reported. Target (issue 2): circlet <= 1.5x bare shell, both
for build_time_millis and for the wall time from the trigger request until the API shows the
build finished (a client polling the shallow list every 20 ms).

Run: .venv/bin/python bench/w1_steps.py [rounds]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Bench, median, trigger_to_stop

STEPS = 100
POLL = 0.02  # seconds between polls of the shallow list (a watching client)


def bare_shell() -> float:
    script = "\n".join(["bash -eo pipefail -c true"] * STEPS)
    start = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True)
    return time.perf_counter() - start


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    bench = Bench()
    floors, builds, walls, ends = [], [], [], []
    try:
        bench.set_steps([{"run": "true"}] * STEPS)
        bench.run_once()  # warm the mirror and the runner
        for _ in range(rounds):
            floors.append(bare_shell())
            wall, build = bench.run_once(poll=POLL)
            assert build["outcome"] == "success", build["outcome"]
            walls.append(wall)
            ends.append(trigger_to_stop(build))
            builds.append(build["build_time_millis"] / 1000)
    finally:
        bench.close()
    build_ratio = median([b / f for b, f in zip(builds, floors, strict=True)])
    wall_ratio = median([w / f for w, f in zip(walls, floors, strict=True)])
    end_ratio = median([e / f for e, f in zip(ends, floors, strict=True)])
    print(f"W1 {STEPS} steps of `true`, {rounds} alternating rounds (medians)")
    print(f"  bare bash:                 {median(floors) * 1000:7.1f} ms")
    print(f"  circlet build_time_millis: {median(builds) * 1000:7.1f} ms   ratio {build_ratio:.2f}x")
    print(
        f"  circlet trigger->finished: {median(ends) * 1000:7.1f} ms   ratio {end_ratio:.2f}x"
        "   (request sent -> the build's stop_time)"
    )
    print(
        f"  ... seen by a client:      {median(walls) * 1000:7.1f} ms   ratio {wall_ratio:.2f}x"
        "   (polling the shallow list every 20 ms)"
    )
    print("  target: <= 1.5x (Python's own spawn of bash costs ~1.2x bash's, see docs/performance.md)")


if __name__ == "__main__":
    main()
