"""The runner's own file steps under the step sandbox: real bubblewrap, real tar, real JobRunners.

A sandboxed step cannot write outside its build, but the runner's restore_cache and
attach_workspace run tar for it: a symbolic link the step planted (`~/deps -> <elsewhere>`) must
not let tar write through it. The same plan without the sandbox writes through the link (steps
there can write anywhere themselves): that run shows the tests can fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from circlet.core.model import ActionStatus, Outcome
from circlet.core.plan import PlannedStep, StepKind
from circlet.runner import sandbox
from circlet.runner.sandbox import Sandbox
from circlet.store.blobs_fs import FileBlobStore
from circlet.testing.blobs import run_steps

pytestmark = pytest.mark.skipif(not os.access(sandbox.BWRAP, os.X_OK), reason="bubblewrap is not installed")

WORKFLOW = "5f0c1a8e-0000-4000-8000-0000000000aa"


def run(command: str) -> PlannedStep:
    return PlannedStep(kind=StepKind.RUN, name=command, command=command)


def step(kind: StepKind, **args: Any) -> PlannedStep:
    return PlannedStep(kind=kind, name=kind.value, args=args)


@pytest.fixture(params=["bwrap", "none"])
def mode(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "data" / "workspaces"
    root.mkdir(parents=True)
    if request.param == "bwrap":
        sandbox.configure(Sandbox(workspace_root=root, hidden=(tmp_path / "data",)))
    try:
        yield str(request.param)
    finally:
        sandbox.configure(None)


@pytest.fixture
def boxed(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "data" / "workspaces"
    root.mkdir(parents=True)
    sandbox.configure(Sandbox(workspace_root=root, hidden=(tmp_path / "data",)))
    try:
        yield "bwrap"
    finally:
        sandbox.configure(None)


def job(tmp_path: Path, build_id: int, steps: list[PlannedStep], **kw: Any) -> Any:
    blobs = FileBlobStore(tmp_path / "blobs")
    return run_steps(
        steps,
        blobs=blobs,
        workspaces=tmp_path / "data" / "workspaces",
        build_id=build_id,
        build_num=build_id,
        **kw,
    )


def test_attach_workspace_does_not_write_through_a_planted_link(mode: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    persist = step(StepKind.PERSIST_TO_WORKSPACE, root=".", paths=["a/f"])  # an archive without `a/`
    outcome, up = job(tmp_path, 1, [run("mkdir -p a && echo payload > a/f"), persist], workflow_id=WORKFLOW)
    assert outcome is Outcome.SUCCESS, up.log(102)
    plant = run(f"mkdir -p ws && ln -s {outside} ws/a")
    outcome, down = job(
        tmp_path,
        2,
        [plant, step(StepKind.ATTACH_WORKSPACE, at="ws")],
        workflow_id=WORKFLOW,
        upstream_build_ids=(1,),
    )
    if mode == "none":
        assert (outside / "f").read_text() == "payload\n"  # tar followed the link
        return
    assert not (outside / "f").exists(), down.log(102)
    assert outcome is Outcome.FAILED and down.status(102) is ActionStatus.FAILED
    assert "Could not apply the layer of build 1" in down.log(102)


def test_restore_cache_does_not_write_through_a_planted_link(mode: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    save = step(StepKind.SAVE_CACHE, key="deps", paths=["~/deps/f"])
    outcome, saver = job(tmp_path, 1, [run("mkdir -p ~/deps && echo cached > ~/deps/f"), save])
    assert outcome is Outcome.SUCCESS, saver.log(102)
    plant = run(f"ln -s {outside} ~/deps")
    outcome, restorer = job(tmp_path, 2, [plant, step(StepKind.RESTORE_CACHE, keys=["deps"])])
    if mode == "none":
        assert (outside / "f").read_text() == "cached\n"
        return
    assert not (outside / "f").exists(), restorer.log(102)
    assert restorer.status(102) is ActionStatus.FAILED
    assert "Could not restore ~/deps/f" in restorer.log(102)


def test_a_cache_restores_into_the_sandboxed_build(mode: str, tmp_path: Path) -> None:
    save = step(StepKind.SAVE_CACHE, key="deps", paths=["~/deps"])
    outcome, saver = job(tmp_path, 1, [run("mkdir -p ~/deps/x && echo cached > ~/deps/x/f"), save])
    assert outcome is Outcome.SUCCESS, saver.log(102)
    outcome, restorer = job(tmp_path, 2, [step(StepKind.RESTORE_CACHE, keys=["deps"]), run("cat ~/deps/x/f")])
    assert outcome is Outcome.SUCCESS, restorer.log(101)
    assert "cached" in restorer.log(102)


def test_tmp_paths_are_the_builds_own_tmp_for_artifacts_and_workspaces(boxed: str, tmp_path: Path) -> None:
    make = run(
        "mkdir -p /tmp/artifacts /tmp/workspace && echo r > /tmp/artifacts/r.txt && echo w > /tmp/workspace/w"
    )
    steps = [
        make,
        step(StepKind.STORE_ARTIFACTS, path="/tmp/artifacts"),
        step(StepKind.PERSIST_TO_WORKSPACE, root="/tmp/workspace", paths=["w"]),
    ]
    outcome, up = job(tmp_path, 1, steps, workflow_id=WORKFLOW)
    assert outcome is Outcome.SUCCESS, up.log(102) + up.log(103)
    assert "  tmp/artifacts/r.txt (2 B)" in up.log(102)  # named as the step knows the path
    blobs = FileBlobStore(tmp_path / "blobs")
    assert [i.key for i in blobs.list("artifacts/1/")] == ["artifacts/1/0/tmp/artifacts/r.txt"]
    attach = step(StepKind.ATTACH_WORKSPACE, at="/tmp/workspace")
    outcome, down = job(
        tmp_path, 2, [attach, run("cat /tmp/workspace/w")], workflow_id=WORKFLOW, upstream_build_ids=(1,)
    )
    assert outcome is Outcome.SUCCESS, down.log(101)
    assert down.log(102).strip() == "w"
