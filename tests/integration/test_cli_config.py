"""`circlet config process`: the compiled 2.0 config, orbs from the operator's folder."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from circlet.cli import main

CONFIG = """\
version: 2.1
orbs:
  tools: acme/tools@1.2
parameters:
  greeting: {type: string, default: hello}
jobs:
  test:
    parameters:
      v: {type: string}
    docker: [{image: cimg/base:stable}]
    steps:
      - tools/greet: {who: << parameters.v >>}
      - run: echo << pipeline.parameters.greeting >> on << pipeline.git.branch >>
workflows:
  main:
    jobs:
      - test:
          matrix: {parameters: {v: ["a", "b"]}}
"""
ORB = """\
commands:
  greet:
    parameters:
      who: {type: string}
    steps:
      - run: echo hi << parameters.who >>
"""


def invoke(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    (tmp_path / "orbs" / "acme").mkdir(parents=True, exist_ok=True)
    (tmp_path / "orbs" / "acme" / "tools@1.2.yml").write_text(ORB)
    config = tmp_path / "config.yml"
    if not config.exists():
        config.write_text(CONFIG)
    env = {"CIRCLET_DATA_DIR": str(tmp_path / "data"), "CIRCLET_ORBS_DIR": str(tmp_path / "orbs")}
    result = CliRunner().invoke(main, ["config", "process", str(config), *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def test_prints_the_compiled_config(tmp_path: Path) -> None:
    code, out, _ = invoke(tmp_path, "--param", "greeting=hey", "--branch", "dev")
    assert code == 0
    compiled = yaml.safe_load(out)
    assert compiled["version"] == 2
    assert sorted(compiled["jobs"]) == ["test-a", "test-b"]
    assert compiled["jobs"]["test-a"]["steps"] == [{"run": "echo hi a"}, {"run": "echo hey on dev"}]
    assert compiled["workflows"]["main"]["jobs"] == ["test-a", "test-b"]


def test_a_missing_orb_and_a_bad_parameter_are_named(tmp_path: Path) -> None:
    (tmp_path / "config.yml").write_text(CONFIG.replace("acme/tools@1.2", "acme/tools@9.9"))
    code, out, err = invoke(tmp_path, "--param", "nope=1")
    assert code == 1 and out == ""
    assert "Cannot find orb acme/tools@9.9" in err
    assert "nope" in err
    assert "config.yml:3" in err  # where the orb is declared
