"""create_app: the ASGI application over already-built services (bootstrap builds them)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from circlet import __version__
from circlet.http import admin, api, artifacts, errors, hooks, pipelines, projects, schemas, web
from circlet.http.deps import Services
from circlet.remote import gateway

_SLASHES = re.compile(r"/{2,}")


def legacy_path(path: str) -> str:
    """The legacy `/api/v1` family is v1.1 with vcs-type `github` (api-v1.1.md 1):
    `/api/v1/project/u/p/...` -> `/api/v1.1/project/github/u/p/...`, `/api/v1/X` -> `/api/v1.1/X`."""
    if path != "/api/v1" and not path.startswith("/api/v1/"):
        return path
    rest = path[len("/api/v1") :]
    if rest.startswith("/project/"):
        rest = "/project/github/" + rest[len("/project/") :]
    return "/api/v1.1" + rest


class NormalizePath:
    """Tolerate repeated and trailing slashes (`//user/repos`, `/me/`), as clients send them,
    and serve the legacy `/api/v1` paths as their v1.1 equivalents."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            clean = _SLASHES.sub("/", path)
            if len(clean) > 1 and clean.endswith("/"):
                clean = clean.rstrip("/") or "/"
            clean = legacy_path(clean)
            if clean != path:
                scope = dict(scope)
                scope["path"] = clean
                scope["raw_path"] = clean.encode()
        await self.app(scope, receive, send)


class CorsAnyOrigin:
    """`Access-Control-Allow-Origin: *` on API answers (api-v1.1.md section 4)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"access-control-allow-origin", b"*")]
            await send(message)

        await self.app(scope, receive, send_with_cors)


def create_app(services: Services, *, on_shutdown: Callable[[], object] | None = None) -> FastAPI:
    """The application. `on_shutdown` runs when the server shuts down (uvicorn's lifespan),
    before uvicorn re-raises a SIGTERM it caught: the place to stop the executor."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if on_shutdown is not None:
            await run_in_threadpool(on_shutdown)

    app = FastAPI(
        lifespan=lifespan,
        title="circlet",
        version=__version__,
        description="A self-hosted CI server that speaks CircleCI's API v1.1.",
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )
    app.state.services = services
    errors.install(app)
    # projects first: its fixed paths (P/envvar, P/settings, /me) must win over api's P/{build_num}.
    app.include_router(projects.router, prefix="/api/v1.1")
    app.include_router(pipelines.router, prefix="/api/v1.1")  # workflows, approvals, contexts
    app.include_router(api.router, prefix="/api/v1.1")
    app.include_router(artifacts.router, prefix="/api/v1.1")  # artifact downloads
    schemas.install(app)
    app.include_router(admin.router, prefix="/api/v1.1")
    app.include_router(hooks.router, prefix="/api/v1.1")  # push webhooks (docs/push-triggers.md)
    app.include_router(gateway.router, prefix=gateway.PREFIX)  # workers of the celery executor
    web.install(app)  # the web page (docs/web.md); after the API so that /api/... wins
    app.add_middleware(CorsAnyOrigin)
    app.add_middleware(NormalizePath)
    return app
