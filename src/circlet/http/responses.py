"""JSON responses as CircleCI clients expect them (api-v1.1.md section 4)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Hashable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from circlet.http.cache import RenderCache

JSON_TYPE = "application/json;charset=utf-8"


def json_response(
    request: Request | None, data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """Compact JSON when the client accepts JSON, pretty-printed otherwise; same content."""
    accept = request.headers.get("accept", "") if request is not None else "application/json"
    if "application/json" in accept:
        body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    else:
        body = json.dumps(data, indent=2, ensure_ascii=False)
    return Response(body.encode(), status_code=status, media_type=JSON_TYPE, headers=headers)


def _encode(data: Any, compact: bool) -> bytes:
    if compact:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return json.dumps(data, indent=2, ensure_ascii=False).encode()


async def cached_json_response_async(
    request: Request, cache: RenderCache, key: Hashable, generation: int, render: Callable[[], Any]
) -> Response:
    """cached_json_response for async handlers: a cache hit is answered on the event loop, a
    miss is rendered on the thread pool (rendering reads the database)."""
    compact = "application/json" in request.headers.get("accept", "")
    full_key = (key, compact, generation)
    body = cache.get(full_key[:2], generation)
    if body is None:
        # One render per key at a time: concurrent requests for it wait for that render
        # instead of all reading the database at once (a cold cache under load).
        pending = _in_flight.get(full_key)
        if pending is None:
            pending = asyncio.ensure_future(run_in_threadpool(lambda: _encode(render(), compact)))
            _in_flight[full_key] = pending
            pending.add_done_callback(lambda _: _in_flight.pop(full_key, None))
        body = await asyncio.shield(pending)
        cache.put(full_key[:2], generation, body)
    return Response(body, media_type=JSON_TYPE)


_in_flight: dict[Hashable, asyncio.Future[bytes]] = {}  # renders running, by key (one event loop)


def error_response(request: Request | None, status: int, message: str) -> Response:
    return json_response(request, {"message": message}, status)
