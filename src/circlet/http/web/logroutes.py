"""Log endpoints of the page (session-authenticated, like every page):

- `B/log/{step}/{index}?start=&end=` a window as JSON {html, start, end, size}; without
  `start`, the tail; `end` without `start` gives the WINDOW_BYTES before it ("load earlier");
- `B/log/{step}/{index}/events?offset=` the live log as server-sent events (logview.stream);
- `B/raw/{step}/{index}` the raw log as text, streamed.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from circlet.core.errors import NotFound
from circlet.core.model import Build
from circlet.http.deps import services
from circlet.http.web import logview
from circlet.http.web.common import WebRoute, open_build, secure
from circlet.service import Circlet

router = APIRouter(route_class=WebRoute, include_in_schema=False)

B = "/{vcs_type}/{username}/{reponame}/{build_num}"
MAX_OFFSET = 2**62


def _offset(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise NotFound("No such place in the log")
    return min(int(text), MAX_OFFSET)


def _action(circlet: Circlet, build: Build, step: int, index: int) -> None:
    if not (0 <= step < MAX_OFFSET and 0 <= index < MAX_OFFSET):
        raise NotFound(f"Build {build.build_num} has no step {step} on container {index}")
    circlet.action(build, step, index)  # NotFound for an unknown action


@router.get(B + "/log/{step}/{index}")
def log_window(
    request: Request, vcs_type: str, username: str, reponame: str, build_num: str, step: int, index: int
) -> Response:
    _, _, build = open_build(request, vcs_type, username, reponame, build_num)
    circlet = services(request).circlet
    _action(circlet, build, step, index)
    start = _offset(request.query_params.get("start"))
    end = _offset(request.query_params.get("end"))
    if start is None and end is None:
        found = logview.tail(circlet, build, step, index)
    elif start is None:
        assert end is not None
        found = logview.window(circlet, build, step, index, start=max(0, end - logview.WINDOW_BYTES), end=end)
    else:
        found = logview.window(circlet, build, step, index, start=start, end=end)
    return secure(JSONResponse(found.json()))


@router.get(B + "/log/{step}/{index}/events")
async def log_events(
    request: Request, vcs_type: str, username: str, reponame: str, build_num: str, step: int, index: int
) -> Response:
    session, _, build = await run_in_threadpool(open_build, request, vcs_type, username, reponame, build_num)
    circlet = services(request).circlet
    await run_in_threadpool(_action, circlet, build, step, index)
    offset = _offset(request.headers.get("last-event-id")) or _offset(request.query_params.get("offset")) or 0
    key = session.token.token_hash
    return secure(
        StreamingResponse(
            logview.stream(request, circlet, build, step, index, offset, key=key),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )
    )


@router.get(B + "/raw/{step}/{index}")
def raw_log(
    request: Request, vcs_type: str, username: str, reponame: str, build_num: str, step: int, index: int
) -> Response:
    _, _, build = open_build(request, vcs_type, username, reponame, build_num)
    circlet = services(request).circlet
    _action(circlet, build, step, index)
    name = f"{build.build_num}-{step}-{index}.log"
    return secure(
        StreamingResponse(
            _raw(circlet, build, step, index),
            media_type="text/plain; charset=utf-8",
            headers={"content-disposition": f'inline; filename="{name}"'},
        )
    )


def _raw(circlet: Circlet, build: Build, step: int, index: int, block: int = 1 << 20) -> Iterator[bytes]:
    offset = 0
    while True:
        data = circlet.logs.read(build.id or 0, step, index, offset=offset, length=block)
        if not data:
            return
        offset += len(data)
        yield data
