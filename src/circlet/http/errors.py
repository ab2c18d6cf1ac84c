"""Domain errors and framework errors mapped to HTTP in one place. Every error body is
`{"message": ...}`; nothing a client sends causes a 5xx."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from circlet.core.errors import (
    CircletError,
    ConfigError,
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RepositoryError,
    Unauthenticated,
)
from circlet.http.responses import error_response

log = logging.getLogger("circlet.http")

STATUS: tuple[tuple[type[CircletError], int], ...] = (
    (NotFound, 404),
    (InvalidRequest, 400),
    (ConfigError, 400),
    (RepositoryError, 400),
    (PermissionDenied, 403),
    (Unauthenticated, 401),
    (Conflict, 409),
)


def status_for(exc: CircletError) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 400


def install(app: FastAPI) -> None:
    @app.exception_handler(CircletError)
    async def circlet_error(request: Request, exc: CircletError) -> Response:
        return error_response(request, status_for(exc), exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return error_response(request, 400, "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"No such endpoint: {request.method} {request.url.path}"
        if exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(request, exc.status_code, message)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("event=unhandled_error path=%s", request.url.path)
        return error_response(request, 500, "circlet hit an internal error; the server log has the details")
