"""W1, step overhead: a job of 100 `run: true` steps vs bare bash starting the same 100 processes.

Target (issue 2): circlet <= 1.5x bare shell. Run: .venv/bin/python bench/w1_steps.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Bench, median

STEPS = 100
ROUNDS = 5


def bare_shell() -> float:
    script = "\n".join(["bash -eo pipefail -c true"] * STEPS)
    start = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True)
    return time.perf_counter() - start


def main() -> None:
    floor = median([bare_shell() for _ in range(ROUNDS)])
    bench = Bench()
    try:
        bench.set_steps([{"run": "true"}] * STEPS)
        bench.run_once()  # warm the mirror and caches
        walls, millis = [], []
        for _ in range(ROUNDS):
            wall, build = bench.run_once(poll=float(sys.argv[1]) if len(sys.argv) > 1 else 0.02)
            assert build["outcome"] == "success", build["outcome"]
            walls.append(wall)
            millis.append(build["build_time_millis"] / 1000)
    finally:
        bench.close()
    print(f"W1 {STEPS} steps of `true`, median of {ROUNDS}")
    print(f"  bare bash:                 {floor * 1000:8.1f} ms")
    print(
        f"  circlet build_time_millis: {median(millis) * 1000:8.1f} ms  ratio {median(millis) / floor:.2f}x"
    )
    print(f"  circlet trigger->finished: {median(walls) * 1000:8.1f} ms  ratio {median(walls) / floor:.2f}x")
    print("  target: <= 1.5x")


if __name__ == "__main__":
    main()
