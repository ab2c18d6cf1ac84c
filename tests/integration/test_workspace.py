"""persist_to_workspace / attach_workspace between jobs of one workflow: real JobRunners, real tar,
the filesystem blob store; the workflow is given as the workflows part will (RunRequest fields)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from circlet.core.model import ActionStatus, Outcome
from circlet.core.plan import PlannedStep, StepKind
from circlet.store.blobs_fs import FileBlobStore
from circlet.testing.blobs import run_steps

WORKFLOW = "5f0c1a8e-0000-4000-8000-000000000001"


def run(command: str) -> PlannedStep:
    return PlannedStep(kind=StepKind.RUN, name=command, command=command)


def persist(root: str, *paths: str) -> PlannedStep:
    return PlannedStep(
        kind=StepKind.PERSIST_TO_WORKSPACE,
        name="Persisting to Workspace",
        args={"root": root, "paths": list(paths)},
    )


def attach(at: str) -> PlannedStep:
    return PlannedStep(kind=StepKind.ATTACH_WORKSPACE, name="Attaching Workspace", args={"at": at})


@pytest.fixture
def blobs(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path / "blobs")


def job(blobs: FileBlobStore, tmp_path: Path, build_id: int, steps: list[PlannedStep], **kw: Any) -> Any:
    kw.setdefault("workflow_id", WORKFLOW)
    return run_steps(
        steps, blobs=blobs, workspaces=tmp_path / "ws", build_id=build_id, build_num=build_id, **kw
    )


def test_a_downstream_job_attaches_what_upstream_jobs_persisted(blobs: FileBlobStore, tmp_path: Path) -> None:
    outcome, build = job(
        blobs,
        tmp_path,
        1,
        [
            run(
                "mkdir -p dist/js .hidden && echo app > dist/app.bin && echo js > dist/js/a.js && "
                "echo h > .hidden/x"
            ),
            run("echo a > a.txt && echo b > b.txt && echo c > c.log"),
            persist(".", "dist", "*.txt", ".hidden"),
        ],
    )
    assert outcome is Outcome.SUCCESS, build.log(103)
    assert "Stored 5 files" in build.log(103)
    outcome, test = job(
        blobs,
        tmp_path,
        2,
        [run("mkdir -p out && echo report > out/r.xml"), persist("out", ".")],
    )
    assert outcome is Outcome.SUCCESS, test.log(102)
    outcome, deploy = job(
        blobs,
        tmp_path,
        3,
        [
            attach("/tmp/../" + str(tmp_path / "attached").lstrip("/")),
            attach("~/ws"),
            run(
                "cat ~/ws/dist/app.bin ~/ws/dist/js/a.js ~/ws/a.txt ~/ws/b.txt ~/ws/r.xml ~/ws/.hidden/x; "
                "test ! -e ~/ws/c.log"
            ),
        ],
        upstream_build_ids=(1, 2),
    )
    assert outcome is Outcome.FAILED  # the attach point outside the build is refused...
    assert "outside this build's directories" in deploy.log(101)
    outcome, deploy = job(
        blobs,
        tmp_path,
        4,
        [
            attach("~/ws"),
            run(
                "cat ~/ws/dist/app.bin ~/ws/dist/js/a.js ~/ws/a.txt ~/ws/b.txt ~/ws/r.xml ~/ws/.hidden/x; "
                "test ! -e ~/ws/c.log"
            ),
        ],
        upstream_build_ids=(1, 2),
    )
    assert outcome is Outcome.SUCCESS, deploy.log(101) + deploy.log(102)
    assert deploy.log(102) == "app\njs\na\nb\nreport\nh\n"
    assert "Attaching the workspace at" in deploy.log(101) and "2 layers" in deploy.log(101)


def test_only_upstream_jobs_of_the_same_workflow_count(blobs: FileBlobStore, tmp_path: Path) -> None:
    job(blobs, tmp_path, 1, [run("echo 1 > one"), persist(".", "one")])
    job(blobs, tmp_path, 2, [run("echo 2 > two"), persist(".", "two")], workflow_id="another-workflow")
    outcome, reporter = job(blobs, tmp_path, 3, [attach("w"), run("ls w")], upstream_build_ids=(1,))
    assert outcome is Outcome.SUCCESS
    assert reporter.log(102) == "one\n"
    outcome, alone = job(blobs, tmp_path, 4, [attach("w"), run("ls -A w")], upstream_build_ids=())
    assert outcome is Outcome.SUCCESS and alone.log(102) == ""
    assert "No workspace layers to attach" in alone.log(101)


def test_the_later_finished_layer_wins_with_a_warning(blobs: FileBlobStore, tmp_path: Path) -> None:
    job(blobs, tmp_path, 1, [run("echo first > same && echo 1 > only1"), persist(".", "*")])
    time.sleep(0.02)
    job(blobs, tmp_path, 2, [run("echo second > same"), persist(".", "same")])
    outcome, reporter = job(
        blobs, tmp_path, 3, [attach("w"), run("cat w/same w/only1")], upstream_build_ids=(2, 1)
    )
    assert outcome is Outcome.SUCCESS
    assert reporter.log(102) == "second\n1\n"
    assert (
        "Warning: same is in the workspace layers of builds 1 and 2; the later-finished (build 2) wins"
        in (reporter.log(101))
    )


def test_several_persist_steps_each_add_a_layer(blobs: FileBlobStore, tmp_path: Path) -> None:
    job(
        blobs,
        tmp_path,
        1,
        [run("echo x > x"), persist(".", "x"), run("echo y > y"), persist(".", "y")],
    )
    outcome, reporter = job(blobs, tmp_path, 2, [attach("w"), run("cat w/x w/y")], upstream_build_ids=(1,))
    assert outcome is Outcome.SUCCESS and reporter.log(102) == "x\ny\n"


@pytest.mark.parametrize(
    ("step", "words"),
    [
        pytest.param(persist(".", "nothing*"), "did not match any files", id="no-match"),
        pytest.param(persist(".", "../.."), "may not contain '..'", id="dotdot"),
        pytest.param(persist("/etc", "hostname"), "outside this build's directories", id="root-outside"),
        pytest.param(persist(".", "leak"), "outside this build's directories", id="symlink-outside"),
        pytest.param(persist("missing", "x"), "is not a directory", id="missing-root"),
    ],
)
def test_bad_persist_steps_fail_with_a_message(
    blobs: FileBlobStore, tmp_path: Path, step: PlannedStep, words: str
) -> None:
    outcome, reporter = job(blobs, tmp_path, 1, [run("ln -s /etc leak"), step])
    assert outcome is Outcome.FAILED and reporter.status(102) is ActionStatus.FAILED
    assert words in reporter.log(102)
    assert blobs.list("") == []


def test_a_job_outside_any_workflow_persists_to_its_own_workspace(
    blobs: FileBlobStore, tmp_path: Path
) -> None:
    outcome, reporter = job(blobs, tmp_path, 9, [run("echo z > z"), persist(".", "z")], workflow_id=None)
    assert outcome is Outcome.SUCCESS
    assert [i.key for i in blobs.list("workspaces/")] == [
        "workspaces/build-9/9/00102-0.json",
        "workspaces/build-9/9/00102-0.tar",
    ]
    assert "Stored 1 files" in reporter.log(102)
