"""W3, output: one step printing N MB of text, through the runner into storage.

Reports throughput (bytes / the step's run time) and the server's peak RSS, for 200 MB and 1 GB.
Targets (issue 2): >= 300 MB/s, server peak memory <= 150 MB whatever the size.
Run: .venv/bin/python bench/w3_output.py [MB ...]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Bench

LINE = "x" * 99  # 100-byte lines with the newline


def command(mb: int) -> str:
    return f"set +o pipefail; yes {LINE} | head -c {mb * 1_000_000}"


def floor(mb: int) -> float:
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        subprocess.run(["bash", "-c", command(mb)], stdout=out, check=True)
        return time.perf_counter() - start


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [200, 1000]
    bench = Bench(slots=1)
    try:
        for mb in sizes:
            bench.set_steps([{"run": {"name": "print", "command": command(mb)}}])
            wall, build = bench.run_once(timeout=600)
            assert build["outcome"] == "success", build
            action = build["steps"][-1]["actions"][0]
            secs = action["run_time_millis"] / 1000
            size = bench.tmp / "data" / "logs"
            stored = sum(f.stat().st_size for f in size.rglob("*.log"))
            base = floor(mb)
            print(
                f"W3 {mb} MB: step {secs:.2f}s = {mb / secs:.0f} MB/s "
                f"(bare bash into a file: {base:.2f}s = {mb / base:.0f} MB/s, ratio {secs / base:.2f}x); "
                f"trigger->finished {wall:.2f}s; "
                f"peak RSS so far: server {bench.server_peak_rss_mib():.0f} MiB, "
                f"runner process {bench.runner_peak_rss_mib():.0f} MiB; "
                f"logs on disk {stored / 1e6:.0f} MB"
            )
    finally:
        bench.close()
    print("  targets: >= 300 MB/s, server peak RSS <= 150 MB (the runner process too)")


if __name__ == "__main__":
    main()
