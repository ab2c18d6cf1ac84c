"""create_app: the ASGI application over already-built services (bootstrap builds them)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from circlet import __version__
from circlet.http import api, errors
from circlet.http.deps import Services

_SLASHES = re.compile(r"/{2,}")


class NormalizePath:
    """Tolerate repeated and trailing slashes (`//user/repos`, `/me/`), as clients send them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            clean = _SLASHES.sub("/", path)
            if len(clean) > 1 and clean.endswith("/"):
                clean = clean.rstrip("/") or "/"
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
    app.include_router(api.router, prefix="/api/v1.1")
    app.add_middleware(CorsAnyOrigin)
    app.add_middleware(NormalizePath)
    return app
