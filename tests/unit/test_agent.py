"""The `circleci` command builds run (spec config.md 8): pure rules in-process, the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from circlet.agent import command_script, env_subst, expand_braces, parse_duration, split

SRC = str(Path(__file__).resolve().parents[2] / "src")


def agent(
    *args: str, cwd: Path, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m circlet.agent ARGS` with a clean node environment plus `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CIRCLE_", "CIRCLET_"))}
    base["PYTHONPATH"] = SRC
    return subprocess.run(
        [sys.executable, "-m", "circlet.agent", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=30,
    )


# ---------------------------------------------------------------- glob

TREE = [
    "a.py",
    "b.py",
    ".hidden.py",
    "c.txt",
    "src/x.py",
    "src/sub/y.py",
    "src/sub/z.rb",
    "lib/w.py",
    "tests/test_a.py",
    "tests/test_b.py",
    "tests/test_c.py",
]

GLOB_CASES = [
    pytest.param(["*.py"], [".hidden.py", "a.py", "b.py"], id="star-within-segment-dotfiles-too"),
    pytest.param(["?.py"], ["a.py", "b.py"], id="question-mark"),
    pytest.param(["[ab].py"], ["a.py", "b.py"], id="class"),
    pytest.param(["[!a].py"], ["b.py"], id="negated-class"),
    pytest.param(["src/*.py"], ["src/x.py"], id="star-does-not-cross-slash"),
    pytest.param(["src/*/*.rb"], ["src/sub/z.rb"], id="star-folder"),
    pytest.param(["src/**"], ["src/sub/y.py", "src/sub/z.rb", "src/x.py"], id="double-star-at-end"),
    pytest.param(
        ["**/*.py"],
        [
            ".hidden.py",
            "a.py",
            "b.py",
            "lib/w.py",
            "src/sub/y.py",
            "src/x.py",
            "tests/test_a.py",
            "tests/test_b.py",
            "tests/test_c.py",
        ],
        id="double-star-any-depth-files-only",
    ),
    pytest.param(["src/**/y.py"], ["src/sub/y.py"], id="double-star-middle"),
    pytest.param(["tests/test_{c,a}.py"], ["tests/test_a.py", "tests/test_c.py"], id="braces-sorted"),
    pytest.param(["{src,lib}/*.py"], ["lib/w.py", "src/x.py"], id="braces-folders"),
    pytest.param(["{a,{b,c}}.py"], ["a.py", "b.py"], id="nested-braces"),
    pytest.param(
        ["b.py", "*.py"], ["b.py", ".hidden.py", "a.py", "b.py"], id="patterns-in-order-duplicates-kept"
    ),
    pytest.param(["c.txt", "missing.txt"], ["c.txt"], id="literal"),
    pytest.param(["./src/*.py"], ["./src/x.py"], id="dot-slash-prefix-kept"),
    pytest.param(["nothing*", "no/**/x"], [], id="no-match-prints-nothing"),
]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    for rel in TREE:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x" * len(rel))
    (root / "dir.py").mkdir()  # a folder matching *.py is not printed
    return root


@pytest.mark.parametrize(("patterns", "expected"), GLOB_CASES)
def test_glob(tree: Path, patterns: list[str], expected: list[str]) -> None:
    done = agent("tests", "glob", *patterns, cwd=tree)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == expected


def test_glob_absolute_pattern(tree: Path, tmp_path: Path) -> None:
    done = agent("tests", "glob", f"{tree}/src/*.py", cwd=tmp_path)
    assert done.stdout.splitlines() == [f"{tree}/src/x.py"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        pytest.param("a", ["a"], id="none"),
        pytest.param("{x}", ["{x}"], id="single-is-literal"),
        pytest.param("{a,b", ["{a,b"], id="unbalanced"),
        pytest.param("\\{a,b}", ["\\{a,b}"], id="escaped"),
        pytest.param("{a,b}{1,2}", ["a1", "a2", "b1", "b2"], id="product"),
    ],
)
def test_expand_braces(pattern: str, expected: list[str]) -> None:
    assert expand_braces(pattern) == expected


# ---------------------------------------------------------------- split, pure

SPLIT_CASES = [
    pytest.param(
        ["c", "a", "b", "d"], None, 2, [["c", "a"], ["b", "d"]], id="name-sorted-mod-total-input-order"
    ),
    pytest.param(["a", "b", "c", "d"], [1, 3, 2, 2], 2, [["a", "b"], ["c", "d"]], id="greedy-ties-by-name"),
    pytest.param(["a", "b"], [1, 1], 3, [["a"], ["b"], []], id="more-nodes-than-items"),
    # the spec's tie rule, followed exactly: equal totals -> lowest index, so zero weights pile up
    pytest.param(["b", "a"], [0, 0], 2, [["b", "a"], []], id="zero-weights-ties-lowest-node"),
    pytest.param(["x", "x", "y"], None, 2, [["x", "y"], ["x"]], id="duplicates-are-distinct-items"),
    pytest.param([], None, 3, [[], [], []], id="empty"),
]


@pytest.mark.parametrize(("items", "weights", "total", "expected"), SPLIT_CASES)
def test_split_table(
    items: list[str], weights: list[float] | None, total: int, expected: list[list[str]]
) -> None:
    assert split(items, weights, total) == expected


@pytest.mark.parametrize("total", [1, 2, 3, 4, 7, 50])
@pytest.mark.parametrize("by", ["name", "weights"])
def test_split_covers_every_item_once_deterministically_balanced(total: int, by: str) -> None:
    rng = random.Random(total)
    items = [f"spec/file_{n}.rb" for n in rng.sample(range(10_000), 200)]
    weights = [rng.uniform(0.05, 3) for _ in items] if by == "weights" else None
    shares = split(items, weights, total)
    assert shares == split(items, weights, total)
    assert sorted(i for share in shares for i in share) == sorted(items)
    for share in shares:  # each share keeps input order
        positions = [items.index(i) for i in share]
        assert positions == sorted(positions)
    if weights is not None:  # greedy bound: no node exceeds the ideal by more than one item
        weight = dict(zip(items, weights, strict=False))
        loads = [sum(weight[i] for i in share) for share in shares]
        assert max(loads) <= sum(weights) / total + max(weights) + 1e-9
    else:
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_split_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        split(["a"], None, 0)
    with pytest.raises(ValueError):
        split(["a"], [1.0, 2.0], 1)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0.1", 0.1), ("100ms", 0.1), ("1m30s", 90.0), ("2h", 7200.0), ("1.5s", 1.5), ("250us", 0.00025)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_duration("1 fortnight")


# ---------------------------------------------------------------- split, CLI


def task_data(tmp_path: Path, tests: list[dict[str, object]]) -> dict[str, str]:
    folder = tmp_path / "task" / "circle-test-results"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"tests": tests, "files": [], "exceptions": []}))
    return {"CIRCLE_INTERNAL_TASK_DATA": str(tmp_path / "task")}


def nodes(tmp_path: Path, *args: str, stdin: str, env: dict[str, str], total: int) -> list[list[str]]:
    out = []
    for index in range(total):
        done = agent(
            "tests",
            "split",
            *args,
            "--total",
            str(total),
            "--index",
            str(index),
            cwd=tmp_path,
            stdin=stdin,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        out.append(done.stdout.splitlines())
    return out


RECORDS: list[dict[str, object]] = [
    {"file": "./spec/a_spec.rb", "classname": "A", "name": "a1", "run_time": 5.0},
    {"file": "spec/a_spec.rb", "classname": "A", "name": "a2", "run_time": 5.0},
    {"file": "spec/b_spec.rb", "classname": "B", "name": "b1", "run_time": 4.0},
    {"file": "spec/c_spec.rb", "classname": "C", "name": "c1", "run_time": 3.0},
    {"file": "spec/d_spec.rb", "classname": "D", "name": "d1", "run_time": 3.0},
]


def test_split_by_timings_filename_autodetected(tmp_path: Path) -> None:
    env = task_data(tmp_path, RECORDS)
    stdin = "spec/a_spec.rb spec/b_spec.rb\n./spec/c_spec.rb\nspec/d_spec.rb\n"
    shares = nodes(tmp_path, "--split-by=timings", stdin=stdin, env=env, total=2)
    # a=10 -> node 0; b=4 -> 1; c=3 -> 1 (7); d=3 -> 1 (10)
    assert shares == [["spec/a_spec.rb"], ["spec/b_spec.rb", "./spec/c_spec.rb", "spec/d_spec.rb"]]


def test_split_by_timings_classname_and_no_timing_message(tmp_path: Path) -> None:
    env = task_data(tmp_path, RECORDS)
    done = agent(
        "tests", "split", "--split-by", "timings", "--total", "2", "--index", "1", "--time-default", "20s",
        cwd=tmp_path, stdin="A B Z\n", env=env,
    )  # fmt: skip
    assert done.returncode == 0
    assert done.stderr == 'No timing found for "Z"\n'
    assert done.stdout.splitlines() == ["A", "B"]  # Z=20 alone on node 0


def test_split_by_timings_testname_alias(tmp_path: Path) -> None:
    env = task_data(tmp_path, RECORDS)
    shares = nodes(tmp_path, "--split-by=timings", "--timings-type=name", stdin="a1 b1 c1", env=env, total=2)
    assert shares == [["a1"], ["b1", "c1"]]


def test_split_autodetect_failure_falls_back_to_name(tmp_path: Path) -> None:
    env = task_data(tmp_path, RECORDS)
    done = agent(
        "tests", "split", "--split-by=timings", "--total=2", "--index=0", cwd=tmp_path, stdin="q p r", env=env
    )
    assert done.stderr == "Error autodetecting timing type, falling back to weighting by name.\n"
    assert done.stdout.splitlines() == ["p", "r"]


def test_split_without_results_json_falls_back_to_name(tmp_path: Path) -> None:
    done = agent(
        "tests", "split", "--split-by=timings", "--total=2", "--index=1", cwd=tmp_path, stdin="q p r"
    )
    assert done.returncode == 0
    assert done.stderr == "Error reading historical timing data: file does not exist\n"
    assert done.stdout.splitlines() == ["q"]


def test_split_by_filesize_and_from_file(tmp_path: Path) -> None:
    for name, size in [("big", 100), ("mid", 60), ("small", 50)]:
        (tmp_path / name).write_text("x" * size)
    (tmp_path / "list").write_text("small\nbig\nmid\nmissing\n")
    out = [
        agent("tests", "split", "list", "--split-by=filesize", "--total=2", f"--index={i}", cwd=tmp_path)
        for i in (0, 1)
    ]
    assert [o.stdout.splitlines() for o in out] == [["big", "missing"], ["small", "mid"]]


def test_split_index_and_total_from_environment(tmp_path: Path) -> None:
    env = {"CIRCLE_NODE_INDEX": "2", "CIRCLE_NODE_TOTAL": "3"}
    done = agent("tests", "split", cwd=tmp_path, stdin="a b c d e f g", env=env)
    assert done.stdout.splitlines() == ["c", "f"]
    alone = agent("tests", "split", cwd=tmp_path, stdin="b a")
    assert alone.stdout.splitlines() == ["b", "a"]


def test_split_bad_index(tmp_path: Path) -> None:
    done = agent("tests", "split", "--index=3", "--total=3", cwd=tmp_path, stdin="a")
    assert done.returncode == 2
    assert "--index must be in [0, --total)" in done.stderr


# ---------------------------------------------------------------- run, halt, env, refusals


def test_run_feeds_this_nodes_items_and_returns_status(tmp_path: Path) -> None:
    cmd = "cat > got; exit 3"
    done = agent("tests", "run", "--command", cmd, "--index=0", "--total=2", cwd=tmp_path, stdin="c a b")
    assert done.returncode == 3
    assert (tmp_path / "got").read_text() == "c\na\n"


def test_run_with_no_items_does_not_run(tmp_path: Path) -> None:
    done = agent(
        "tests", "run", "--command", "touch ran", "--index=2", "--total=3", cwd=tmp_path, stdin="a b"
    )
    assert done.returncode == 0
    assert not (tmp_path / "ran").exists()


def test_step_halt_touches_the_marker(tmp_path: Path) -> None:
    marker = tmp_path / "halt"
    done = agent("step", "halt", cwd=tmp_path, env={"CIRCLE_INTERNAL_HALT_FILE": str(marker)})
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert marker.exists()
    outside = agent("step", "halt", cwd=tmp_path)
    assert outside.returncode == 1
    assert "CIRCLE_INTERNAL_HALT_FILE is not set" in outside.stderr


def test_env_subst(tmp_path: Path) -> None:
    env = {"CIRCLET_T_NAME": "world"}
    done = agent(
        "env", "subst", "hi $CIRCLET_T_NAME ${CIRCLET_T_NAME}! $UNSET_X_Y. $ 5$", cwd=tmp_path, env=env
    )
    assert done.stdout == "hi world world! . $ 5$\n"
    piped = agent("env", "subst", cwd=tmp_path, stdin="${CIRCLET_T_NAME}\n", env=env)
    assert piped.stdout == "world\n"
    assert env_subst("$A$B", {"A": "1"}) == "1"


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        pytest.param(["config", "validate"], "config", id="config"),
        pytest.param(["orb", "list"], "orb", id="orb"),
        pytest.param(["step", "resume"], "step resume", id="other-step"),
        pytest.param(["env", "list"], "env list", id="other-env"),
    ],
)
def test_other_commands_not_available(tmp_path: Path, args: list[str], shown: str) -> None:
    done = agent(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        f"circleci {shown}: not available in circlet builds (only tests, step halt and env subst are)\n"
    )


def test_command_script_runs_the_agent(tmp_path: Path) -> None:
    script = tmp_path / "circleci"
    script.write_text(command_script(sys.executable))
    script.chmod(0o755)
    (tmp_path / "a.py").write_text("")
    done = subprocess.run(
        [str(script), "tests", "glob", "*.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
        timeout=30,
    )
    assert done.stdout == "a.py\n"
