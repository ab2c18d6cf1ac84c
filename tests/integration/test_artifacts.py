"""store_artifacts with a real JobRunner, real files and the filesystem blob store."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from circlet.core.blobkeys import artifacts_prefix, parse_artifact_key
from circlet.core.model import ActionStatus, Outcome
from circlet.core.plan import PlannedStep, StepKind
from circlet.store.blobs_fs import FileBlobStore
from circlet.testing.blobs import run_steps


def run(command: str) -> PlannedStep:
    return PlannedStep(kind=StepKind.RUN, name=command, command=command)


def store(path: str, destination: str | None = None, **extra: str) -> PlannedStep:
    args = {"path": path, **({"destination": destination} if destination else {}), **extra}
    return PlannedStep(kind=StepKind.STORE_ARTIFACTS, name="Uploading artifacts", args=args)


@pytest.fixture
def blobs(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path / "blobs")


def stored(blobs: FileBlobStore, build_id: int = 42) -> dict[tuple[int, str], bytes]:
    out = {}
    for info in blobs.list(artifacts_prefix(build_id)):
        parsed = parse_artifact_key(info.key)
        assert parsed is not None
        with blobs.open(info.key) as stream:
            out[parsed] = stream.read()
    return out


def test_a_directory_and_a_file_with_and_without_destination(blobs: FileBlobStore, tmp_path: Path) -> None:
    outcome, reporter = run_steps(
        [
            run(
                "mkdir -p out/sub && echo a > out/a.txt && printf 'b' > out/sub/b.bin && echo r > report.html"
            ),
            store("out"),
            store("out", destination="/reports/./x/"),
            store("report.html", destination="html"),
            store("~/project/report.html"),
        ],
        blobs=blobs,
        workspaces=tmp_path / "ws",
    )
    assert outcome is Outcome.SUCCESS, reporter.log(102)
    assert stored(blobs) == {
        (0, "project/out/a.txt"): b"a\n",
        (0, "project/out/sub/b.bin"): b"b",
        (0, "reports/x/a.txt"): b"a\n",
        (0, "reports/x/sub/b.bin"): b"b",
        (0, "html/report.html"): b"r\n",
        (0, "project/report.html"): b"r\n",
    }
    assert "Uploaded 2 artifacts (3 B)" in reporter.log(102)


def test_absolute_working_directory_names_are_the_absolute_path(blobs: FileBlobStore, tmp_path: Path) -> None:
    workdir = tmp_path / "abs" / "src"
    outcome, reporter = run_steps(
        [run("mkdir -p logs && echo x > logs/1.log"), store("logs")],
        blobs=blobs,
        workspaces=tmp_path / "ws",
        working_directory=str(workdir),
    )
    assert outcome is Outcome.SUCCESS, reporter.log(102)
    assert stored(blobs) == {(0, f"{str(workdir).lstrip('/')}/logs/1.log"): b"x\n"}


def test_a_missing_path_warns_and_the_step_succeeds(blobs: FileBlobStore, tmp_path: Path) -> None:
    outcome, reporter = run_steps([store("nothing-here")], blobs=blobs, workspaces=tmp_path / "ws")
    assert outcome is Outcome.SUCCESS
    assert "Warning: artifact path" in reporter.log(101) and "does not exist" in reporter.log(101)
    assert stored(blobs) == {}


@pytest.mark.parametrize(
    ("setup", "path"),
    [
        pytest.param("true", "/etc/hostname", id="absolute-outside"),
        pytest.param("true", "../../../../..", id="dotdot-outside"),
        pytest.param("ln -s /etc link", "link", id="symlink-dir-outside"),
        pytest.param("ln -s /etc/hostname leak", "leak", id="symlink-file-outside"),
    ],
)
def test_a_path_outside_the_build_is_refused(
    blobs: FileBlobStore, tmp_path: Path, setup: str, path: str
) -> None:
    outcome, reporter = run_steps([run(setup), store(path)], blobs=blobs, workspaces=tmp_path / "ws")
    assert outcome is Outcome.FAILED
    assert reporter.status(102) is ActionStatus.FAILED
    assert "outside this build's directories" in reporter.log(102)
    assert stored(blobs) == {}


def test_tmp_paths_work_without_the_sandbox_but_not_tmp_itself(blobs: FileBlobStore, tmp_path: Path) -> None:
    """CircleCI's docs store `/tmp/artifacts`: without the sandbox that is the machine's /tmp."""
    shared = Path(tempfile.mkdtemp(prefix="circlet-artifacts-", dir="/tmp"))
    try:
        outcome, reporter = run_steps(
            [run(f"echo hi > {shared}/a.txt"), store(str(shared)), store("/tmp")],
            blobs=blobs,
            workspaces=tmp_path / "ws",
        )
        assert reporter.status(102) is ActionStatus.SUCCESS, reporter.log(102)
        assert stored(blobs) == {(0, f"{str(shared).lstrip('/')}/a.txt"): b"hi\n"}
        assert reporter.status(103) is ActionStatus.FAILED  # all of /tmp: other builds' files
        assert "outside this build's directories" in reporter.log(103)
        assert outcome is Outcome.FAILED
    finally:
        shutil.rmtree(shared)


def test_symlinks_inside_a_directory(blobs: FileBlobStore, tmp_path: Path) -> None:
    secret = tmp_path / "secret.key"
    secret.write_text("server secret")
    outcome, reporter = run_steps(
        [
            run(
                "mkdir -p out/real && echo in > out/real/f && ln -s real/f out/inside && "
                f"ln -s {secret} out/leak && ln -s real out/dirlink && ln -s missing out/broken"
            ),
            store("out"),
        ],
        blobs=blobs,
        workspaces=tmp_path / "ws",
    )
    log = reporter.log(102)
    assert outcome is Outcome.FAILED  # the leak is refused: the step fails after storing the rest
    assert stored(blobs) == {(0, "project/out/inside"): b"in\n", (0, "project/out/real/f"): b"in\n"}
    assert "Refused" in log and f"(which resolves to {secret})" in log
    assert "a symbolic link to a directory; not followed" in log
    assert "a broken symbolic link; skipped" in log
    assert "1 path refused" in log


def test_destination_with_dotdot_is_refused(blobs: FileBlobStore, tmp_path: Path) -> None:
    outcome, reporter = run_steps(
        [run("echo a > a"), store("a", destination="../../other-build")],
        blobs=blobs,
        workspaces=tmp_path / "ws",
    )
    assert outcome is Outcome.FAILED
    assert "may not contain '..'" in reporter.log(102)


def test_artifacts_are_kept_per_node_and_run_after_a_failure(blobs: FileBlobStore, tmp_path: Path) -> None:
    outcome, reporter = run_steps(
        [run("echo $CIRCLE_NODE_INDEX > n.txt; exit 1"), store("n.txt", destination="d")],
        blobs=blobs,
        workspaces=tmp_path / "ws",
    )
    assert outcome is Outcome.FAILED
    assert reporter.status(102) is ActionStatus.SUCCESS
    assert stored(blobs) == {(0, "d/n.txt"): b"0\n"}


def test_a_fifo_does_not_hang_the_step(blobs: FileBlobStore, tmp_path: Path) -> None:
    outcome, reporter = run_steps(
        [
            run("mkdir out && mkfifo out/pipe && mkfifo single && echo ok > out/ok"),
            store("out"),
            store("single"),
        ],
        blobs=blobs,
        workspaces=tmp_path / "ws",
    )
    assert stored(blobs) == {(0, "project/out/ok"): b"ok\n"}
    assert reporter.status(102) is ActionStatus.SUCCESS  # special files in a folder are left out
    assert reporter.status(103) is ActionStatus.FAILED and "not a regular file" in reporter.log(103)
    assert outcome is Outcome.FAILED


def test_many_files_are_stored_whole(blobs: FileBlobStore, tmp_path: Path) -> None:
    source = tmp_path / "big"
    source.mkdir()
    (source / "large.bin").write_bytes(os.urandom(3 << 20))
    outcome, reporter = run_steps(
        [run(f"cp -r {source} big && for i in $(seq 1 120); do echo $i > big/f$i; done"), store("big")],
        blobs=blobs,
        workspaces=tmp_path / "ws",
    )
    assert outcome is Outcome.SUCCESS
    found = stored(blobs)
    assert len(found) == 121 and found[(0, "project/big/large.bin")] == (source / "large.bin").read_bytes()
    assert "... and 71 more" in reporter.log(102)


def test_each_container_stores_its_own_artifacts(blobs: FileBlobStore, tmp_path: Path) -> None:
    outcome, _ = run_steps(
        [run("mkdir out && echo node $CIRCLE_NODE_INDEX > out/n.txt"), store("out", destination="o")],
        blobs=blobs,
        workspaces=tmp_path / "ws",
        parallelism=2,
    )
    assert outcome is Outcome.SUCCESS
    assert stored(blobs) == {(0, "o/n.txt"): b"node 0\n", (1, "o/n.txt"): b"node 1\n"}
