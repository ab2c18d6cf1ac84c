"""Test splitting by timings: 400 test files with known durations over 4 containers.

The first build has no history, so `circleci tests split --split-by=timings` falls back to name;
each container's fake runner "runs" its files (no sleeping: the durations are known) and writes a
JUnit report. Those reports are read with `circlet.results.collect`, turned into the
results.json the runner hands the next build, and the second build splits by timings with the
real `circleci` command (`python -m circlet.agent`, one subprocess per container).

Reported: longest container / ideal (total / 4) for the second build's timings split (target
<= 1.1) and for split-by=name, for comparison.

Run: .venv/bin/python bench/test_split.py [files] [containers]
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from xml.sax.saxutils import quoteattr

from circlet.results import collect, to_api

SRC = Path(__file__).resolve().parents[1] / "src"


def durations(count: int) -> dict[str, float]:
    """Deterministic pseudo-random durations, 0.05-3 s per test file."""
    rng = random.Random(20240401)
    return {f"tests/test_{n:03d}.py": round(rng.uniform(0.05, 3.0), 3) for n in range(count)}


def circleci(args: list[str], *, stdin: str, task_data: Path, index: int, total: int) -> list[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "CIRCLE_INTERNAL_TASK_DATA": str(task_data),
        "CIRCLE_NODE_INDEX": str(index),
        "CIRCLE_NODE_TOTAL": str(total),
    }
    done = subprocess.run(
        [sys.executable, "-m", "circlet.agent", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return done.stdout.split()


def build(
    files: dict[str, float], containers: int, split_by: str, work: Path, number: int
) -> list[list[str]]:
    """One build: every container splits, then its fake runner writes a JUnit report."""
    stdin = "\n".join(files) + "\n"
    shares = [
        circleci(["tests", "split", f"--split-by={split_by}"], stdin=stdin, task_data=work / "task",
                 index=i, total=containers)
        for i in range(containers)
    ]  # fmt: skip
    for index, share in enumerate(shares):
        report = work / f"build{number}" / f"node{index}" / "pytest" / "junit.xml"
        report.parent.mkdir(parents=True)
        cases = "".join(
            f"<testcase classname={quoteattr(name[:-3].replace('/', '.'))} name={quoteattr(f'test_{half}')}"
            f" file={quoteattr('./' + name)} time={quoteattr(str(files[name] / 2))}/>"
            for name in share
            for half in ("a", "b")
        )
        report.write_text(f'<testsuites><testsuite name="pytest">{cases}</testsuite></testsuites>')
    return shares


def save_history(work: Path, number: int, containers: int) -> None:
    """What the runner writes before the next build: the previous build's test records."""
    records = []
    for index in range(containers):
        cases, problems = collect(work / f"build{number}" / f"node{index}")
        assert not problems, problems
        records.extend(to_api(case) for case in cases)
    folder = work / "task" / "circle-test-results"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps({"tests": records, "files": [], "exceptions": []}))


def ratio(files: dict[str, float], shares: list[list[str]]) -> tuple[float, list[float]]:
    loads = [sum(files[name] for name in share) for share in shares]
    assert sorted(n for share in shares for n in share) == sorted(files), "every file exactly once"
    return max(loads) / (sum(files.values()) / len(shares)), loads


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    containers = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    files = durations(count)
    with tempfile.TemporaryDirectory(prefix="circlet-split-") as tmp:
        work = Path(tmp)
        first = build(files, containers, "timings", work, 1)  # no history: falls back to name
        save_history(work, 1, containers)
        second = build(files, containers, "timings", work, 2)
    by_name, name_loads = ratio(files, first)
    by_timings, timing_loads = ratio(files, second)
    ideal = sum(files.values()) / containers
    print(f"{count} files, {containers} containers, total {sum(files.values()):.2f} s, ideal {ideal:.2f} s")
    for label, value, loads in [
        ("first build (no history -> name)", by_name, name_loads),
        ("second build (timings)", by_timings, timing_loads),
    ]:
        print(f"{label:34} longest/ideal = {value:.4f}  loads {[round(x, 2) for x in loads]}")
    print(f"target <= 1.1: {'met' if by_timings <= 1.1 else 'MISSED'}")


if __name__ == "__main__":
    main()
