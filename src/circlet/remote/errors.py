"""The error of the worker's side of the runner gateway."""

from __future__ import annotations

from circlet.core.errors import CircletError


class GatewayError(CircletError):
    """The gateway refused a call (4xx), or could not be reached for `retry_for` seconds."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
