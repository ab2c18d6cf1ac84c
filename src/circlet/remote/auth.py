"""Who may call the runner gateway: workers (a shared token) and, for one build, its runner.

Every call needs the worker token (`Authorization: Bearer ...`, compared in constant time). With
no token configured the gateway refuses everything (403): it is off. Calls about one build also
need that build's token (`X-Circlet-Build-Token`, minted by the build_started reply; tokens.py).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from starlette.requests import Request

from circlet.core.errors import NotFound, PermissionDenied, Unauthenticated
from circlet.core.model import Build
from circlet.http.deps import Services, services
from circlet.remote import tokens

OFF_MESSAGE = (
    "the runner gateway is off: set CIRCLET_WORKER_TOKEN (the same value on the server and its workers)"
)


def worker_services(request: Request) -> Services:
    """The services, once the caller proved it is a worker; 403 when the gateway is off, 401 for a
    missing or wrong token."""
    found = services(request)
    if not found.worker_token:
        raise PermissionDenied(OFF_MESSAGE)
    if not tokens.same_secret(found.worker_token, tokens.bearer(request.headers.get("authorization"))):
        raise Unauthenticated(
            "a valid worker token is required (Authorization: Bearer <CIRCLET_WORKER_TOKEN>)"
        )
    return found


def runner_build(request: Request, build_id: int) -> tuple[Services, Build]:
    """The services and the build, once the caller proved it runs this build (worker token and
    the build's token); 403 for a token of another build, 404 for an unknown build."""
    found = worker_services(request)
    given = request.headers.get(tokens.BUILD_TOKEN_HEADER, "")
    if not tokens.verify_build_token(found.links.secret, given, build_id, time.time()):
        raise PermissionDenied(
            f"this call needs the build token of build {build_id} ({tokens.BUILD_TOKEN_HEADER})"
        )
    build = found.circlet.store.get_build_by_id(build_id)
    if build is None:
        raise NotFound(f"no build with id {build_id}")
    return found, build


class Replays:
    """Answers already given, by idempotency key, so that a call a worker resends (the answer was
    lost on the way) is answered the same and not applied twice. Bounded; in memory only: a
    resend that crosses a server restart is applied again (every call but test_results is
    idempotent anyway)."""

    def __init__(self, capacity: int = 8192) -> None:
        self._capacity = capacity
        self._answers: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str | None) -> Any:
        if not key:
            return None
        with self._lock:
            return self._answers.get(key)

    def put(self, key: str | None, answer: Any) -> None:
        if not key:
            return
        with self._lock:
            self._answers[key] = answer
            while len(self._answers) > self._capacity:
                self._answers.popitem(last=False)


class StripedLocks:
    """One of a fixed set of locks per key: appends to one action's log are serialized."""

    def __init__(self, count: int = 64) -> None:
        self._locks = [threading.Lock() for _ in range(count)]

    def __call__(self, *key: object) -> threading.Lock:
        return self._locks[hash(key) % len(self._locks)]
