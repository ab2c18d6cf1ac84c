"""The `circleci` / `circleci-agent` command that circlet puts on each build container's PATH.

Run as `python -m circlet.agent ARGS...` (spec config.md 8 and 3.2). Standard library only: it
runs inside build containers with the server's Python and must not import the rest of circlet.

Subcommands: `tests glob`, `tests split`, `tests run`, `step halt`, `env subst`; anything else
says it is not available here and exits 2. `split()` is the pure, deterministic splitting rule
(the same on every node) that `tests split` and `tests run` use.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

AVAILABLE = "only tests, step halt and env subst are"
HALT_FILE_ENV = "CIRCLE_INTERNAL_HALT_FILE"
TASK_DATA_ENV = "CIRCLE_INTERNAL_TASK_DATA"
RESULTS_JSON = Path("circle-test-results", "results.json")
DEFAULT_TIME = 0.1  # seconds given to an item without timing (DECISION)
TIMINGS_TYPES = {"filename": "filename", "file": "filename", "classname": "classname", "testname": "testname"}
TIMINGS_TYPES["name"] = "testname"
RECORD_FIELD = {"filename": "file", "classname": "classname", "testname": "name"}


# ---------------------------------------------------------------- splitting (pure)


def split(items: Sequence[str], weights: Sequence[float] | None, total: int) -> list[list[str]]:
    """Each node's share of `items`, every item exactly once, each share in input order.

    `weights is None` → split by name: sort the items, item k goes to node k mod total.
    Otherwise greedy packing: items by weight descending (ties by name, then input position), each
    onto the node with the smallest total so far (ties → lowest index). Deterministic, so every
    node computes the same answer. Duplicated items are distinct items.
    """
    if total < 1:
        raise ValueError("total must be at least 1")
    if weights is not None and len(weights) != len(items):
        raise ValueError("items and weights differ in length")
    owner = [0] * len(items)
    if weights is None:
        order = sorted(range(len(items)), key=lambda i: (items[i], i))
        for k, i in enumerate(order):
            owner[i] = k % total
    else:
        order = sorted(range(len(items)), key=lambda i: (-weights[i], items[i], i))
        loads = [0.0] * total
        for i in order:
            node = min(range(total), key=lambda n: (loads[n], n))
            owner[i] = node
            loads[node] += weights[i]
    shares: list[list[str]] = [[] for _ in range(total)]
    for i, item in enumerate(items):
        shares[owner[i]].append(item)
    return shares


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration (`100ms`, `1m30s`, `2.5s`); a bare number is seconds."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def _strip_dot_slash(value: str) -> str:
    while value.startswith("./"):
        value = value[2:]
    return value


def timing_weights(
    items: Sequence[str],
    records: Sequence[dict[str, Any]],
    timings_type: str | None,
    default: float,
    err: TextIO,
) -> list[float] | None:
    """Weights from earlier test records, or None (split by name) when autodetection fails."""
    sums: dict[str, dict[str, float]] = {kind: {} for kind in RECORD_FIELD}
    for record in records:
        if not isinstance(record, dict):
            continue
        try:
            run_time = float(record.get("run_time") or 0)
        except (TypeError, ValueError):
            run_time = 0.0
        for kind, field in RECORD_FIELD.items():
            key = record.get(field)
            if isinstance(key, str):
                key = _strip_dot_slash(key) if kind == "filename" else key
                sums[kind][key] = sums[kind].get(key, 0.0) + run_time
    if timings_type is None:
        if any(_strip_dot_slash(item) in sums["filename"] for item in items):
            timings_type = "filename"
        elif any(item in sums["classname"] for item in items):
            timings_type = "classname"
        else:
            print("Error autodetecting timing type, falling back to weighting by name.", file=err)
            return None
    table = sums[timings_type]
    weights: list[float] = []
    for item in items:
        key = _strip_dot_slash(item) if timings_type == "filename" else item
        if key in table:
            weights.append(table[key])
        else:
            print(f'No timing found for "{item}"', file=err)
            weights.append(default)
    return weights


def _load_records(err: TextIO) -> list[dict[str, Any]] | None:
    """The earlier builds' test records, or None after printing why they cannot be read."""
    task_data = os.environ.get(TASK_DATA_ENV)
    path = Path(task_data, RESULTS_JSON) if task_data else None
    if path is None or not path.is_file():
        print("Error reading historical timing data: file does not exist", file=err)
        return None
    try:
        data = json.loads(path.read_bytes())
        tests = data["tests"]
        if not isinstance(tests, list):
            raise TypeError("'tests' is not a list")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"Error reading historical timing data: {exc}", file=err)
        return None
    return tests


def _weights(args: argparse.Namespace, items: list[str], err: TextIO) -> list[float] | None:
    if args.split_by == "name":
        return None
    if args.split_by == "filesize":
        sizes: list[float] = []
        for item in items:
            try:
                sizes.append(float(os.stat(item).st_size))
            except OSError:
                sizes.append(0.0)
        return sizes
    records = _load_records(err)
    if records is None:
        return None
    return timing_weights(items, records, args.timings_type, args.time_default, err)


def _my_items(args: argparse.Namespace, stdin: TextIO, err: TextIO) -> list[str]:
    text = Path(args.file).read_text(errors="replace") if args.file else stdin.read()
    items = text.split()
    return split(items, _weights(args, items, err), args.total)[args.index] if items else []


# ---------------------------------------------------------------- glob


def expand_braces(pattern: str) -> list[str]:
    """`a{b,c{d,e}}f` -> [abf, acdf, acef]; unbalanced braces stay literal."""
    depth = 0
    start = -1
    escaped = False
    for i, char in enumerate(pattern):
        if escaped or char == "\\":
            escaped = not escaped
            continue
        if char == "{":
            if depth == 0:
                start = i
            depth += 1
        elif char == "}" and depth:
            depth -= 1
            if depth == 0:
                body = pattern[start + 1 : i]
                options, level, last = [], 0, 0
                for j, c in enumerate(body):
                    if c == "{":
                        level += 1
                    elif c == "}":
                        level -= 1
                    elif c == "," and level == 0:
                        options.append(body[last:j])
                        last = j + 1
                options.append(body[last:])
                if len(options) == 1:  # `{x}` is literal, as in bash
                    rest = expand_braces(pattern[i + 1 :])
                    return [pattern[: i + 1] + r for r in rest]
                head, tail = pattern[:start], pattern[i + 1 :]
                tails = expand_braces(tail)
                return [head + o + t for opt in options for o in expand_braces(opt) for t in tails]
    return [pattern]


_MAGIC = re.compile(r"[*?\[\\]")


def _segment_regex(segment: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            while i + 1 < len(segment) and segment[i + 1] == "*":
                i += 1
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "\\" and i + 1 < len(segment):
            i += 1
            out.append(re.escape(segment[i]))
        elif char == "[":
            end = segment.find("]", i + 2 if segment[i + 1 : i + 2] in ("!", "^", "]") else i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = segment[i + 1 : end]
                negate = body[:1] in ("!", "^")
                body = body[1:] if negate else body
                body = body.replace("\\", "\\\\").replace("[", "\\[")
                out.append(f"[^/{body}]" if negate else f"[{body}]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def glob_one(pattern: str, cwd: Path) -> list[str]:
    """Files matching one brace-free pattern, sorted; paths keep the pattern's literal prefix."""
    segments = pattern.split("/")
    prefix: list[str] = []
    while len(segments) > 1 and not _MAGIC.search(segments[0]):
        prefix.append(segments.pop(0))
    base_text = "/".join(prefix)
    base = cwd / base_text if base_text else cwd  # an absolute prefix replaces cwd
    if len(segments) == 1 and not _MAGIC.search(segments[0]):
        return [pattern] if (base / segments[0]).is_file() else []
    parts: list[str] = []
    for n, segment in enumerate(segments):
        last = n == len(segments) - 1
        if segment == "**":
            parts.append(".*" if last else "(?:[^/]*/)*")
        else:
            parts.append(_segment_regex(segment) + ("" if last else "/"))
    regex = re.compile("".join(parts), re.DOTALL)
    deep = "**" in segments
    depth = len(segments)
    found: list[str] = []
    for rel in _walk_files(base, deep, depth):
        if regex.fullmatch(rel):
            found.append(f"{base_text}/{rel}" if base_text else rel)
    return sorted(found)


def _walk_files(base: Path, deep: bool, depth: int) -> Iterator[str]:
    """Relative posix paths of files below `base` (linked folders not followed)."""
    if not base.is_dir():
        return
    for folder, dirs, files in os.walk(base):
        rel_folder = Path(folder).relative_to(base).as_posix()
        level = 0 if rel_folder == "." else rel_folder.count("/") + 1
        if not deep and level + 1 >= depth:
            dirs[:] = []
        for name in files:
            yield name if level == 0 else f"{rel_folder}/{name}"


def glob(patterns: Sequence[str], cwd: Path) -> list[str]:
    """`circleci tests glob`: per pattern, its sorted matches; patterns in order, duplicates kept."""
    out: list[str] = []
    for pattern in patterns:
        matches: set[str] = set()
        for alternative in expand_braces(pattern):
            matches.update(glob_one(alternative, cwd))
        out.extend(sorted(matches))
    return out


# ---------------------------------------------------------------- env subst

_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def env_subst(text: str, env: dict[str, str]) -> str:
    """envsubst: `$VAR` and `${VAR}` from `env`, unset → empty; any other `$` stays."""
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), text)


# ---------------------------------------------------------------- command line


def _split_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", type=int, default=None)
    parser.add_argument("--total", type=int, default=None)
    parser.add_argument("--split-by", choices=("name", "filesize", "timings"), default="name")
    parser.add_argument("--timings-type", choices=sorted(TIMINGS_TYPES), default=None)
    parser.add_argument("--time-default", default=None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="circleci", allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)
    tests = commands.add_parser("tests", allow_abbrev=False).add_subparsers(dest="sub", required=True)
    glob_cmd = tests.add_parser("glob", allow_abbrev=False)
    glob_cmd.add_argument("patterns", nargs="+")
    split_cmd = tests.add_parser("split", allow_abbrev=False)
    split_cmd.add_argument("file", nargs="?")
    _split_options(split_cmd)
    run_cmd = tests.add_parser("run", allow_abbrev=False)
    run_cmd.add_argument("--command", required=True)
    run_cmd.add_argument("--verbose", action="store_true")
    run_cmd.add_argument("file", nargs="?")
    _split_options(run_cmd)
    step = commands.add_parser("step", allow_abbrev=False).add_subparsers(dest="sub", required=True)
    step.add_parser("halt")
    env = commands.add_parser("env", allow_abbrev=False).add_subparsers(dest="sub", required=True)
    env.add_parser("subst").add_argument("text", nargs="?")
    return parser


def _node_defaults(args: argparse.Namespace) -> str | None:
    """Fill --index/--total/--time-default; an error message if they are unusable."""
    try:
        if args.index is None:
            args.index = int(os.environ.get("CIRCLE_NODE_INDEX") or 0)
        if args.total is None:
            args.total = int(os.environ.get("CIRCLE_NODE_TOTAL") or 1)
        args.time_default = DEFAULT_TIME if args.time_default is None else parse_duration(args.time_default)
    except ValueError as exc:
        return str(exc)
    if args.total < 1 or not 0 <= args.index < args.total:
        return f"--index must be in [0, --total) and --total at least 1 (got {args.index}, {args.total})"
    if args.timings_type is not None:
        args.timings_type = TIMINGS_TYPES[args.timings_type]
    return None


def _unavailable(argv: Sequence[str]) -> str | None:
    """The refusal for commands circlet does not provide, or None if argparse should handle it."""
    if not argv or argv[0].startswith("-"):
        return None
    known = {"tests": None, "step": {"halt"}, "env": {"subst"}}
    if argv[0] not in known:
        return argv[0]
    allowed = known[argv[0]]
    if allowed is not None and len(argv) > 1 and not argv[1].startswith("-") and argv[1] not in allowed:
        return f"{argv[0]} {argv[1]}"
    return None


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one `circleci` command; returns the exit status (2 for usage errors)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    stdin, out, err = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    refused = _unavailable(argv)
    if refused is not None:
        print(f"circleci {refused}: not available in circlet builds ({AVAILABLE})", file=err)
        return 2
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage
        return exc.code if isinstance(exc.code, int) else 2
    if args.command == "step":
        return _halt(err)
    if args.command == "env":
        text = args.text if args.text is not None else stdin.read()
        out.write(env_subst(text, dict(os.environ)) + ("\n" if args.text is not None else ""))
        return 0
    if args.sub == "glob":
        for path in glob(args.patterns, Path.cwd()):
            print(path, file=out)
        return 0
    problem = _node_defaults(args)
    if problem is not None:
        print(f"circleci tests {args.sub}: {problem}", file=err)
        return 2
    try:
        mine = _my_items(args, stdin, err)
    except OSError as exc:
        print(f"circleci tests {args.sub}: cannot read {args.file}: {exc.strerror or exc}", file=err)
        return 1
    if args.sub == "split":
        for item in mine:
            print(item, file=out)
        return 0
    return _run(args.command, mine, args.verbose, out, err)


def _run(command: str, items: list[str], verbose: bool, out: TextIO, err: TextIO) -> int:
    if verbose:
        print(f"circleci tests run: {len(items)} item(s) on this node", file=err)
    if not items:
        return 0
    out.flush()
    proc = subprocess.run(["bash", "-c", command], input="".join(i + "\n" for i in items), text=True)
    return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode


def _halt(err: TextIO) -> int:
    target = os.environ.get(HALT_FILE_ENV)
    if not target:
        print(f"circleci step halt: {HALT_FILE_ENV} is not set (not inside a circlet build)", file=err)
        return 1
    Path(target).touch()
    return 0


def command_script(python: str) -> str:
    """A POSIX shell script to install as `circleci` and `circleci-agent` on a build's PATH."""
    quoted = "'" + python.replace("'", "'\\''") + "'"
    return f'#!/bin/sh\nexec {quoted} -m circlet.agent "$@"\n'


if __name__ == "__main__":
    sys.exit(main())
