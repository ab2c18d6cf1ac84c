"""End to end: the celery executor with real workers, PostgreSQL, Redis and RabbitMQ (issue #6).

Each test runs `circlet serve` (CIRCLET_EXECUTOR=celery, a fresh PostgreSQL schema) and
`circlet worker` processes on this machine. Redis is a private `redis-server` on a free port,
started by the test, so that it can be restarted (the shared one on 6379 is never touched).
The lost-worker timeout is shortened to a few seconds. Skipped only outside CI when a service is
missing (like tests/conftest.py does for PostgreSQL).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from circlet.harness import ServerProcess, config_yaml, free_port, make_repo

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

SLUG = "gh/acme/widget"
P = f"/api/v1.1/project/{SLUG}"
TOKEN = "test-worker-token-0123456789"
LOST_AFTER = 3.0
RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672//"


def _unavailable(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is not available (CI must provide it)")
    pytest.skip(f"{what} is not available")


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


class Redis:
    """A private redis-server without persistence: a restart empties it, like a lost broker."""

    def __init__(self, folder: Path, bind: str = "127.0.0.1") -> None:
        """`bind`: the address it listens on (and the URL names)."""
        binary = shutil.which("redis-server")
        if binary is None:
            _unavailable("redis-server")
        self.binary = str(binary)
        self.folder = folder
        self.bind = bind
        self.port = free_port()
        self.password = f"broker-secret-{self.port}"
        self.url = f"redis://:{self.password}@{bind}:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                self.bind,
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                self.password,
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _port_open(self.bind, self.port), 10, "redis-server")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Fleet:
    """A server and its workers, each a real process with its own folder."""

    def __init__(
        self, root: Path, database_url: str, broker_url: str, lost_after: float = LOST_AFTER
    ) -> None:
        self.root = root
        self.broker_url = broker_url
        self.env = {
            "CIRCLET_EXECUTOR": "celery",
            "CIRCLET_DATABASE_URL": database_url,
            "CIRCLET_BROKER_URL": broker_url,
            "CIRCLET_WORKER_TOKEN": TOKEN,
            "CIRCLET_WORKER_LOST_AFTER": str(lost_after),
            "CIRCLET_RESUBMIT_AFTER": "2",
            "CIRCLET_SANDBOX": "",  # workers: bubblewrap around steps
        }
        self.server = ServerProcess(root / "server", env=self.env)
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    def start_server(self) -> None:
        self.server.start()
        if not self.server.token:
            self.server.make_token()

    def restart_server(self) -> None:
        self.server.stop(signal.SIGKILL)
        port = self.server.port
        self.server.env["CIRCLET_PORT"] = str(port)
        self.server.start()

    def start_worker(
        self, name: str, *classes: str, slots: int = 2, credentials: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """`credentials`: write the secrets to this file (CIRCLET_WORKER_CREDENTIALS) instead of
        passing them in the environment."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        secrets = {"CIRCLET_WORKER_TOKEN": TOKEN, "CIRCLET_BROKER_URL": self.broker_url}
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CIRCLET_")},
            "CIRCLET_DATA_DIR": str(folder),
            "CIRCLET_SANDBOX": self.env["CIRCLET_SANDBOX"],
            "CIRCLET_LOG_LEVEL": "info",
        }
        if credentials is None:
            env.update(secrets)
        else:
            credentials.write_text("".join(f"{k}={v}\n" for k, v in secrets.items()))
            credentials.chmod(0o600)
            env["CIRCLET_WORKER_CREDENTIALS"] = str(credentials)
        args = [sys.executable, "-m", "circlet.cli", "worker", "--server", self.server.base, "--name", name]
        args += ["--slots", str(slots)]
        for c in classes or ("medium",):
            args += ["--resource-class", c]
        with open(folder / "worker.log", "ab") as log:
            proc = subprocess.Popen(
                args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.workers[name] = proc
        wait_for(lambda: self.worker(name) is not None, 30, f"worker {name} to report")
        return proc

    def kill_worker(self, name: str) -> None:
        proc = self.workers.pop(name)
        os.kill(proc.pid, signal.SIGKILL)  # the worker process alone, as a crash would
        proc.wait(10)

    def worker(self, name: str) -> dict[str, Any] | None:
        status, rows = self.server.request("GET", "/api/v1.1/admin/workers")
        assert status == 200, rows
        return next((w for w in rows if w["name"] == name and w["state"] == "alive"), None)

    def stop(self) -> None:
        for proc in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.workers.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        self.server.stop()

    def trigger(self, **body: Any) -> int:
        status, build = self.server.request("POST", f"{P}/tree/main", body or None)
        assert status == 201, build
        return int(build["build_num"])

    def build(self, num: int) -> dict[str, Any]:
        status, build = self.server.request("GET", f"{P}/{num}")
        assert status == 200, build
        return dict(build)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.parent.name}\n{p.read_text()[-4000:]}" for p in sorted(self.root.glob("*/*.log"))
        )


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    broker = Redis(tmp_path / "redis")
    broker.start()
    yield broker
    broker.stop()


def _repo(path: Path, steps: list[Any], resource_class: str | None = None) -> Path:
    config = config_yaml(steps)
    if resource_class is not None:
        config = config.replace("  build:\n", f"  build:\n    resource_class: {resource_class}\n", 1)
    make_repo(path, {".circleci/config.yml": config, "README.md": "widget\n"})
    return path


@pytest.fixture
def fleet_factory(tmp_path: Path, postgres_url: str) -> Iterator[Callable[..., Fleet]]:
    made: list[Fleet] = []

    def make(
        broker_url: str, steps: list[Any], resource_class: str | None = None, lost_after: float = LOST_AFTER
    ) -> Fleet:
        fleet = Fleet(tmp_path, postgres_url, broker_url, lost_after)
        fleet.start_server()
        repo = _repo(tmp_path / "repo", steps, resource_class)
        fleet.server.cli("project", "add", SLUG, "--repo", str(repo))
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.stop()


def _db_workers(database_url: str) -> dict[int, str]:
    """build_num -> the worker that ran it, read from the database (the API does not show it)."""
    import psycopg

    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT build_num, worker FROM builds").fetchall()
    return {int(num): str(worker) for num, worker in rows}


def _steps_alive(marker: str) -> list[int]:
    """Processes whose command line has `marker` (a unique sleep duration)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if marker.encode() in argv and state != "Z":
            found.append(int(entry))
    return found


def _process_report(marker: str) -> str:
    """The processes of the step and their ancestors (pid, ppid, pgid, state, argv), for a failure."""
    lines = []
    seen: set[int] = set()
    todo = _steps_alive(marker)
    while todo:
        pid = todo.pop()
        if pid in seen or pid <= 1:
            continue
        seen.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        lines.append(
            f"pid={pid} state={fields[0]} ppid={fields[1]} pgid={fields[2]} sid={fields[3]} {argv[:200]}"
        )
        todo.append(int(fields[1]))
    return "processes:\n" + "\n".join(lines)


def test_sixty_builds_spread_over_three_workers(
    redis: Redis, fleet_factory: Callable[..., Fleet], postgres_url: str
) -> None:
    fleet = fleet_factory(
        redis.url,
        [
            "checkout",
            {"run": {"name": "check", "command": "test -f README.md && echo node=$CIRCLE_NODE_INDEX"}},
            {"run": {"name": "fail on 13", "command": '[ "$CIRCLE_BUILD_NUM" != 13 ]'}},
        ],
    )
    for name in ("w1", "w2", "w3"):
        fleet.start_worker(name)

    with ThreadPoolExecutor(6) as pool:  # concurrent triggers: numbers must stay gapless
        nums = list(pool.map(lambda _: fleet.trigger(), range(60)))
    builds = [fleet.server.wait_finished(SLUG, n, timeout=120, poll=0.2) for n in nums]

    assert sorted(nums) == list(range(1, 61))  # unique and gapless
    outcomes = {b["build_num"]: b["outcome"] for b in builds}
    assert outcomes.pop(13) == "failed", fleet.logs()  # each build ran its own steps
    assert set(outcomes.values()) == {"success"}, fleet.logs()
    ran_on = Counter(_db_workers(postgres_url).values())
    assert set(ran_on) == {"w1", "w2", "w3"}, ran_on
    assert min(ran_on.values()) >= 5, ran_on  # spread, not one worker doing it all


def test_killed_worker_build_fails_naming_it_and_is_retried_elsewhere(
    redis: Redis, fleet_factory: Callable[..., Fleet], postgres_url: str
) -> None:
    marker = "61.25"
    fleet = fleet_factory(
        redis.url,
        [{"run": {"name": "slow once", "command": f'[ "$CIRCLE_BUILD_NUM" != 1 ] || sleep {marker}'}}],
    )
    fleet.start_worker("victim")
    num = fleet.trigger()
    wait_for(lambda: _steps_alive(marker), 30, "the step to run on the victim")
    fleet.start_worker("survivor")

    fleet.kill_worker("victim")
    killed_at = time.monotonic()
    lost = fleet.server.wait_finished(SLUG, num, timeout=LOST_AFTER + 20)

    assert time.monotonic() - killed_at < LOST_AFTER + 10
    assert lost["outcome"] == "infrastructure_fail"
    assert any("victim" in m["message"] for m in lost["messages"]), lost["messages"]
    retry = fleet.server.wait_finished(SLUG, num + 1, timeout=30)
    assert (retry["retry_of"], retry["why"], retry["outcome"]) == (num, "auto-retry", "success")
    assert _db_workers(postgres_url)[num + 1] == "survivor"
    assert fleet.build(num)["status"] == "retried"
    wait_for(lambda: not _steps_alive(marker), 15, "the lost worker's step to be killed")
    assert fleet.trigger() == num + 2  # exactly one retry was made


def _runner_processes(folder: Path) -> list[int]:
    """The worker's runner processes (remote_child) working in `folder`."""
    marker = str(folder).encode()
    return [
        pid
        for pid in _steps_alive("circlet.executors.remote_child")
        if any(marker in part for part in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
    ]


def test_crashed_runner_process_fails_its_build_which_is_retried(
    redis: Redis, fleet_factory: Callable[..., Fleet]
) -> None:
    marker = "63.5"
    fleet = fleet_factory(
        redis.url,
        [{"run": {"name": "slow once", "command": f'[ "$CIRCLE_BUILD_NUM" != 1 ] || sleep {marker}'}}],
        lost_after=30.0,  # the worker tells the server at once: no waiting out the timeout
    )
    fleet.start_worker("w1")
    num = fleet.trigger()
    wait_for(lambda: _steps_alive(marker), 30, "the step to run")

    killed = time.monotonic()
    for pid in _runner_processes(fleet.root / "w1"):  # as the OOM killer would
        os.kill(pid, signal.SIGKILL)

    wait_for(lambda: not _steps_alive(marker), 10, "the worker to kill the orphaned step")
    lost = fleet.server.wait_finished(SLUG, num, timeout=20)
    assert time.monotonic() - killed < 10  # (lost_after is 30 s)
    assert lost["outcome"] == "infrastructure_fail"
    assert any("runner process of worker w1" in m["message"] for m in lost["messages"]), lost["messages"]
    retry = fleet.server.wait_finished(SLUG, num + 1, timeout=30)
    assert (retry["retry_of"], retry["outcome"]) == (num, "success")  # the worker carries on


def test_server_restart_loses_no_build(redis: Redis, fleet_factory: Callable[..., Fleet]) -> None:
    # A worker fences its builds after 90% of lost_after without the server: the restart must be
    # shorter than that (30 s by default; 15 here, for a loaded test machine).
    fleet = fleet_factory(
        redis.url, [{"run": {"name": "work", "command": "sleep 1.5; echo done"}}], lost_after=15.0
    )
    fleet.start_worker("w1", slots=2)
    nums = [fleet.trigger() for _ in range(4)]  # two run, two wait
    wait_for(lambda: fleet.build(nums[0])["lifecycle"] == "running", 30, "a build to run")

    fleet.restart_server()

    builds = [fleet.server.wait_finished(SLUG, n, timeout=60, poll=0.1) for n in nums]
    assert [b["outcome"] for b in builds] == ["success"] * 4, fleet.logs()
    assert all(b["retry_of"] is None for b in builds)
    assert fleet.trigger() == nums[-1] + 1  # nothing was retried behind our back


def test_broker_restart_loses_no_build(redis: Redis, fleet_factory: Callable[..., Fleet]) -> None:
    fleet = fleet_factory(redis.url, [{"run": {"name": "work", "command": "sleep 1.5; echo done"}}])
    fleet.start_worker("w1", slots=1)
    nums = [fleet.trigger() for _ in range(3)]  # one runs, two wait in the broker
    wait_for(lambda: fleet.build(nums[0])["lifecycle"] == "running", 30, "a build to run")

    redis.stop()  # its queue, with the waiting builds' messages, is gone
    time.sleep(0.5)
    redis.start()

    builds = [fleet.server.wait_finished(SLUG, n, timeout=60, poll=0.1) for n in nums]
    assert [b["outcome"] for b in builds] == ["success"] * 3, fleet.logs()


def test_job_waits_for_a_worker_of_its_class(redis: Redis, fleet_factory: Callable[..., Fleet]) -> None:
    fleet = fleet_factory(redis.url, [{"run": "echo big"}], resource_class="large")
    fleet.start_worker("small", "medium")
    num = fleet.trigger()

    waiting = wait_for(lambda: (b := fleet.build(num))["messages"] and b, 15, "the build to say why it waits")
    assert waiting["lifecycle"] == "not_running"
    assert "resource class `large`" in waiting["messages"][0]["message"]
    time.sleep(2)
    assert fleet.build(num)["lifecycle"] == "not_running"  # never lost, never run elsewhere

    fleet.start_worker("big", "large", "xlarge")
    build = fleet.server.wait_finished(SLUG, num, timeout=30)
    assert build["outcome"] == "success"
    assert build["messages"] == []


def _output(fleet: Fleet, num: int, step_name: str) -> str:
    step = next((s for s in fleet.build(num)["steps"] if s["name"] == step_name), None)
    if step is None or not step["actions"][0].get("output_url"):
        return ""
    status, chunks = fleet.server.request(
        "GET", step["actions"][0]["output_url"].removeprefix(fleet.server.base)
    )
    return "".join(c["message"] for c in chunks) if status == 200 and chunks else ""


def test_live_output_and_cancel_reach_the_worker(redis: Redis, fleet_factory: Callable[..., Fleet]) -> None:
    marker = "62.75"
    fleet = fleet_factory(
        redis.url, [{"run": {"name": "long", "command": f"echo first-line; sleep {marker}"}}]
    )
    fleet.start_worker("w1")
    num = fleet.trigger()
    wait_for(lambda: _steps_alive(marker), 30, "the step to run", poll=0.02)
    printed = time.monotonic()  # (echo ran just before sleep started)

    wait_for(lambda: "first-line" in _output(fleet, num, "long"), 5, "the output in the API", poll=0.05)
    assert time.monotonic() - printed < 1.0  # live: within a second of being printed

    started = time.monotonic()
    status, _ = fleet.server.request("POST", f"{P}/{num}/cancel")
    assert status == 200
    try:
        wait_for(lambda: not _steps_alive(marker), 5, "the step to be killed", poll=0.02)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_process_report(marker)}\n{fleet.logs()}") from None

    assert time.monotonic() - started < 2.0
    assert fleet.server.wait_finished(SLUG, num, timeout=15)["outcome"] == "canceled"


def test_steps_cannot_find_the_workers_credentials(
    redis: Redis, fleet_factory: Callable[..., Fleet], tmp_path: Path
) -> None:
    secrets_file = tmp_path / "worker.credentials"
    # The secrets never appear in the step's own text or argv (grep would find itself in
    # /proc): they are written, base64-decoded, to a file grep reads its patterns from.
    encoded = base64.b64encode(f"{TOKEN}\n{redis.password}\n".encode()).decode()
    probe = "\n".join(
        [
            "set +e",
            f"echo {encoded} | base64 -d > ~/.needles",
            "found=0",
            "if env | grep -qFf ~/.needles; then echo found-in-env; found=1; fi",
            "if cat /proc/*/environ /proc/*/cmdline 2>/dev/null | grep -aqFf ~/.needles; then"
            " echo found-in-proc; found=1; fi",
            "if grep -rqsFf ~/.needles --exclude=.needles ~ /tmp; then echo found-in-files; found=1; fi",
            f"if cat '{secrets_file}' >/dev/null 2>&1; then echo read-credentials-file; found=1; fi",
            "ls /proc | grep -c '^[0-9]' | sed 's/^/processes-visible=/'",
            "exit $found",
        ]
    )
    fleet = fleet_factory(redis.url, [{"run": {"name": "look for secrets", "command": probe}}])
    fleet.start_worker("w1", credentials=secrets_file)

    num = fleet.trigger()
    build = fleet.server.wait_finished(SLUG, num, timeout=60)

    step = next(s for s in build["steps"] if s["name"] == "look for secrets")
    output_url = step["actions"][0]["output_url"]
    status, output = fleet.server.request("GET", output_url.removeprefix(fleet.server.base))
    assert status == 200, output
    text = "".join(chunk["message"] for chunk in output)
    assert build["outcome"] == "success", text + fleet.logs()
    assert "found-" not in text and "read-credentials-file" not in text
    # (the probe could look: it ran, and sees only its own sandbox's few processes)
    assert "processes-visible=" in text


def test_rabbitmq_broker(fleet_factory: Callable[..., Fleet]) -> None:
    if not _port_open("127.0.0.1", 5672):
        _unavailable("RabbitMQ on 127.0.0.1:5672")
    from circlet.executors.celery_app import make_celery, queue_name

    with make_celery(RABBIT_URL).connection_for_write() as conn:  # leftovers of an earlier run
        channel = conn.default_channel
        channel.queue_declare(queue_name("medium"), durable=True, auto_delete=False)
        channel.queue_purge(queue_name("medium"))
    fleet = fleet_factory(RABBIT_URL, ["checkout", {"run": "cat README.md"}])
    fleet.start_worker("w1")

    nums = [fleet.trigger() for _ in range(3)]

    assert [fleet.server.wait_finished(SLUG, n, timeout=60)["outcome"] for n in nums] == ["success"] * 3


def test_one_build_runs_on_a_worker(redis: Redis, fleet_factory: Callable[..., Fleet]) -> None:
    fleet = fleet_factory(
        redis.url, ["checkout", {"run": {"name": "hello", "command": "echo hello; cat README.md"}}]
    )
    fleet.start_worker("w1")

    num = fleet.trigger()
    build = fleet.server.wait_finished(SLUG, num, timeout=60)

    assert build["outcome"] == "success", fleet.logs()
    assert build["lifecycle"] == "finished"
