"""Worker and build tokens of the runner gateway.

The worker token is one shared secret (CIRCLET_WORKER_TOKEN) a worker presents on every call.
A build token is minted by the server when a worker starts a build (the reply to build_started)
and names that build: calls that change or read a build need it as well, so a token that leaks
out of one build cannot write another one. A build token is `<build_id>.<expires>.<signature>`,
the signature an HMAC of the server's secret (core/signing.py) over a path no URL can have.
"""

from __future__ import annotations

import hmac

from circlet.core import signing

PREFIX = "/internal/runner/v1"  # where the gateway is mounted
IDEMPOTENCY_HEADER = "idempotency-key"  # the same on every resend of one call
BUILD_TOKEN_LIFETIME = 7 * 24 * 3600  # seconds: longer than any build runs
WORKER_TOKEN_HEADER = "authorization"  # `Bearer <worker token>`
BUILD_TOKEN_HEADER = "x-circlet-build-token"


def _subject(build_id: int) -> str:
    return f"runner-gateway/build/{build_id}"  # never a URL path: those start with "/"


def issue_build_token(secret: bytes, build_id: int, now: float, lifetime: int = BUILD_TOKEN_LIFETIME) -> str:
    """A token that lets its holder report for (and fetch the source of) this build only."""
    expires = int(now) + lifetime
    return f"{build_id}.{expires}.{signing.sign(secret, _subject(build_id), expires)}"


def build_of_token(token: str) -> int | None:
    """The build a token claims to be for (unverified), or None when it is malformed."""
    head = token.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def verify_build_token(secret: bytes, token: str, build_id: int, now: float) -> bool:
    """True when `token` is a valid, unexpired token of `build_id`."""
    parts = token.split(".")
    if not token.isascii() or len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return False
    if int(parts[0]) != build_id:
        return False
    return signing.verify(secret, _subject(build_id), int(parts[1]), parts[2], now)


def same_secret(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a presented worker token with the configured one."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None
