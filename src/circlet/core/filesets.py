"""Rules about the files steps store (artifacts, workspace paths): names, prefixes, globs. Pure.

The runner does the file-system work (runner/confine.py, runner/artifacts.py...); this module
only decides, from paths as text, what things are called and whether a path stays inside the
build's own directories.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from pathlib import PurePosixPath

from circlet.core.errors import InvalidRequest


class PathRefused(InvalidRequest):
    """A path a step may not use: outside the build's directories, or malformed."""


def within(path: PurePosixPath, roots: Iterable[PurePosixPath]) -> bool:
    """True when the absolute, normalized `path` is one of `roots` or below one."""
    return any(path == root or root in path.parents for root in roots)


def allowed_roots(node_root: PurePosixPath, workdir: PurePosixPath) -> tuple[PurePosixPath, ...]:
    """The directories a build owns: its node's directory (holding HOME) and the job's working
    directory when that is elsewhere (an absolute `working_directory`), unless that would hand
    it the whole machine or other builds (`/`, or a folder holding the node's directory)."""
    roots = [node_root]
    if workdir != PurePosixPath("/") and workdir not in node_root.parents and not within(workdir, roots):
        roots.append(workdir)
    return tuple(roots)


def display_path(path: PurePosixPath, home: PurePosixPath) -> str:
    """How an artifact stored without `destination` is named (DECISION, config.md 3.5): below
    HOME, the path relative to HOME (`project/out/a.log`: HOME is per build on circlet, so its
    absolute path means nothing to a reader); elsewhere the absolute path minus its leading `/`."""
    if home in path.parents:
        return path.relative_to(home).as_posix()
    return path.as_posix().lstrip("/")


def destination_prefix(destination: str | None) -> str:
    """`destination` as a clean prefix without slashes at either end ("" for none or `.`);
    PathRefused for `..` (an artifact name may not climb out of its build)."""
    if not destination:
        return ""
    parts = [p for p in destination.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathRefused(f"destination {destination!r} may not contain '..'")
    return "/".join(parts)


def artifact_name(
    file: PurePosixPath, stored: PurePosixPath, *, home: PurePosixPath, destination: str, single_file: bool
) -> str:
    """The name (API `path`) of `file`, found under the stored `path` `stored` (== file when a
    single file was stored): `destination/<relative to stored>`, `destination/<basename>` for a
    single file, or display_path without destination (config.md 3.5)."""
    if not destination:
        return display_path(file, home)
    relative = file.name if single_file else file.relative_to(stored).as_posix()
    return f"{destination}/{relative}"


def workspace_glob(pattern: str) -> str:
    """A persist_to_workspace path (Go filepath.Match: `*` and `?` stay within a segment,
    `[...]` and `[^...]` classes, `\\` escapes) as a Python glob pattern relative to the root.
    PathRefused for absolute patterns and `..` segments."""
    if not pattern or pattern.startswith("/"):
        raise PathRefused(f"workspace path {pattern!r} must be relative to the root")
    normalized = posixpath.normpath(pattern)
    if normalized == ".." or normalized.startswith("../") or "/../" in f"/{pattern}/":
        raise PathRefused(f"workspace path {pattern!r} may not contain '..'")
    out: list[str] = []
    i = 0
    in_class = False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append(nxt if in_class or nxt not in "*?[]" else f"[{nxt}]")
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
            out.append("[")
            if pattern[i + 1 : i + 2] == "^":
                out.append("!")
                i += 1
        elif char == "]" and in_class:
            in_class = False
            out.append("]")
        else:
            out.append(char)
        i += 1
    if in_class:
        raise PathRefused(f"workspace path {pattern!r} has an unclosed '['")
    return "".join(out)
