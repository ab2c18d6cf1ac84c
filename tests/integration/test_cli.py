"""The `circlet` command in-process through Click's CliRunner, on real git repositories.

Every test has its own CIRCLET_DATA_DIR (SQLite database, mirrors, key) in tmp_path; `circlet
build` runs real step processes.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from circlet.bootstrap import build_services
from circlet.cli import main
from circlet.harness import make_repo
from circlet.service import hash_token
from circlet.settings import load_settings

pytestmark = pytest.mark.timeout(60)

Cli = Callable[..., Result]


@pytest.fixture(autouse=True)
def _no_circlet_settings_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own CIRCLET_* variables must not reach these tests."""
    for name in list(os.environ):
        if name.startswith("CIRCLET_"):
            monkeypatch.delenv(name)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def cli(data_dir: Path) -> Cli:
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(main, list(args), env={"CIRCLET_DATA_DIR": str(data_dir), **(env or {})})

    return invoke


def config(jobs: dict[str, list[Any]]) -> str:
    doc = {
        "version": 2,
        "jobs": {
            name: {"docker": [{"image": "cimg/base:stable"}], "steps": steps} for name, steps in jobs.items()
        },
    }
    return yaml.safe_dump(doc, sort_keys=False)


def run(name: str, command: str) -> dict[str, Any]:
    return {"run": {"name": name, "command": command}}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository whose HEAD is `trunk` (not the fallback `main`)."""
    path = tmp_path / "widget"
    make_repo(
        path,
        {
            ".circleci/config.yml": config(
                {
                    "build": [
                        "checkout",
                        run("Greet", "echo hello from $CIRCLE_JOB"),
                        run("Read", "cat README"),
                    ],
                    "other": [run("Other job", "echo the other one")],
                    "fails": [
                        run("Before", "echo before"),
                        run("Breaks", "echo about to fail; exit 3"),
                        run("Never", "echo never"),
                    ],
                    "params": [run("Show", 'echo "NAME=$NAME URL=$URL"')],
                }
            ),
            "README": "widget readme\n",
        },
        branch="trunk",
    )
    return path


def in_order(text: str, *parts: str) -> bool:
    """Every part appears in text, each after the previous one."""
    at = 0
    for part in parts:
        found = text.find(part, at)
        if found < 0:
            return False
        at = found + len(part)
    return True


def flat(text: str) -> str:
    """Whitespace runs as one space: rich breaks long lines at spaces when stdout is not a
    terminal (test_build_does_not_wrap_long_lines)."""
    return " ".join(text.split())


def clean_failure(result: Result) -> None:
    """A non-zero exit through click's own error path: a message, no traceback."""
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert result.stderr.startswith(("Error: ", "Usage: "))


# ------------------------------------------------------------------ projects


def test_project_add_then_list_takes_the_default_branch_from_head(cli: Cli, repo: Path) -> None:
    added = cli("project", "add", "gh/acme/widget", "--repo", str(repo))
    assert added.exit_code == 0, added.output
    assert added.stdout == f"added gh/acme/widget ({repo}, default branch trunk)\n"
    listed = cli("project", "list")
    assert listed.exit_code == 0
    assert listed.stdout == f"gh/acme/widget\ttrunk\t{repo}\n"


def test_project_add_with_explicit_branch_and_relative_path(
    cli: Cli, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo.parent)
    added = cli("project", "add", "bb/acme/widget", "--repo", "widget", "--default-branch", "release")
    assert added.exit_code == 0, added.output
    assert cli("project", "list").stdout == f"bb/acme/widget\trelease\t{repo}\n"


@pytest.mark.parametrize(
    "where",
    [
        pytest.param("missing", id="no-such-path"),
        pytest.param("plain", id="a-folder-that-is-no-repository"),
    ],
)
def test_project_add_unreadable_repository_fails_naming_it(cli: Cli, tmp_path: Path, where: str) -> None:
    path = tmp_path / where
    if where == "plain":
        path.mkdir()
    result = cli("project", "add", "gh/acme/widget", "--repo", str(path))
    clean_failure(result)
    assert str(path) in result.stderr
    assert "not appear to be a git repository" in result.stderr
    assert cli("project", "list").stdout == ""


@pytest.mark.parametrize(
    "slug",
    [
        pytest.param("gh/acme", id="two-parts"),
        pytest.param("gh/acme/widget/extra", id="four-parts"),
        pytest.param("widget", id="one-part"),
    ],
)
def test_project_add_bad_slug_is_a_usage_error(cli: Cli, repo: Path, slug: str) -> None:
    result = cli("project", "add", slug, "--repo", str(repo))
    clean_failure(result)
    assert result.exit_code == 2
    assert "SLUG must look like gh/acme/widget" in result.stderr


def test_project_add_unknown_vcs_fails(cli: Cli, repo: Path) -> None:
    result = cli("project", "add", "svn/acme/widget", "--repo", str(repo))
    clean_failure(result)
    assert "unknown vcs type 'svn'" in result.stderr


def test_project_add_twice_fails_the_second_time(cli: Cli, repo: Path) -> None:
    assert cli("project", "add", "gh/acme/widget", "--repo", str(repo)).exit_code == 0
    again = cli("project", "add", "gh/acme/widget", "--repo", str(repo))
    clean_failure(again)
    assert "gh/acme/widget already exists" in again.stderr
    assert cli("project", "list").stdout.count("gh/acme/widget") == 1


# ------------------------------------------------------------------ tokens


def test_tokens_create_list_revoke(cli: Cli, repo: Path, data_dir: Path) -> None:
    assert cli("project", "add", "gh/acme/widget", "--repo", str(repo)).exit_code == 0
    user = cli("token", "create")
    assert user.exit_code == 0
    assert re.fullmatch(r"ccl_[A-Za-z0-9_-]{30,}\n", user.stdout), user.stdout
    assert user.stderr == ""
    project = cli("token", "create", "--project", "gh/acme/widget", "--scope", "view-builds", "--label", "ci")
    assert project.exit_code == 0
    assert re.fullmatch(r"ccl_[A-Za-z0-9_-]{30,}\n", project.stdout), project.stdout
    secrets = [user.stdout.strip(), project.stdout.strip()]
    assert secrets[0] != secrets[1]

    listed = cli("token", "list")
    assert listed.exit_code == 0
    assert listed.stdout.splitlines() == [
        "1\tuser:1\tactive\t",
        "2\tproject:1 scope:view-builds\tactive\tci",
    ]
    for secret in secrets:
        assert secret not in listed.output
        assert secret[4:] not in listed.output

    revoked = cli("token", "revoke", "1")
    assert revoked.exit_code == 0 and revoked.stdout == "revoked token 1\n"
    assert cli("token", "list").stdout.splitlines()[0] == "1\tuser:1\trevoked\t"

    # the state behind it: the secrets are what was stored (hashed), and revocation counts
    app = build_services(load_settings({"CIRCLET_DATA_DIR": str(data_dir)}))
    assert app.circlet.store.find_token(hash_token(secrets[0])) is None
    live = app.circlet.store.find_token(hash_token(secrets[1]))
    assert live is not None and live.id == 2 and live.scope == "view-builds"


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        pytest.param(("token", "revoke", "99"), 1, "no token with id 99", id="revoke-unknown-id"),
        pytest.param(("token", "revoke", "abc"), 2, "'abc' is not a valid integer", id="revoke-not-a-number"),
        pytest.param(
            ("token", "create", "--project", "gh/acme/nope"), 1, "Project not found", id="no-project"
        ),
        pytest.param(
            ("token", "create", "--project", "gh/acme"), 2, "--project must look like", id="bad-slug"
        ),
        pytest.param(
            ("token", "create", "--project", "gh/acme/widget", "--scope", "root"),
            2,
            "'root' is not one of",
            id="bad-scope",
        ),
    ],
)
def test_token_errors(cli: Cli, args: tuple[str, ...], exit_code: int, message: str) -> None:
    result = cli(*args)
    clean_failure(result)
    assert result.exit_code == exit_code
    assert message in result.stderr
    assert result.stdout == ""


def test_migrate_twice(cli: Cli, data_dir: Path) -> None:
    for _ in range(2):
        result = cli("migrate")
        assert result.exit_code == 0, result.output
        assert result.stdout == f"database is up to date: sqlite:///{data_dir}/circlet.db\n"
    assert (data_dir / "circlet.db").is_file()
    assert cli("project", "list").exit_code == 0


# ------------------------------------------------------------------ settings errors


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        pytest.param(
            {"CIRCLET_EXECUTOR": "bogus"}, "CIRCLET_EXECUTOR must be local or celery", id="executor"
        ),
        pytest.param({"CIRCLET_PORT": "abc"}, "CIRCLET_PORT: 'abc' is not a valid int", id="port"),
        pytest.param({"CIRCLET_RUNNER": "bogus"}, "CIRCLET_RUNNER must be process or thread", id="runner"),
        pytest.param(
            {"CIRCLET_EXECUTOR": "celery"},
            "the celery executor needs a database every machine can reach",
            id="celery-on-sqlite",
        ),
        pytest.param({"CIRCLET_COLOUR": "x"}, "", id="unknown-variable-is-ignored"),
    ],
)
@pytest.mark.parametrize(
    "command", [("migrate",), ("project", "list"), ("token", "list"), ("token", "create")]
)
def test_settings_errors_are_clean(
    cli: Cli, data_dir: Path, variables: dict[str, str], message: str, command: tuple[str, ...]
) -> None:
    result = cli(*command, env=variables)
    if not message:
        assert result.exit_code == 0, result.output
        return
    clean_failure(result)
    assert result.stderr.startswith(f"Error: {message}")
    assert not (data_dir / "circlet.db").exists()


def test_bad_toml_in_the_data_folder_is_a_clean_error(cli: Cli, data_dir: Path) -> None:
    data_dir.mkdir()
    (data_dir / "circlet.toml").write_text("port = \n")
    result = cli("project", "list")
    clean_failure(result)
    assert f"{data_dir}/circlet.toml" in result.stderr


# ------------------------------------------------------------------ circlet build


def test_build_runs_the_build_job_and_shows_each_step(cli: Cli, repo: Path) -> None:
    result = cli("build", str(repo))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert flat(out).startswith("circlet build ") and " job build at " in flat(out)
    assert in_order(
        out,
        "▶ Spin up Environment",
        "✔ Spin up Environment",
        "▶ Checkout code",
        "✔ Checkout code",
        "▶ Greet",
        "hello from build\n",
        "✔ Greet",
        "▶ Read",
        "widget readme\n",
        "✔ Read",
        "success in ",
    ), out
    assert "Other job" not in out


def test_build_output_is_live(repo: Path, tmp_path: Path, data_dir: Path) -> None:
    """A step's first line is on stdout while the step still runs (it waits for this test)."""
    go = tmp_path / "go"
    make_repo(
        tmp_path / "live",
        {
            ".circleci/config.yml": config(
                {
                    "build": [
                        run(
                            "Wait",
                            f"echo first-line; while [ ! -e {go} ]; do sleep 0.01; done; echo second-line",
                        )
                    ]
                }
            )
        },
    )
    runner = CliRunner()
    exits: list[object] = []

    def invoke() -> None:
        try:
            main.main(["build", str(tmp_path / "live")], standalone_mode=False)
        except SystemExit as exc:
            exits.append(exc.code)

    with runner.isolation(env={"CIRCLET_DATA_DIR": str(data_dir)}) as (stdout, _stderr, _output):
        thread = threading.Thread(target=invoke)
        thread.start()
        try:
            deadline = time.monotonic() + 15
            while b"first-line" not in stdout.getvalue():
                assert thread.is_alive() and time.monotonic() < deadline, stdout.getvalue().decode()
                time.sleep(0.01)
            assert b"second-line" not in stdout.getvalue()
            assert b"\xe2\x9c\x94 Wait" not in stdout.getvalue()  # "✔ Wait": not finished yet
        finally:
            go.touch()
            thread.join(15)
        out = stdout.getvalue().decode()
    assert exits == [0]
    assert in_order(out, "▶ Wait", "first-line\n", "second-line\n", "✔ Wait")


def test_build_failing_step(cli: Cli, repo: Path) -> None:
    result = cli("build", str(repo), "--job", "fails")
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    out = result.stdout
    assert in_order(
        out,
        "▶ Before",
        "before\n",
        "✔ Before",
        "▶ Breaks",
        "about to fail\n",
        "Exited with code exit status 3\n",
        "✖ Breaks",
        "exit 3)",
        "failed in ",
    ), out
    assert "Never" not in out and "never" not in out


def test_build_runs_another_job(cli: Cli, repo: Path) -> None:
    result = cli("build", str(repo), "--job", "other")
    assert result.exit_code == 0, result.output
    assert " job other at " in flat(result.stdout)
    assert in_order(result.stdout, "▶ Other job", "the other one\n", "✔ Other job")
    assert "Greet" not in result.stdout


@pytest.mark.parametrize(
    ("pairs", "shown"),
    [
        pytest.param(("NAME=value",), "NAME=value URL=", id="one"),
        pytest.param(
            ("NAME=a b", "URL=https://x/?a=1&b=2"), "NAME=a b URL=https://x/?a=1&b=2", id="spaces-and-="
        ),
        pytest.param(("NAME=",), "NAME= URL=", id="empty-value"),
    ],
)
def test_build_env_reaches_the_step(cli: Cli, repo: Path, pairs: tuple[str, ...], shown: str) -> None:
    args = [arg for pair in pairs for arg in ("-e", pair)]
    result = cli("build", str(repo), "--job", "params", *args)
    assert result.exit_code == 0, result.output
    assert f"\n{shown}\n" in result.stdout


def test_build_env_without_equals_is_a_usage_error(cli: Cli, repo: Path) -> None:
    result = cli("build", str(repo), "-e", "NOEQUALS")
    clean_failure(result)
    assert result.exit_code == 2
    assert "--env takes KEY=VALUE, not 'NOEQUALS'" in result.stderr


def test_build_unknown_job(cli: Cli, repo: Path) -> None:
    result = cli("build", str(repo), "--job", "deploy")
    clean_failure(result)
    assert "Cannot find a job named `deploy`" in result.stderr
    assert "▶" not in result.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "version: 2\njobs:\n  build:\n    docker: [{image: x}]\n    steps:\n      - run: {name: a}\n",
            [".circleci/config.yml:6 (jobs.build.steps[0].run.command)", "needs a `command`"],
            id="run-without-command",
        ),
        pytest.param(
            "version: 2\njobs:\n  build:\n    docker: [{image: x}]\n    steps:\n      - frobnicate\n",
            [".circleci/config.yml:6", "unknown step 'frobnicate'"],
            id="unknown-step",
        ),
        pytest.param("version: 2\njobs: [\n", [".circleci/config.yml:3: invalid YAML"], id="invalid-yaml"),
    ],
)
def test_build_broken_config(cli: Cli, tmp_path: Path, text: str, expected: list[str]) -> None:
    tree = tmp_path / "broken"
    make_repo(tree, {".circleci/config.yml": text})
    result = cli("build", str(tree))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "config error: " in result.stdout
    for part in expected:
        assert flat(part) in flat(result.stdout)
    assert "▶" not in result.stdout


def test_build_reports_every_config_problem(cli: Cli, tmp_path: Path) -> None:
    tree = tmp_path / "broken"
    make_repo(tree, {".circleci/config.yml": "version: 2\njobs:\n  build:\n    steps: [frobnicate]\n"})
    result = cli("build", str(tree))
    assert result.exit_code == 1
    assert result.stdout.count("config error: ") == 2
    out = flat(result.stdout)
    assert "config error: .circleci/config.yml:3 (jobs.build): a job needs an executor" in out
    assert "config error: .circleci/config.yml:4 (jobs.build.steps[0]): unknown step 'frobnicate'" in out


@pytest.mark.parametrize(
    "git_repo", [pytest.param(True, id="git-repo"), pytest.param(False, id="plain-folder")]
)
def test_build_without_config(cli: Cli, tmp_path: Path, git_repo: bool) -> None:
    tree = tmp_path / "empty"
    if git_repo:
        make_repo(tree, {"README": "x\n"})
    else:
        tree.mkdir()
    result = cli("build", str(tree))
    clean_failure(result)
    assert f"No .circleci/config.yml in {tree}" in result.stderr


def test_build_missing_path_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    result = cli("build", str(tmp_path / "nowhere"))
    clean_failure(result)
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_build_checks_out_the_working_tree_as_it_is(cli: Cli, tmp_path: Path) -> None:
    tree = tmp_path / "wip"
    check = " && ".join(
        [
            "cat README",
            "cat new.txt",
            "cat src/deep/added.txt",
            "test ! -e gone.txt",
            "test ! -e build.log",
            "git log --format=%s -1",
        ]
    )
    make_repo(
        tree,
        {
            ".circleci/config.yml": config({"build": ["checkout", run("Look", check)]}),
            ".gitignore": "*.log\n",
            "README": "committed\n",
            "gone.txt": "to be deleted\n",
        },
        message="The commit",
    )
    (tree / "README").write_text("modified, not committed\n")
    (tree / "new.txt").write_text("untracked\n")
    (tree / "src" / "deep").mkdir(parents=True)
    (tree / "src" / "deep" / "added.txt").write_text("untracked too\n")
    (tree / "gone.txt").unlink()
    (tree / "build.log").write_text("ignored\n")

    result = cli("build", str(tree))
    assert result.exit_code == 0, result.output
    assert in_order(
        result.stdout, "modified, not committed\n", "untracked\n", "untracked too\n", "The commit\n", "✔ Look"
    ), result.stdout
    assert (tree / "README").read_text() == "modified, not committed\n"  # the tree is left alone


def test_build_of_a_plain_folder_copies_it(cli: Cli, tmp_path: Path) -> None:
    tree = tmp_path / "plain"
    (tree / ".circleci").mkdir(parents=True)
    (tree / ".circleci" / "config.yml").write_text(
        config({"build": ["checkout", run("Look", "cat data.txt")]})
    )
    (tree / "data.txt").write_text("no git here\n")
    result = cli("build", str(tree))
    assert result.exit_code == 0, result.output
    assert "no git here\n" in result.stdout


@pytest.mark.parametrize(
    "command",
    [
        pytest.param("echo '[info] ok'", id="tag-like-text-is-dropped"),
        pytest.param("echo '[/]'", id="closing-tag-crashes-the-build"),
    ],
)
def test_build_shows_step_names_with_brackets_verbatim(cli: Cli, tmp_path: Path, command: str) -> None:
    tree = tmp_path / "brackets"
    make_repo(tree, {".circleci/config.yml": config({"build": [{"run": command}]})})
    result = cli("build", str(tree))
    assert result.exit_code == 0, result.output
    assert f"▶ {command}\n" in result.stdout


def test_build_does_not_wrap_long_lines(cli: Cli, tmp_path: Path) -> None:
    name = "a step name that is rather long, as step names made from commands often are: " + "x" * 40
    tree = tmp_path / "long"
    make_repo(tree, {".circleci/config.yml": config({"build": [run(name, "true")]})})
    result = cli("build", str(tree))
    assert result.exit_code == 0, result.output
    assert f"▶ {name}\n" in result.stdout
