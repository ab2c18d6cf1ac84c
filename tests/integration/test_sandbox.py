"""The step sandbox (runner/sandbox.py) with real bubblewrap, real runner processes and steps.

The main test starts a runner process the way a worker holds its credentials (a secret in its
environment, on its command line and in a file) and runs a step that hunts for the secret in
every /proc/*/environ and /proc/*/cmdline, its own environment and the file. Without the
sandbox the step finds it everywhere (so the test can fail); with it, nowhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from circlet.core.model import ActionStatus, Outcome, Project, VcsType
from circlet.core.plan import JobPlan, PlannedStep, StepKind
from circlet.core.ports import RunRequest
from circlet.runner import sandbox
from circlet.runner.process import StepProcess, group_alive
from circlet.runner.run import JobRunner
from circlet.runner.sandbox import Sandbox
from circlet.testing import FakeSourceHost, RecordingReporter

pytestmark = pytest.mark.skipif(not os.access(sandbox.BWRAP, os.X_OK), reason="bubblewrap is not installed")

PROJECT = Project(id=1, vcs_type=VcsType.GITHUB, username="acme", reponame="widget", repo_url="/none")
SECRET = "hunter2-" + "b3d1a7c9e5f1"

# The step: builds the pattern from two halves (so no process's argv or environment holds it
# whole), then looks everywhere a step could look.
HUNT = r"""
printf '%s%s' "$HALF_A" "$HALF_B" > "$HOME/pattern"
seen=0
for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do
  seen=$((seen+1))
  if grep -a -q -F -f "$HOME/pattern" "$f" 2>/dev/null; then echo "FOUND ${f#/proc/}"; fi
done
if env | grep -q -F -f "$HOME/pattern"; then echo "FOUND own-environment"; fi
if grep -q -F -f "$HOME/pattern" "$SECRET_FILE" 2>/dev/null; then echo "FOUND secret-file"; fi
ls /proc | grep -c '^[0-9]' | sed 's/^/PROCESSES /'
echo "LOOKED $seen"
"""

RUNNER = r"""
import json, sys
from pathlib import Path
from circlet.core.model import Project, VcsType
from circlet.core.plan import JobPlan, PlannedStep, StepKind
from circlet.core.ports import RunRequest
from circlet.runner import sandbox
from circlet.runner.run import JobRunner
from circlet.testing import FakeSourceHost, RecordingReporter

mode, root, data_dir, secret_file, script = sys.argv[1:6]  # sys.argv[6:] holds the secret
if mode == "bwrap":
    hidden = sandbox.default_hidden(data_dir=Path(data_dir), extra=[Path(secret_file).parent])
    sandbox.configure(sandbox.Sandbox(workspace_root=Path(root), hidden=hidden))
step = PlannedStep(kind=StepKind.RUN, name="hunt", command=Path(script).read_text())
plan = JobPlan(name="build", steps=(step,))
project = Project(id=1, vcs_type=VcsType.GITHUB, username="acme", reponame="widget", repo_url="/none")
request = RunRequest(
    build_id=7, project=project, build_num=1, revision="a" * 40, branch="main", tag=None, plan=plan,
    environment={"HALF_A": "hunter2-", "HALF_B": "b3d1a7c9e5f1", "SECRET_FILE": secret_file},
)
reporter = RecordingReporter()
outcome = JobRunner(workspace_root=Path(root), source=FakeSourceHost(), reporter=reporter).run(request)
print(json.dumps({"outcome": outcome.value, "log": reporter.log(101)}))
"""


def hunt(tmp_path: Path, mode: str) -> tuple[str, str]:
    data_dir = tmp_path / mode / "data"
    root = data_dir / "workspaces"
    secrets_dir = tmp_path / mode / "etc-circlet"
    secrets_dir.mkdir(parents=True)
    secret_file = secrets_dir / "worker.env"
    secret_file.write_text(f"CIRCLET_WORKER_TOKEN={SECRET}\n")
    (tmp_path / "hunt.sh").write_text(HUNT)
    (tmp_path / "runner.py").write_text(RUNNER)
    env = {
        **os.environ,
        "CIRCLET_WORKER_TOKEN": SECRET,
        "CIRCLET_BROKER_URL": f"redis://:{SECRET}@127.0.0.1:6379/0",
    }
    done = subprocess.run(
        [
            *(sys.executable, str(tmp_path / "runner.py"), mode, str(root), str(data_dir), str(secret_file)),
            *(str(tmp_path / "hunt.sh"), "--token", SECRET),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["outcome"], result["log"]


def test_without_the_sandbox_a_step_finds_the_workers_secret(tmp_path: Path) -> None:
    outcome, log = hunt(tmp_path, "none")
    assert outcome == "success", log
    found = [line for line in log.splitlines() if line.startswith("FOUND")]
    assert any(line.endswith("/environ") for line in found), log  # the runner's /proc/<pid>/environ
    assert any(line.endswith("/cmdline") for line in found), log  # ... and its command line
    assert "FOUND secret-file" in found, log
    assert "FOUND own-environment" not in found  # the job environment never had it


def test_in_the_sandbox_a_step_finds_no_secret(tmp_path: Path) -> None:
    outcome, log = hunt(tmp_path, "bwrap")
    assert outcome == "success", log
    assert "FOUND" not in log, log
    looked = int(log.split("LOOKED ")[1].split()[0])
    assert looked >= 4, log  # it did read /proc entries: its own processes, and only those
    processes = int(log.split("PROCESSES ")[1].split()[0])
    assert processes < 10, log  # a fresh PID namespace, not the machine's processes


# ---------------------------------------------------------------- in-process: cancel, streaming


@pytest.fixture
def boxed(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "data" / "workspaces"
    root.mkdir(parents=True)
    sandbox.configure(Sandbox(workspace_root=root, hidden=(tmp_path / "data",)))
    try:
        yield root
    finally:
        sandbox.configure(None)


def build_dir(root: Path) -> Path:
    folder = root / "9" / "node0"
    folder.mkdir(parents=True)
    return folder


def test_the_build_folder_and_tmp_are_writable_the_rest_read_only(boxed: Path, tmp_path: Path) -> None:
    node = build_dir(boxed)
    other = boxed / "8"
    other.mkdir()
    (other / "theirs.txt").write_text("other build")
    script = (
        "echo hi > ok.txt && echo tmp > /tmp/t.txt && "
        f"(ls {other} 2>&1 || true) && (touch /usr/x 2>&1 || true) && (touch /etc/y 2>&1 || true) && "
        f"touch {tmp_path}/z"
    )
    proc = StepProcess(
        ["/bin/bash", "-c", script], cwd=node, env={"PATH": "/usr/bin:/bin", "HOME": str(node)}
    )
    chunks: list[bytes] = []
    result = proc.pump(lambda data, at: chunks.append(data))
    out = b"".join(chunks).decode()
    assert result.exit_code == 0, out
    assert (node / "ok.txt").read_text() == "hi\n"
    assert sandbox.host_path(Path("/tmp/t.txt"), node).read_text() == "tmp\n"  # <build>/tmp
    assert "theirs.txt" not in out and "No such file" in out  # another build's folder is not there
    assert out.count("Read-only file system") == 2, out
    assert not (tmp_path / "z").exists()  # the host's /tmp is not the step's


def test_cancel_kills_the_sandboxed_group_and_a_term_trap_still_runs(boxed: Path) -> None:
    node = build_dir(boxed)
    script = "trap 'echo trapped; exit 7' TERM; echo started; sleep 30 & sleep 31 & wait"
    proc = StepProcess(["/bin/bash", "-c", script], cwd=node, env={"PATH": "/usr/bin:/bin"})
    chunks: list[bytes] = []
    first = threading.Event()

    def on_output(data: bytes, at: object) -> None:
        chunks.append(data)
        first.set()

    result_box: list[object] = []
    pumping = threading.Thread(target=lambda: result_box.append(proc.pump(on_output)))
    pumping.start()
    assert first.wait(5), "no output while the step runs: output must stream"
    started = time.monotonic()
    proc.cancel()
    pumping.join(10)
    assert time.monotonic() - started < 2.0
    assert b"trapped" in b"".join(chunks)
    assert not group_alive(proc.pgid)  # bwrap, its init and both sleeps are gone


def test_a_job_runs_in_the_sandbox_with_its_environment_only(boxed: Path) -> None:
    plan = JobPlan(
        name="build",
        steps=(
            PlannedStep(kind=StepKind.RUN, name="a", command="echo $JOB_VAR > /tmp/x; pwd"),
            PlannedStep(kind=StepKind.RUN, name="b", command="cat /tmp/x; echo pid=$$"),
        ),
    )
    request = RunRequest(
        build_id=5, project=PROJECT, build_num=1, revision="a" * 40, branch="main", tag=None,
        plan=plan, environment={"JOB_VAR": "from-the-job"},
    )  # fmt: skip
    reporter = RecordingReporter()
    outcome = JobRunner(workspace_root=boxed, source=FakeSourceHost(), reporter=reporter).run(request)
    assert outcome is Outcome.SUCCESS, reporter.log(101) + reporter.log(102)
    assert reporter.status(102) is ActionStatus.SUCCESS
    assert "from-the-job" in reporter.log(102)  # /tmp is kept from step to step within the build
    assert "pid=" in reporter.log(102) and int(reporter.log(102).split("pid=")[1]) < 10  # its own PIDs


# ---------------------------------------------------------------- the worker's own credentials

SCRUBBING_WORKER = r"""
import os, subprocess, sys
from circlet.remote.credentials import load_worker_credentials, scrub_environment
creds = load_worker_credentials()
removed = scrub_environment()
inherited = subprocess.run(["env"], capture_output=True, text=True).stdout
print(creds.worker_token == sys.argv[1], creds.broker_url.endswith("@broker:6379/0"), sorted(removed),
      sys.argv[1] in inherited, "CIRCLET_WORKER_TOKEN" in os.environ, flush=True)
sys.stdin.read()
"""


def test_a_worker_reads_its_credentials_then_scrubs_them_from_its_environment(tmp_path: Path) -> None:
    creds = tmp_path / "worker.env"
    creds.write_text(
        f"# circlet worker\nCIRCLET_WORKER_TOKEN={SECRET}\nexport CIRCLET_BROKER_URL='redis://:{SECRET}@broker:6379/0'\n"
    )
    creds.chmod(0o600)
    env = {
        **os.environ,
        "CIRCLET_WORKER_CREDENTIALS": str(creds),
        "CIRCLET_SERVER_URL": "http://server:8080",
        "CIRCLET_WORKER_TOKEN": SECRET,  # also in the environment: it must go as well
    }
    # The check program gets the secret as its argument so that it can compare; the worker's
    # /proc/<pid>/environ is what is inspected.
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRUBBING_WORKER, SECRET],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    names = "['CIRCLET_WORKER_CREDENTIALS', 'CIRCLET_WORKER_TOKEN']"  # the broker URL was in the file only
    assert line == f"True True {names} False False", line
    assert SECRET.encode() not in environ  # the block /proc shows was overwritten
    assert b"CIRCLET_SERVER_URL=http://server:8080" in environ  # nothing else was touched


def test_credentials_must_name_the_token_and_the_server(tmp_path: Path) -> None:
    from circlet.remote.credentials import CredentialsError, load_worker_credentials

    with pytest.raises(CredentialsError, match="CIRCLET_WORKER_TOKEN, CIRCLET_SERVER_URL"):
        load_worker_credentials({})
    bad = tmp_path / "bad.env"
    bad.write_text("just a line\n")
    with pytest.raises(CredentialsError, match=r"bad.env:1: expected KEY=VALUE"):
        load_worker_credentials({"CIRCLET_WORKER_CREDENTIALS": str(bad)})


def test_enable_follows_the_setting_and_the_role(tmp_path: Path) -> None:
    root = tmp_path / "data" / "workspaces"
    try:
        assert sandbox.enable("", worker=False, workspace_root=root) is None  # local executor
        assert sandbox.current() is None
        box = sandbox.enable("", worker=True, workspace_root=root)  # `circlet worker`
        assert box is not None and sandbox.current() is box
        assert tmp_path / "data" in box.hidden
        assert sandbox.enable("none", worker=True, workspace_root=root) is None
        assert sandbox.current() is None
    finally:
        sandbox.configure(None)
    problem = sandbox.probe(Sandbox(workspace_root=root, bwrap="/nonexistent/bwrap"))
    assert problem is not None and "install bubblewrap or set CIRCLET_SANDBOX=none" in problem
