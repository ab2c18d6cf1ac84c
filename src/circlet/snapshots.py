"""The commit a trigger builds, read from the project's mirror, fetching only when needed.

Fetching the repository is the slowest part of a trigger: ~6 ms for a repository on the same
disk, a network round trip or several for a remote one. A build of a full commit SHA the mirror
already has (a retry, a trigger with a `revision`, a push the branch poller already fetched)
needs no fetch: the commit cannot have changed. Anything else (a branch, a tag, an unknown or
abbreviated SHA) fetches first, so the newest head is built.
"""

from __future__ import annotations

import re

from circlet.core.errors import InvalidRequest, RepositoryError, UnknownRevision
from circlet.core.model import Project
from circlet.core.ports import Snapshot, SourceHost

FULL_SHA = re.compile(r"[0-9a-fA-F]{40}")


def build_snapshot(
    source: SourceHost,
    project: Project,
    *,
    path: str,
    branch: str | None = None,
    tag: str | None = None,
    revision: str | None = None,
) -> Snapshot:
    """The snapshot (commit and the file at `path`) to build; see the module docstring.
    InvalidRequest when the repository cannot be fetched, UnknownRevision when the commit,
    branch or tag does not exist."""
    if revision is not None and FULL_SHA.fullmatch(revision):
        try:
            return source.snapshot(project, revision=revision, path=path)
        except (UnknownRevision, RepositoryError):
            pass  # not fetched yet (or no mirror yet): fetch, then look again
    fetch(source, project)
    return source.snapshot(
        project, branch=branch if not revision else None, tag=tag, revision=revision, path=path
    )


def fetch(source: SourceHost, project: Project) -> None:
    """Update the project's mirror; InvalidRequest (a 400 naming the project) when it cannot be
    fetched. Blocking."""
    try:
        source.sync(project)
    except RepositoryError as exc:
        raise InvalidRequest(f"Could not fetch the repository of {project.slug}: {exc.message}") from exc
