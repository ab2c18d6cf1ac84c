"""What FakeSourceHost shares with git's rules: the checks of URLs, SHAs, ref names and paths,
commit identities and dates, ref lookup, and the working copy a checkout writes."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from circlet.core.errors import InvalidRequest, UnknownRevision
from circlet.core.model import Commit, Project

# The same checks as vcs/git.py (the fake may not import an adapter).
_HEX = re.compile(r"[0-9a-fA-F]{4,40}")
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock(/|$)")
_IDENT = re.compile(r"([^<>]*?)\s*<([^<>]*)>")
_FAKE_DATES = datetime(2024, 1, 1, tzinfo=UTC)  # commit n is dated n minutes later unless told
_TRACKED = "circlet-fake-tracked.json"  # in dest/.git: the files the last checkout wrote


@dataclass(frozen=True, kw_only=True)
class _FakeCommit:
    commit: Commit
    parent: str | None
    files: dict[str, str]


@dataclass
class _Refs:
    """Branches and tags of an origin or of a project's mirror; a mirror also knows the commits it
    fetched (an origin's commits are every commit made in it)."""

    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: set[str] = field(default_factory=set)


@dataclass
class _FakeRepo:
    default_branch: str | None
    refs: _Refs = field(default_factory=_Refs)
    unreachable: str | None = None  # the error sync and probe give while set


def _mirror_name(project: Project) -> str:
    return str(project.id) if project.id is not None else project.slug


def _check_url(url: str) -> None:
    if not url or url.startswith("-"):
        raise InvalidRequest(f'Invalid repository URL "{url}"')


def _check_fake_sha(sha: str) -> None:
    if not _HEX.fullmatch(sha):
        raise UnknownRevision(f'Revision "{sha}" not found in the repository')


def _bad_ref_name(name: str) -> bool:
    return not name or bool(_BAD_REF.search(name)) or name.endswith((".", "/")) or name.startswith("/")


def _check_new_ref(name: str, what: str) -> None:
    if _bad_ref_name(name) or name.startswith(("-", ".")):
        raise ValueError(f"git would refuse the {what} name {name!r}")


def _check_path(path: str) -> None:
    parts = path.split("/")
    if not path or any(part in ("", ".", "..", ".git") for part in parts):
        raise ValueError(f"git cannot store a file at {path!r}")


def _check_tree(tree: dict[str, str]) -> None:
    for path in tree:
        parts = path.split("/")
        for end in range(1, len(parts)):
            if "/".join(parts[:end]) in tree:
                raise ValueError(f"{'/'.join(parts[:end])!r} cannot be both a file and a directory")


def _clean_path(path: str) -> str:
    clean = path.strip("/")
    while clean.startswith("./"):
        clean = clean[2:]
    return clean


def _ident(text: str) -> tuple[str, str]:
    match = _IDENT.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected 'Name <email>', got {text!r}")
    return match[1], match[2]


def _git_date(when: datetime | None, count: int) -> str:
    """git's strict ISO-8601 (%aI): seconds, the offset kept."""
    if when is None:
        when = _FAKE_DATES + timedelta(minutes=count)
    if when.tzinfo is None:
        raise ValueError("commit dates must be timezone-aware")
    return when.replace(microsecond=0).isoformat()


def _clean_message(message: str) -> str:
    """`git commit -m` cleanup: trailing spaces, leading/trailing and repeated blank lines go."""
    lines: list[str] = []
    for line in message.split("\n"):
        line = line.rstrip()
        if line or (lines and lines[-1]):
            lines.append(line)
    text = "\n".join(lines).strip("\n")
    if not text:
        raise ValueError("git refuses an empty commit message")
    return text


def _fake_spec(
    project: Project, *, branch: str | None, tag: str | None, revision: str | None
) -> tuple[str, str, str]:
    """(kind, name, message when missing), with vcs/git.py's precedence and checks."""
    for what, value in (("branch", branch), ("tag", tag), ("revision", revision)):
        if value is not None and value.startswith("-"):
            raise InvalidRequest(f'Invalid {what} "{value}": it must not start with "-"')
    if revision is not None:
        missing = f'Revision "{revision}" not found in the repository'
        if not _HEX.fullmatch(revision):
            raise UnknownRevision(missing)
        return "revision", revision, missing
    if tag is not None:
        kind, name, missing = "tag", tag, f'Tag "{tag}" not found in the repository'
    else:
        name = branch if branch is not None else project.default_branch
        kind, missing = "branch", f'Branch "{name}" not found in the repository'
    if _bad_ref_name(name):
        raise UnknownRevision(missing)
    return kind, name, missing


def _lookup(refs: _Refs, kind: str, name: str) -> str | None:
    """The commit a name means, as `git rev-parse <name>^{commit}` finds it in a mirror."""
    if kind == "branch":
        return refs.branches.get(name)
    if kind == "tag":
        return refs.tags.get(name)
    wanted = name.lower()
    if len(name) < 40:
        # git tries ref names before abbreviated SHAs (tags first); a ref that does not point at a
        # commit starting with the revision means "not found" (vcs/git.py checks the prefix).
        target = refs.tags.get(name) or refs.branches.get(name)
        if target is not None:
            return target if target.startswith(wanted) else None
    found = [sha for sha in refs.commits if sha.startswith(wanted)]
    return found[0] if len(found) == 1 else None


def _write_working_copy(dest: Path, files: dict[str, str], *, head: str) -> None:
    """Write a commit's files; remove those the previous checkout wrote that it lacks."""
    git_dir = dest / ".git"
    tracked = git_dir / _TRACKED
    before: list[str] = json.loads(tracked.read_text()) if tracked.exists() else []
    for path in before:
        if path not in files:
            target = dest / path
            target.unlink(missing_ok=True)
            parent = target.parent
            while parent != dest and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
    for path, text in files.items():
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git_dir.mkdir(parents=True, exist_ok=True)
    (git_dir / "HEAD").write_text(head + "\n")
    tracked.write_text(json.dumps(sorted(files)))
