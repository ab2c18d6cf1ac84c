"""`circlet context ...` and `circlet workflow ...` in-process through Click's CliRunner, each test
with its own CIRCLET_DATA_DIR (SQLite) in tmp_path and a real git repository."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from circlet.bootstrap import build_services
from circlet.cli import main
from circlet.core.model import Outcome
from circlet.core.workflow import JobState
from circlet.harness import make_repo
from circlet.settings import load_settings

pytestmark = pytest.mark.timeout(60)

Cli = Callable[..., Result]
SLUG = "gh/acme/widget"
CONFIG = """\
version: 2
jobs:
  build: {docker: [{image: x}], steps: [{run: 'true'}]}
workflows:
  version: 2
  w:
    jobs: [build, {hold: {type: approval, requires: [build]}}]
"""


@pytest.fixture(autouse=True)
def _no_circlet_settings_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CIRCLET_"):
            monkeypatch.delenv(name)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def cli(data_dir: Path, tmp_path: Path) -> Cli:
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(main, list(args), env={"CIRCLET_DATA_DIR": str(data_dir)})

    make_repo(tmp_path / "widget", {".circleci/config.yml": CONFIG})
    assert invoke("project", "add", SLUG, "--repo", str(tmp_path / "widget")).exit_code == 0
    return invoke


def test_contexts_from_the_command_line(cli: Cli) -> None:
    assert cli("context", "create", "prod").exit_code == 0
    again = cli("context", "create", "prod")
    assert again.exit_code == 1 and "exists" in again.output
    assert cli("context", "create", "bad name").exit_code == 1
    assert cli("context", "env", "set", "prod", "TOKEN", "s3cret-value").exit_code == 0
    listed = cli("context", "env", "list", "prod")
    assert listed.output.startswith("TOKEN\t") and "s3cret-value" not in listed.output
    assert cli("context", "env", "set", "nope", "A", "b").exit_code == 1
    assert cli("context", "env", "set", "prod", "1A", "b").exit_code == 1
    assert cli("context", "env", "unset", "prod", "TOKEN").exit_code == 0
    assert cli("context", "env", "list", "prod").output == ""
    assert cli("context", "list").output.startswith("prod\t")
    assert cli("context", "delete", "prod").exit_code == 0
    assert cli("context", "delete", "prod").exit_code == 1


def test_workflow_list_show_and_approve_record_the_approval(cli: Cli, data_dir: Path) -> None:
    app = build_services(load_settings(data_dir=data_dir))
    svc = app.circlet
    project = svc.get_project("gh", "acme", "widget")
    build = svc.trigger_pipeline(project)
    assert build is not None
    svc.build_queued(build.id or 0, svc.clock())
    svc.build_started(build.id or 0, svc.clock(), "w")
    svc.build_finished(build.id or 0, Outcome.SUCCESS, svc.clock())
    workflow_id = build.extra["workflows"]["workflow_id"]
    listed = cli("workflow", "list", SLUG)
    assert listed.output == f"{workflow_id}\t1\tw\ton_hold\n"
    shown = cli("workflow", "show", workflow_id).output
    assert "hold\tapproval\ton_hold\t-\tbuild" in shown
    assert cli("workflow", "approve", workflow_id, "build").exit_code == 1
    assert cli("workflow", "approve", workflow_id, "hold", "--user", "nobody").exit_code == 1
    approved = cli("workflow", "approve", workflow_id, "hold")
    assert approved.exit_code == 0, approved.output
    engine = svc.workflows
    assert engine is not None
    [held] = engine.store.approved_on_hold()  # recorded, not applied: the server applies it
    assert held.name == "hold"
    engine.sweep()
    assert {j.name: j.state for j in engine.graph(workflow_id).jobs}["hold"] is JobState.SUCCESS
    assert cli("workflow", "show", "not-a-workflow").exit_code == 1
