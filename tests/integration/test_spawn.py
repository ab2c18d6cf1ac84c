"""The two ways a step starts (glibc posix_spawn, Popen) give the same child."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from circlet.runner import spawn
from circlet.runner.process import StepProcess

PROBE = r"""
echo "cwd=$(pwd)"
echo "sid_is_pid=$([ "$(ps -o sid= -p $$ | tr -d ' ')" = "$$" ] && echo yes || echo no)"
echo "pgid_is_pid=$([ "$(ps -o pgid= -p $$ | tr -d ' ')" = "$$" ] && echo yes || echo no)"
echo "stdin=$(readlink /proc/$$/fd/0)"
echo "ignored=$(grep SigIgn /proc/$$/status | cut -f2)"
echo "blocked=$(grep SigBlk /proc/$$/status | cut -f2)"
echo "fds=$(ls /proc/$$/fd | sort -n | tr '\n' ' ')"
echo "to-stderr" >&2
echo "env=$PROBE_VALUE"
exit 7
"""


def run(tmp_path: Path, *, use_spawn: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, str], int]:
    if not use_spawn:
        monkeypatch.setattr(spawn, "available", lambda: False)
    script = tmp_path / "probe.sh"
    script.write_text(PROBE)
    chunks: list[bytes] = []
    proc = StepProcess(
        ["bash", str(script)], cwd=tmp_path, env={"PATH": os.environ["PATH"], "PROBE_VALUE": "x y"}
    )
    result = proc.pump(lambda data, at: chunks.append(data))
    lines = b"".join(chunks).decode().splitlines()
    assert "to-stderr" in lines
    return dict(line.split("=", 1) for line in lines if "=" in line), result.exit_code or 0


@pytest.mark.skipif(not spawn.available(), reason="glibc posix_spawn with chdir is not available here")
def test_spawn_and_popen_give_the_same_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, fast_code = run(tmp_path, use_spawn=True, monkeypatch=monkeypatch)
    slow, slow_code = run(tmp_path, use_spawn=False, monkeypatch=monkeypatch)
    assert fast_code == slow_code == 7
    assert fast["cwd"] == slow["cwd"] == str(tmp_path)
    assert fast["sid_is_pid"] == fast["pgid_is_pid"] == "yes"
    assert fast["stdin"] == slow["stdin"] == "/dev/null"
    assert fast["env"] == "x y"
    pipe_bit = 1 << (13 - 1)  # SIGPIPE: Python ignores it, a step must not
    assert int(fast["ignored"], 16) & pipe_bit == 0
    assert int(slow["ignored"], 16) & pipe_bit == 0
    assert fast["blocked"] == slow["blocked"]  # (bash blocks some signals itself while it waits)
    assert fast["fds"].split() == slow["fds"].split()  # nothing of the runner's leaks in


@pytest.mark.skipif(not spawn.available(), reason="glibc posix_spawn with chdir is not available here")
def test_spawn_errors_are_the_ones_popen_raises(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    try:
        with pytest.raises(FileNotFoundError):
            spawn.spawn(
                ["no-such-program-here"], cwd=str(tmp_path), env={"PATH": "/usr/bin"}, output_fd=write_fd
            )
        with pytest.raises(FileNotFoundError):
            spawn.spawn(["/bin/true"], cwd=str(tmp_path / "missing"), env={}, output_fd=write_fd)
        script = tmp_path / "not-executable"
        script.write_text("echo hi\n")
        with pytest.raises(PermissionError):
            spawn.spawn([str(script)], cwd=str(tmp_path), env={}, output_fd=write_fd)
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert subprocess.run(["true"], check=False).returncode == 0
