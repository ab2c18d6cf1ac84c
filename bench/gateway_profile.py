"""Where the server's CPU goes per build of a worker fleet: trigger + the gateway calls a worker
makes for a 3-step build, in this process, under cProfile.

The server is built as `circlet serve` builds it (celery executor, PostgreSQL, a private Redis
broker), but its background loops are not started and no worker runs: this script plays the
worker, making per build the calls a worker makes (`started`, four `reports` batches, the last
carrying the build's end, one log append) plus one heartbeat. FastAPI's thread pool is replaced
by inline calls so that every handler runs in this thread, where cProfile sees it.

Prints: CPU per build (this process, every thread: the journal writes in its own), PostgreSQL
statements per build, and the top functions by cumulative time.

Run: .venv/bin/python bench/gateway_profile.py [BUILDS=100] [--no-profile]
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))
import fastapi.routing
import starlette.concurrency
from _common import OUT

from circlet.bootstrap import build_services
from circlet.core.model import Action, ActionStatus
from circlet.core.workers import WorkerInfo
from circlet.executors import protocol
from circlet.harness import config_yaml, free_port, make_repo
from circlet.http.app import create_app
from circlet.remote import frames, gateway, tokens
from circlet.settings import load_settings

TOKEN = "profile-worker-token"
SLUG = "gh/bench/profile"


async def _inline(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


def _action(step: int, status: ActionStatus) -> dict[str, Any]:
    return protocol.encode_action(Action(step=step, index=0, name=f"step {step}", type="test", status=status))


async def one_build(http: httpx.AsyncClient, api_token: str, worker: dict[str, Any]) -> None:
    made = await http.post(f"/api/v1.1/project/{SLUG}/tree/main", headers={"Circle-Token": api_token})
    assert made.status_code == 201, made.text
    build_id = worker["id_of"](made.json()["build_num"])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    answer = await http.post(
        f"{gateway.PREFIX}/builds/{build_id}/started",
        json={"at": "2026-11-28T06:00:00Z", "worker": "w1"},
        headers=auth,
    )
    assert answer.json()["ok"], answer.text
    headers = {**auth, tokens.BUILD_TOKEN_HEADER: answer.json()["build_token"]}
    running, ok = ActionStatus.RUNNING, ActionStatus.SUCCESS
    batches: list[dict[str, Any]] = [
        {"actions": [{"op": "started", "action": _action(0, running)}]},
        {
            "actions": [
                {"op": "finished", "action": _action(0, ok)},
                {"op": "started", "action": _action(101, running)},
            ]
        },
        {
            "actions": [
                {"op": "finished", "action": _action(101, ok)},
                {"op": "started", "action": _action(102, running)},
            ]
        },
        {
            "actions": [{"op": "finished", "action": _action(102, ok)}],
            "finished": {"outcome": "success", "at": "2026-11-28T06:00:01Z", "messages": []},
        },
    ]
    for number, batch in enumerate(batches):
        if number == 2:
            body = frames.pack(b"hello\n", protocol.decode_time("2026-11-28T06:00:00Z"))
            appended = await http.post(
                f"{gateway.PREFIX}/builds/{build_id}/logs/101/0?offset=0", content=body, headers=headers
            )
            assert appended.status_code == 200, appended.text
        sent = await http.post(f"{gateway.PREFIX}/builds/{build_id}/reports", json=batch, headers=headers)
        assert sent.status_code == 200, sent.text
    beat = await http.post(f"{gateway.PREFIX}/heartbeat", json=worker["info"], headers=auth)
    assert beat.status_code == 200, beat.text


def main() -> None:
    builds = int(next((a for a in sys.argv[1:] if a.isdigit()), "100"))
    profile = "--no-profile" not in sys.argv
    fastapi.routing.run_in_threadpool = _inline  # type: ignore[assignment]
    starlette.concurrency.run_in_threadpool = _inline  # type: ignore[assignment]
    for name, module in list(sys.modules.items()):
        if name.startswith("circlet.") and hasattr(module, "run_in_threadpool"):
            module.run_in_threadpool = _inline

    OUT.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="circlet-gateway-profile-", dir=OUT))
    base = os.environ.get("CIRCLET_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    schema = f"circlet_profile_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    port = free_port()
    redis = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        make_repo(tmp / "repo", {".circleci/config.yml": config_yaml([{"run": "sleep 0.2"}] * 3)})
        settings = load_settings(
            {
                "CIRCLET_DATA_DIR": str(tmp / "data"),
                "CIRCLET_EXECUTOR": "celery",
                "CIRCLET_DATABASE_URL": f"{base}?options=-csearch_path%3D{schema}",
                "CIRCLET_BROKER_URL": f"redis://127.0.0.1:{port}/0",
                "CIRCLET_WORKER_TOKEN": TOKEN,
            }
        )
        app = build_services(settings)
        circlet = app.circlet
        project = circlet.add_project(
            vcs_type="gh", username="bench", reponame="profile", repo_url=str(tmp / "repo")
        )
        _, api_token = circlet.create_token(user=circlet.ensure_user("admin", admin=True))
        statements: Counter[str] = Counter()
        engine: sa.Engine = circlet.store._engine  # type: ignore[attr-defined]

        def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            statements[" ".join(statement.split())[:90]] += 1

        sa.event.listen(engine, "before_cursor_execute", count)

        def id_of(build_num: int) -> int:
            found = circlet.get_build(project, build_num).id
            assert found is not None
            return found

        info = WorkerInfo(
            name="w1", host="here", pid=1, resource_classes=("medium",), slots=2, busy=1
        ).to_dict()
        worker = {"id_of": id_of, "info": info}

        async def run(count: int) -> None:
            transport = httpx.ASGITransport(app=create_app(app.services))
            async with httpx.AsyncClient(transport=transport, base_url="http://local") as http:
                for _ in range(count):
                    await one_build(http, api_token, worker)

        asyncio.run(run(5))  # warm up
        profiler = cProfile.Profile()
        statements.clear()
        cpu = time.process_time()
        if profile:
            profiler.enable()
        asyncio.run(run(builds))
        if profile:
            profiler.disable()
        cpu = time.process_time() - cpu
        circlet.journal.flush()
        print(f"builds={builds} cpu_per_build_ms={cpu / builds * 1000:.1f} profiled={profile}")
        print(
            f"sql_statements_per_build={sum(statements.values()) / builds:.1f} (this script's id lookup: 1)"
        )
        for statement, times in statements.most_common(25):
            print(f"  {times / builds:5.2f}  {statement}")
        if profile:
            text = io.StringIO()
            stats = pstats.Stats(profiler, stream=text).sort_stats("cumulative")
            stats.print_stats(r"circlet/", 60)
            stats.print_callers(r"(get_build_by_id|previous_build|retries_of|_one|get_build)\b")
            print(text.getvalue())
        app.stop()
    finally:
        redis.terminate()
        redis.wait()
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
