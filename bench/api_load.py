"""Issue 3 figures: API throughput and latency under 32 concurrent connections (wrk).

1. GET of a finished build with 100 steps x 4 containers (404 actions).
2. GET /recent-builds (30 builds, the default page) with 10,000 builds stored.
Targets: single build >= 1,500 req/s and p99 <= 50 ms; recent-builds p99 <= 50 ms.

Needs `wrk` (Debian package). Run: .venv/bin/python bench/api_load.py [seconds]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import PROJECT, Bench

from circlet.core.model import Build, Lifecycle, Outcome, Why
from circlet.store.sql import SqlBuildStore, make_engine

STORED = 10_000


def wrk(url: str, token: str, seconds: int) -> tuple[float, float, str]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            "-c32",
            f"-d{seconds}s",
            "--latency",
            "-H",
            f"Circle-Token: {token}",
            "-H",
            "Accept: application/json",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99_text = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99_text is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99_text.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, float(p99_text.group(1)) * scale, f"non-2xx {non2xx.group(1)}" if non2xx else "all 2xx"


def seed(bench: Bench, count: int) -> None:
    """Store finished builds straight through the SQL store (what 10,000 past builds leave)."""
    store = SqlBuildStore(make_engine(f"sqlite:///{bench.tmp / 'data' / 'circlet.db'}"))
    project = store.get_project("github", "bench", "repo")
    assert project is not None and project.id is not None
    start = datetime.now(UTC) - timedelta(days=30)
    last: dict[str, Outcome] = {}
    for n in range(count):
        at = start + timedelta(minutes=4 * n)
        branch = f"branch-{n % 50}"
        outcome = Outcome.SUCCESS if n % 7 else Outcome.FAILED
        # the status build_finished records: fixed after a failure on the same branch
        status = (
            "fixed" if outcome is Outcome.SUCCESS and last.get(branch) is Outcome.FAILED else outcome.value
        )
        last[branch] = outcome
        store.create_build(
            Build(
                project_id=project.id,
                branch=branch,
                job_name="build",
                vcs_revision=f"{n:040x}",
                why=Why.API,
                lifecycle=Lifecycle.FINISHED,
                outcome=outcome,
                extra={"status": status},
                usage_queued_at=at,
                queued_at=at,
                start_time=at,
                stop_time=at + timedelta(seconds=42),
            )
        )


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    bench = Bench(slots=2)
    try:
        steps = [{"run": "true"}] * 100
        bench.set_steps(steps)
        config = (bench.repo / ".circleci" / "config.yml").read_text()
        bench.set_config(config.replace("    steps:", "    parallelism: 4\n    steps:", 1))
        _, build = bench.run_once(timeout=120)
        actions = sum(len(s["actions"]) for s in build["steps"])
        assert build["outcome"] == "success" and actions == 404, (build["outcome"], actions)
        num = build["build_num"]
        started = time.perf_counter()
        seed(bench, STORED)
        print(f"stored {STORED} more builds in {time.perf_counter() - started:.1f} s")
        base = bench.server.base + "/api/v1.1"
        token = bench.server.token
        single = f"{base}/project/{PROJECT.replace('gh/', 'github/')}/{num}"
        rps, p99, codes = wrk(single, token, seconds)
        print(
            f"GET build with 100 steps x 4 containers: {rps:,.0f} req/s, p99 {p99:.1f} ms ({codes})"
            "   target >= 1,500 req/s, p99 <= 50 ms"
        )
        rps, p99, codes = wrk(f"{base}/recent-builds", token, seconds)
        print(
            f"GET /recent-builds (30 of {STORED + 1}): {rps:,.0f} req/s, p99 {p99:.1f} ms ({codes})"
            "   target p99 <= 50 ms"
        )
        rps, p99, codes = wrk(f"{base}/project/github/bench/repo?limit=100&shallow=true", token, seconds)
        print(f"GET project builds, limit 100, shallow: {rps:,.0f} req/s, p99 {p99:.1f} ms ({codes})")
        bench.server.stop()
        cold(bench, num)
    finally:
        bench.close()


def cold(bench: Bench, num: int) -> None:
    """What a request costs when nothing is cached (the build or its project just changed)."""
    from circlet.bootstrap import build_services
    from circlet.core.ports import BuildQuery
    from circlet.settings import load_settings
    from circlet.wire import build_details, build_summary

    app = build_services(load_settings({"CIRCLET_DATA_DIR": str(bench.tmp / "data")}))
    svc, links = app.circlet, app.services.links
    project = svc.get_project("gh", "bench", "repo")

    def timed(render: Callable[[], object], rounds: int = 20) -> float:
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            json.dumps(render())
            times.append(time.perf_counter() - start)
        return sorted(times)[rounds // 2] * 1000

    single = timed(lambda: build_details(svc.view(project, svc.get_build(project, num)), links))
    projects = {project.id or 0: project}
    one_by_one = timed(
        lambda: [
            build_summary(svc.view(project, b, details=False), links)
            for b in svc.list_builds(BuildQuery(limit=30))
        ]
    )
    recent = timed(  # as the API renders a page (service list_views)
        lambda: [
            build_summary(view, links)
            for view in svc.list_views(projects, svc.list_builds(BuildQuery(limit=30)), whole=True)
        ]
    )
    print(
        f"uncached render, median: build with 404 actions {single:.1f} ms; recent-builds page {recent:.1f} ms"
        f" (a view per build: {one_by_one:.1f} ms)"
    )


if __name__ == "__main__":
    main()
