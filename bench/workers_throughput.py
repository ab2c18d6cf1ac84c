"""Workers (issue #6): throughput of the celery executor with 1, 2 and 4 workers of 2 slots, and
the dispatch overhead (trigger -> first step started), celery vs local executor.

- Throughput: 200 builds of a 3-step job (each step `sleep 0.2`), triggered from 8 threads;
  wall time from the first trigger to the last build finished, per fleet size; scaling ratios
  against 1 worker. Ideal: 2 slots x 0.6 s of sleeping per build.
- Dispatch: 20 builds one at a time on an idle fleet of one worker (and an idle local server of
  2 slots); seconds from sending the trigger to the first config step's start_time; median.

Needs PostgreSQL (CIRCLET_TEST_POSTGRES_URL or postgresql://postgres@127.0.0.1:5432/test) and
redis-server on PATH (a private one is started on a free port). Takes about 3-4 minutes.
CPU accounting: for each fleet, the CPU seconds (user + system, children included) spent by the
server's process tree, the workers' trees (worker, runner processes, bubblewrap, steps) and Redis
while the builds ran, per build; builds x CPU per build / CPUs is the floor of the wall time
on this machine whatever the fleet (PostgreSQL's backends are not counted: shared with others).

Run: .venv/bin/python bench/workers_throughput.py [BUILDS] [FLEETS, e.g. 1,4]
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from _common import OUT, PROJECT, P, median

from circlet.harness import ServerProcess, config_yaml, free_port, make_repo

TOKEN = "bench-worker-token"
STEPS = [{"run": "sleep 0.2"}] * 3
FLEETS = (1, 2, 4)
SLOTS = 2
DISPATCH_ROUNDS = 20


def _proc_cpu() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds of it and its reaped children) for every process."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        # after the command: state ppid ... utime(12) stime(13) cutime(14) cstime(15), 0-based from state
        found[int(entry)] = (int(fields[1]), sum(int(f) for f in fields[11:15]) / tick)
    return found


def _kind(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = b" ".join(argv).decode(errors="replace")
    if "remote_child" in text:
        return "runner"
    return "worker" if " worker " in text else "serve" if " serve" in text else Path(argv[0].decode()).name


def tree_detail(roots: list[int]) -> dict[str, float]:
    """CPU seconds by kind of process (own time, and reaped children's time apart)."""
    tick = os.sysconf("SC_CLK_TCK")
    procs = _proc_cpu()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[str, float] = {}
    todo, seen = list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in procs:
            continue
        seen.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        kind = _kind(pid)
        found[kind] = found.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
        reaped = (int(fields[13]) + int(fields[14])) / tick
        found[kind + "/children"] = found.get(kind + "/children", 0.0) + reaped
        todo.extend(children.get(pid, ()))
    return found


def postmasters() -> list[int]:
    """PostgreSQL's main processes (their trees hold every backend, reaped ones included)."""
    found = []
    procs = _proc_cpu()
    for pid, (ppid, _) in procs.items():
        if _comm(pid) == "postgres" and _comm(ppid) != "postgres":
            found.append(pid)
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def tree_cpu(roots: list[int]) -> float:
    """CPU seconds of the processes `roots` and every living descendant (reaped ones are in
    their parents' children time)."""
    procs = _proc_cpu()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in procs:
            continue
        seen.add(pid)
        total += procs[pid][1]
        todo.extend(children.get(pid, ()))
    return total


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Setup:
    def __init__(self) -> None:
        OUT.mkdir(exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix="circlet-bench-workers-", dir=OUT))
        self.repo = self.tmp / "repo"
        make_repo(self.repo, {".circleci/config.yml": config_yaml(STEPS), "README": "x\n"})
        base = os.environ.get("CIRCLET_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
        self.pg = base
        self.schema = f"circlet_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{self.schema}"')
        self.database_url = f"{base}?options=-csearch_path%3D{self.schema}"
        port = free_port()
        redis_bin = shutil.which("redis-server") or "redis-server"
        self.redis = subprocess.Popen(
            [redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        self.broker = f"redis://127.0.0.1:{port}/0"
        time.sleep(0.5)
        env = {
            "CIRCLET_EXECUTOR": "celery",
            "CIRCLET_DATABASE_URL": self.database_url,
            "CIRCLET_BROKER_URL": self.broker,
            "CIRCLET_WORKER_TOKEN": TOKEN,
        }
        self.server = ServerProcess(self.tmp / "server", env=env).start()
        self.server.cli("project", "add", PROJECT, "--repo", str(self.repo))
        self.server.make_token()
        self.workers: list[subprocess.Popen[bytes]] = []
        self.made = 0  # worker names are never reused

    def start_workers(self, count: int) -> None:
        for _ in range(count):
            self.made += 1
            folder = self.tmp / f"w{self.made}"
            folder.mkdir()
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("CIRCLET_")},
                "CIRCLET_DATA_DIR": str(folder),
                "CIRCLET_WORKER_TOKEN": TOKEN,
                "CIRCLET_BROKER_URL": self.broker,
                "CIRCLET_LOG_LEVEL": "warning",
            }
            argv = [sys.executable, "-m", "circlet.cli", "worker", "--server", self.server.base]
            argv += ["--slots", str(SLOTS), "--name", f"w{self.made}"]
            with open(folder / "worker.log", "ab") as log:
                self.workers.append(
                    subprocess.Popen(
                        argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
        deadline = time.monotonic() + 60
        while True:
            _, rows = self.server.request("GET", "/api/v1.1/admin/workers")
            if sum(1 for w in rows if w["state"] == "alive") >= len(self.workers):  # (old ones stopped)
                return
            assert time.monotonic() < deadline, "workers did not report"
            time.sleep(0.2)

    def stop_workers(self) -> None:
        for proc in self.workers:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.workers:
            proc.wait(60)
        self.workers = []
        time.sleep(1.0)  # their goodbye heartbeats

    def close(self) -> None:
        self.stop_workers()
        self.server.stop()
        self.redis.kill()
        with psycopg.connect(self.pg, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{self.schema}" CASCADE')
        shutil.rmtree(self.tmp, ignore_errors=True)


def trigger(server: ServerProcess) -> int:
    status, body = server.request("POST", P + "/tree/main")
    assert status == 201, body
    return int(body["build_num"])


def wait_all(server: ServerProcess, nums: list[int], timeout: float = 900) -> None:
    """Until every build finished. Cheap for the server (whose CPU is measured): one build is
    polled at a time, the lowest unfinished, every 0.1 s; builds finish roughly in order."""
    deadline = time.monotonic() + timeout
    pending = sorted(nums)
    while pending:
        _, row = server.request("GET", f"{P}/{pending[0]}")
        if row.get("lifecycle") == "finished":
            pending.pop(0)
            continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} builds did not finish")
        time.sleep(0.1)


def fetch_all(server: ServerProcess, nums: list[int]) -> list[dict[str, Any]]:
    return [server.request("GET", f"{P}/{n}")[1] for n in nums]


def throughput(setup: Setup, workers: int, builds: int) -> tuple[float, dict[str, float]]:
    """Wall seconds, and CPU seconds per build by part (server, workers, redis)."""
    setup.start_workers(workers)
    server_pid = setup.server.proc.pid if setup.server.proc else 0
    parts = {
        "server": lambda: tree_cpu([server_pid]),
        "workers": lambda: tree_cpu([w.pid for w in setup.workers]),
        "redis": lambda: tree_cpu([setup.redis.pid]),
    }
    pg = postmasters()
    try:
        before = {name: measure() for name, measure in parts.items()}
        pg_before = tree_cpu(pg)
        every = [server_pid, *(w.pid for w in setup.workers)]
        detail = tree_detail(every) if os.environ.get("BENCH_DETAIL") else {}
        start = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            nums = list(pool.map(lambda _: trigger(setup.server), range(builds)))
        wait_all(setup.server, nums)
        wall = time.perf_counter() - start
        cpu = {name: (measure() - before[name]) / builds for name, measure in parts.items()}
        # Every PostgreSQL backend of the machine, other work's too: an upper bound of ours.
        cpu["postgres (upper bound)"] = (tree_cpu(pg) - pg_before) / builds
        if detail:
            after = tree_detail(every)
            print({k: round((v - detail.get(k, 0.0)) / builds * 1000, 1) for k, v in after.items()})
        done = fetch_all(setup.server, nums)
    finally:
        setup.stop_workers()
    bad = [b["build_num"] for b in done if b["outcome"] != "success"]
    assert not bad, f"builds not successful: {bad}"
    return wall, cpu


def dispatch(server: ServerProcess) -> float:
    samples = []
    for _ in range(DISPATCH_ROUNDS):
        sent = time.time()
        num = trigger(server)
        wait_all(server, [num], timeout=60)
        build = fetch_all(server, [num])[0]
        first = next(s for s in build["steps"] if s["name"] != "Spin up Environment")
        samples.append(_time(first["actions"][0]["start_time"]) - sent)
    return median(samples)


def local_dispatch(tmp: Path) -> float:
    repo = tmp / "local-repo"
    make_repo(repo, {".circleci/config.yml": config_yaml(STEPS), "README": "x\n"})
    server = ServerProcess(tmp / "local", slots=SLOTS).start()
    try:
        server.cli("project", "add", PROJECT, "--repo", str(repo))
        server.make_token()
        return dispatch(server)
    finally:
        server.stop()


def main() -> None:
    builds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    fleets = tuple(int(n) for n in sys.argv[2].split(",")) if len(sys.argv) > 2 else FLEETS
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs", flush=True)
    setup = Setup()
    walls: dict[int, float] = {}
    try:
        for count in fleets:
            walls[count], cpu = throughput(setup, count, builds)
            total = sum(cpu.values())
            floor = builds * total / (os.cpu_count() or 1)
            print(
                f"{count} worker(s) x {SLOTS} slots: {builds} builds in {walls[count]:.1f} s "
                f"({builds / walls[count]:.2f} builds/s); CPU per build "
                + ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in cpu.items())
                + f" = {total * 1000:.0f} ms -> floor {floor:.1f} s on {os.cpu_count()} CPUs",
                flush=True,
            )
        celery_ms = local_ms = 0.0
        if fleets == FLEETS:  # (a quick profile of some fleets skips the dispatch figures)
            setup.start_workers(1)
            celery_ms = dispatch(setup.server) * 1000
            local_ms = local_dispatch(setup.tmp) * 1000
    finally:
        setup.close()
    ideal = builds * 0.6 / SLOTS
    print(f"\nideal for 1 worker (sleeping only): {ideal:.0f} s")
    for count in fleets if 1 in walls else ():
        print(f"scaling {count} worker(s): {walls[1] / walls[count]:.2f}x (ideal {count}x)")
    print(
        f"dispatch trigger -> first step started, median of {DISPATCH_ROUNDS}: "
        f"celery {celery_ms:.0f} ms, local {local_ms:.0f} ms"
    )
    print(f"(machine: {os.cpu_count()} CPUs, shared with other work while measured)")


if __name__ == "__main__":
    main()
