"""W2, latency: a 1-step job (`true`): wall time from the trigger request until the API shows it
finished. Target (issue 2): median <= 100 ms. Run: .venv/bin/python bench/w2_latency.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Bench, median

ROUNDS = 30


def main() -> None:
    bench = Bench()
    try:
        bench.set_steps([{"run": "true"}])
        for _ in range(3):
            bench.run_once(poll=0.001)
        walls = []
        for _ in range(ROUNDS):
            wall, build = bench.run_once(poll=0.001)
            assert build["outcome"] == "success"
            walls.append(wall)
    finally:
        bench.close()
    walls.sort()
    print(f"W2 trigger -> finished (1 step `true`), {ROUNDS} builds")
    print(
        f"  median {median(walls) * 1000:.1f} ms   min {walls[0] * 1000:.1f} ms   "
        f"p90 {walls[int(ROUNDS * 0.9)] * 1000:.1f} ms"
    )
    print("  target: median <= 100 ms (peers: Laminar 20 ms, act 66 ms)")


if __name__ == "__main__":
    main()
