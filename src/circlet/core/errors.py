"""Domain errors. The HTTP layer maps each class to one status code (http/errors.py)."""

from __future__ import annotations

from dataclasses import dataclass


class CircletError(Exception):
    """Base of every error a user can cause; `message` is shown to them as-is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(CircletError):
    """A project, build, branch or other named thing does not exist (HTTP 404)."""


class InvalidRequest(CircletError):
    """The request cannot be carried out as given (HTTP 400)."""


class JobNotRunnable(InvalidRequest):
    """The config has no such job to trigger alone, or is 2.1, whose jobs run in workflows (HTTP 400)."""


class UnknownRevision(InvalidRequest):
    """A branch, tag or revision that the repository does not have (HTTP 400)."""


class PermissionDenied(CircletError):
    """Authenticated but not allowed (HTTP 403)."""


class Unauthenticated(CircletError):
    """No valid token (HTTP 401 or 404, by endpoint)."""


class Conflict(CircletError):
    """The thing already exists (HTTP 409)."""


class RepositoryError(CircletError):
    """git could not read or fetch the repository."""


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One thing wrong with a config: where (file, key path, line) and what."""

    message: str
    path: str = ""  # dotted key path, e.g. `jobs.build.steps[2].run.command`
    line: int | None = None  # 1-based line in the file, when known
    file: str = ".circleci/config.yml"

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        if self.path:
            where += f" ({self.path})"
        return f"{where}: {self.message}"


class ConfigError(CircletError):
    """The config cannot be used; carries every problem found, not only the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in problems) or "invalid config")
