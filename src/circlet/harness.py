"""Real parts for end-to-end tests and benchmarks: git repositories and a live server process.

Not used by circlet itself. Everything here runs the real thing: `git`, and `circlet serve`
as a subprocess on a loopback port with its own data folder.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ada Lovelace",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Charles Babbage",
    "GIT_COMMITTER_EMAIL": "charles@example.com",
    "GIT_AUTHOR_DATE": "2024-05-01T10:03:49-07:00",
    "GIT_COMMITTER_DATE": "2024-05-01T10:04:50-07:00",
}


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    full_env = {**os.environ, **GIT_ENV, **(env or {})}
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=full_env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr}")
    return done.stdout.strip()


def make_repo(
    path: Path,
    files: dict[str, str],
    *,
    branch: str = "main",
    message: str = "Initial commit\n\nWith a body line.",
) -> str:
    """A git repository at `path` with `files` committed on `branch`; returns the commit SHA."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", branch, str(path)], check=True)
    return commit_files(path, files, message=message)


def commit_files(repo: Path, files: dict[str, str], *, message: str = "Change") -> str:
    for name, text in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def config_yaml(steps: list[str | dict[str, Any]], *, job: str = "build", extra_job: str = "") -> str:
    """A version 2 config with one job whose steps are given as Python data."""
    import yaml

    doc = {"version": 2, "jobs": {job: {"docker": [{"image": "cimg/base:stable"}], "steps": steps}}}
    return yaml.safe_dump(doc, sort_keys=False) + extra_job


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """`circlet serve` in a subprocess with its own data folder, on a free loopback port."""

    def __init__(self, data_dir: Path, *, slots: int = 2, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "CIRCLET_DATA_DIR": str(data_dir),
            "CIRCLET_PORT": str(self.port),
            "CIRCLET_SLOTS": str(slots),
            "CIRCLET_LOG_LEVEL": "warning",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "circlet.cli", *args],
            capture_output=True,
            text=True,
            env=self.env,
            check=check,
        )

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "circlet.cli", "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(self.data_dir / 'server.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(self.base + "/api/v1.1/me", timeout=1)
            except urllib.error.HTTPError:
                return self  # it answered (401 without a token)
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not start in time")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def make_token(self) -> str:
        self.token = self.cli("token", "create").stdout.strip()
        return self.token

    def request(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if body is not None:
            req.add_header("Content-Type", "application/json")
        if token or self.token:
            req.add_header("Circle-Token", token or self.token)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def wait_finished(self, project: str, build_num: int, timeout: float = 30.0, poll: float = 0.02) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            status, build = self.request("GET", f"/api/v1.1/project/{project}/{build_num}")
            if (
                status == 200
                and build["lifecycle"] in ("finished", "not_run")
                and all(a["status"] != "running" for s in build["steps"] for a in s["actions"])
            ):
                return build
            if time.monotonic() > deadline:
                raise TimeoutError(f"build {build_num} did not finish: {build}")
            time.sleep(poll)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
