"""The runner gateway: the RunReporter port, source and heartbeats over HTTP for remote workers.

Mounted at /internal/runner/v1 (http/app.py). A worker calls it with the worker token; calls about
one build also carry that build's token, which the reply to `started` hands out (auth.py). Every
call is safe to resend: reports are idempotent in the service, log appends carry the offset of
their first byte (the server skips what it already has), and `started`/`tests` answers are
replayed by idempotency key. Bodies are JSON in the executors/protocol.py shapes, except log
appends (binary frames, frames.py) and the source (a tar stream).

    POST /builds/{id}/queued                 {"at"}                     worker token only
    POST /builds/{id}/started                {"at", "worker", "node"?} -> {"ok", "build_token"} (worker token)
    POST /builds/{id}/actions/started        {"action"}
    POST /builds/{id}/actions/finished       {"action"}
    POST /builds/{id}/logs/{step}/{index}?offset=N   frames -> {"size"}   (409 + size on a gap)
    POST /builds/{id}/tests                  {"index", "tests", "exceptions"}
    POST /builds/{id}/finished               {"outcome", "at", "messages", "node"?}
    POST /builds/{id}/reports                {"actions": [{"op", "action"}], "finished"?}  (a batch)
    GET  /builds/{id}/source?project_id&sha&branch&tag   -> tar of a working copy with .git
    POST /heartbeat                          WorkerInfo -> HeartbeatReply
    .../blobs/...                            blobs.py
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from circlet.core.errors import InvalidRequest, NotFound
from circlet.core.model import Outcome
from circlet.core.workers import WorkerInfo
from circlet.executors import protocol
from circlet.http.deps import Services
from circlet.remote import blobs, frames, tokens
from circlet.remote.auth import Replays, StripedLocks, runner_build, worker_services

log = logging.getLogger("circlet.remote.gateway")

PREFIX = tokens.PREFIX
IDEMPOTENCY_HEADER = tokens.IDEMPOTENCY_HEADER
MAX_LOG_BODY = 32 << 20  # bytes of one log append
TAR_CHUNK = 1 << 16

KNOWN_BUILDS = 8192  # ids of builds known to exist, per store, remembered by _runner

router = APIRouter(include_in_schema=False)
_replays = Replays()
_log_locks = StripedLocks()
_known_builds: weakref.WeakKeyDictionary[Any, set[int]] = weakref.WeakKeyDictionary()
_known_lock = threading.Lock()


def _body(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    return data


def _field(data: dict[str, Any], name: str) -> Any:
    if name not in data:
        raise InvalidRequest(f"the body lacks {name!r}")
    return data[name]


def _parse(what: str, parse: Any, value: Any) -> Any:
    try:
        return parse(value)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidRequest(f"{what} is malformed: {type(exc).__name__}: {exc}") from None


def _runner(request: Request, build_id: int) -> Services:
    """auth.runner_build for calls that need only the services: the same checks (worker token,
    the build's token, 404 for an unknown build), but a build found once is not looked up again
    (builds are never deleted), which spares a query on every report and log append."""
    found = worker_services(request)
    store = found.circlet.store
    with _known_lock:
        known = build_id in _known_builds.get(store, ())
    if not known:
        runner_build(request, build_id)
        _remember(found, build_id)
        return found
    if not tokens.verify_build_token(
        found.links.secret, request.headers.get(tokens.BUILD_TOKEN_HEADER, ""), build_id, time.time()
    ):
        runner_build(request, build_id)  # refuses with auth.py's answer
    return found


def _remember(found: Services, build_id: int) -> None:
    with _known_lock:
        ids = _known_builds.setdefault(found.circlet.store, set())
        if len(ids) >= KNOWN_BUILDS:
            ids.clear()
        ids.add(build_id)


def _node(data: dict[str, Any]) -> int | None:
    """The container a call is about (`node`), None for the whole build (RunReporter's `node`)."""
    node = data.get("node")
    if node is None:
        return None
    if isinstance(node, bool) or not isinstance(node, int) or node < 0:
        raise InvalidRequest(f"node must be a container index (0 or more), not {node!r}")
    return node


# ---------------------------------------------------------------- the RunReporter port


@router.post("/builds/{build_id}/queued")
def build_queued(request: Request, build_id: int, data: dict[str, Any]) -> dict[str, Any]:
    found = worker_services(request)
    found.circlet.build_queued(build_id, _parse("at", protocol.decode_time, _field(data, "at")))
    return {}


@router.post("/builds/{build_id}/started")
def build_started(request: Request, build_id: int, data: dict[str, Any]) -> dict[str, Any]:
    """True (with the build's token) when the worker may run the build; a resend is answered as
    the first call was."""
    found = worker_services(request)
    key = request.headers.get(IDEMPOTENCY_HEADER)
    replay = _replays.get(key)
    if replay is not None:
        return dict(replay)
    at = _parse("at", protocol.decode_time, _field(data, "at"))
    worker = str(_field(data, "worker"))
    node = _node(data)
    answer: dict[str, Any] = {"ok": found.circlet.build_started(build_id, at, worker, node)}
    if answer["ok"]:
        answer["build_token"] = tokens.issue_build_token(found.links.secret, build_id, time.time())
        _remember(found, build_id)
    _replays.put(key, answer)
    log.info("event=remote_build_started build_id=%s worker=%s ok=%s", build_id, worker, answer["ok"])
    return answer


@router.post("/builds/{build_id}/actions/started")
def action_started(request: Request, build_id: int, data: dict[str, Any]) -> dict[str, Any]:
    found = _runner(request, build_id)
    found.circlet.action_started(build_id, _parse("action", protocol.decode_action, _field(data, "action")))
    return {}


@router.post("/builds/{build_id}/actions/finished")
def action_finished(request: Request, build_id: int, data: dict[str, Any]) -> dict[str, Any]:
    found = _runner(request, build_id)
    found.circlet.action_finished(build_id, _parse("action", protocol.decode_action, _field(data, "action")))
    return {}


@router.post("/builds/{build_id}/logs/{step}/{index}")
async def append_log(request: Request, build_id: int, step: int, index: int, offset: int = 0) -> Response:
    """Append frames whose first byte is byte `offset` of the action's log. Bytes the log already
    has are skipped (a resend); a batch starting past the log's end is refused with 409 and the
    log's size, so the worker resends from there."""
    found = await run_in_threadpool(_runner, request, build_id)
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > MAX_LOG_BODY:
            raise InvalidRequest(f"a log append may carry at most {MAX_LOG_BODY} bytes")
    batch = _parse("the log body", lambda b: list(frames.unpack(b)), bytes(body))

    def append() -> tuple[int, int]:
        logs = found.circlet.logs
        with _log_locks(build_id, step, index):
            size = logs.size(build_id, step, index) or 0
            if offset > size:
                return 409, size
            fresh = frames.skip(batch, size - offset)
            if fresh:
                writer = found.circlet.log_writer(build_id, step, index)
                try:
                    for frame in fresh:
                        writer.write(frame.data, frame.at, frame.stream)
                finally:
                    writer.close()
            return 200, size + sum(len(frame.data) for frame in fresh)

    status, size = await run_in_threadpool(append)
    if status == 409:
        message = f"this log has {size} bytes; the batch starts at {offset}: resend from {size}"
        return JSONResponse({"message": message, "size": size}, status_code=409)
    return JSONResponse({"size": size})


@router.post("/builds/{build_id}/tests")
def test_results(request: Request, build_id: int, data: dict[str, Any]) -> dict[str, Any]:
    found = _runner(request, build_id)
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if _replays.get(key) is not None:
        return {}
    tests, problems = _field(data, "tests"), _field(data, "exceptions")
    if not isinstance(tests, list) or not isinstance(problems, list):
        raise InvalidRequest("tests and exceptions must be lists")
    found.circlet.test_results(build_id, _parse("index", int, _field(data, "index")), tests, problems)
    _replays.put(key, {})
    return {}


@router.post("/builds/{build_id}/finished")
def build_finished(request: Request, build_id: int, data: dict[str, Any]) -> dict[str, Any]:
    found = _runner(request, build_id)
    outcome = _parse("outcome", Outcome, _field(data, "outcome"))
    at = _parse("at", protocol.decode_time, _field(data, "at"))
    messages = _parse("messages", protocol.decode_messages, data.get("messages", []))
    found.circlet.build_finished(build_id, outcome, at, messages, _node(data))
    return {}


@router.post("/builds/{build_id}/reports")
def reports(request: Request, build_id: int, data: dict[str, Any]) -> dict[str, Any]:
    """Several reports of one build in one call (executors/remote_child.py batches them: a
    step's end and the next step's start cost one request, not two), applied in order:
    {"actions": [{"op": "started" | "finished", "action": {...}}], "finished": {...} | absent}
    ("finished": the body of /finished). All are parsed before any is applied."""
    found = _runner(request, build_id)
    items = data.get("actions", [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise InvalidRequest("actions must be a list of objects")
    actions = []
    for item in items:
        op = _field(item, "op")
        if op not in ("started", "finished"):
            raise InvalidRequest(f"an action report's op is started or finished, not {op!r}")
        actions.append((op, _parse("action", protocol.decode_action, _field(item, "action"))))
    end = data.get("finished")
    if end is not None:
        end = _body(end)
        outcome = _parse("outcome", Outcome, _field(end, "outcome"))
        at = _parse("at", protocol.decode_time, _field(end, "at"))
        messages = _parse("messages", protocol.decode_messages, end.get("messages", []))
    for op, action in actions:
        (found.circlet.action_started if op == "started" else found.circlet.action_finished)(build_id, action)
    if end is not None:
        found.circlet.build_finished(build_id, outcome, at, messages, _node(end))
    return {}


# ---------------------------------------------------------------- heartbeat


@router.post("/heartbeat")
def heartbeat(request: Request, data: dict[str, Any]) -> dict[str, Any]:
    """Record the worker's heartbeat; the reply names the builds it must stop."""
    found = worker_services(request)
    info = _parse("the heartbeat", WorkerInfo.from_dict, _body(data))
    reply: dict[str, Any] = found.circlet.worker_heartbeat(info).to_dict()
    return reply


# ---------------------------------------------------------------- source


@router.get("/builds/{build_id}/source")
def source(
    request: Request,
    build_id: int,
    project_id: int,
    sha: str,
    branch: str | None = None,
    tag: str | None = None,
) -> StreamingResponse:
    """A tar stream of a working copy of the build's revision, .git included, made from the
    server's mirror (so workers need no repository credentials). Only the build's own project and
    revision are served."""
    found, build = runner_build(request, build_id)
    if build.project_id != project_id or (build.vcs_revision and build.vcs_revision != sha):
        raise NotFound(f"build {build_id} builds another project or revision")
    project = found.circlet.store.get_project_by_id(project_id)
    if project is None:
        raise NotFound(f"no project with id {project_id}")
    scratch = Path(tempfile.mkdtemp(prefix=f"circlet-source-{build_id}-"))
    try:
        found.circlet.source.checkout(project, sha, scratch / "tree", branch=branch, tag=tag)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    log.info("event=remote_source build_id=%s sha=%s", build_id, sha)
    return StreamingResponse(_tar(scratch), media_type="application/x-tar")


def _tar(scratch: Path) -> Iterator[bytes]:
    """`tar` of scratch/tree, streamed; the scratch folder goes when the stream ends or breaks."""
    proc = subprocess.Popen(
        ["tar", "--numeric-owner", "-C", str(scratch / "tree"), "-cf", "-", "."],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        while chunk := proc.stdout.read(TAR_CHUNK):
            yield chunk
    finally:
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait()
        proc.stdout.close()
        shutil.rmtree(scratch, ignore_errors=True)


router.include_router(blobs.router)
