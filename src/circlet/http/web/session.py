"""Web sessions and CSRF protection.

A session is a signed cookie, never the API token: `circlet_session` holds the token's stored
hash, an expiry and an HMAC of both under the server's secret (the same secret that signs
output_url links). The hash alone cannot call the API (the API wants the secret), and
revoking the token ends every session made with it, since each request looks the token up by
its hash again (cached a few seconds). The cookie is HttpOnly and SameSite=Lax; it is Secure
when the request came over https or `CIRCLET_BASE_URL` is https (behind a TLS proxy), and not
on plain http, where browsers would refuse to send it back.

CSRF: every POST form carries the field `csrf`, which must equal the `circlet_csrf` cookie
(double submit; the cookie is random, HttpOnly, SameSite=Strict, made on the first page).
A POST whose Origin header names another site is refused as well.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from circlet.core.errors import CircletError
from circlet.core.model import Token, User
from circlet.http.deps import services

SESSION_COOKIE = "circlet_session"
CSRF_COOKIE = "circlet_csrf"
SESSION_SECONDS = 14 * 24 * 3600  # a session lasts two weeks, then sign in again
_TOKEN_CACHE_SECONDS = 5.0


class LoginRequired(CircletError):
    """No valid session: the page redirects to /login (raised by routes, handled by WebRoute)."""


class CsrfFailed(CircletError):
    """A POST without the right CSRF field or from another origin (403)."""


@dataclass(frozen=True, kw_only=True)
class Session:
    """Who is signed in: their token (as stored) and user."""

    token: Token
    user: User


def _mac(secret: bytes, token_hash: str, expires: int) -> str:
    digest = hmac.new(secret, f"web-session\n{token_hash}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")


def session_value(secret: bytes, token: Token, now: float) -> str:
    """The cookie value for a session of `token`."""
    expires = int(now) + SESSION_SECONDS
    return f"{token.token_hash}.{expires}.{_mac(secret, token.token_hash, expires)}"


def parse_session_value(secret: bytes, value: str, now: float) -> str | None:
    """The token hash of a valid, unexpired cookie value; None otherwise."""
    parts = value.split(".")
    if len(parts) != 3 or not parts[1].isascii() or not parts[1].isdigit() or len(parts[1]) > 12:
        return None
    token_hash, expires_text, mac = parts
    expires = int(expires_text)
    if expires < now or not hmac.compare_digest(_mac(secret, token_hash, expires), mac):
        return None
    return token_hash


def _find_token(request: Request, token_hash: str) -> Token | None:
    """The stored token with this hash (None when unknown or revoked), cached per application
    for _TOKEN_CACHE_SECONDS: revoking a token ends its sessions within that time."""
    state = request.app.state
    if not hasattr(state, "web_token_cache"):
        state.web_token_cache = {}
    _token_cache: dict[str, tuple[float, Token | None]] = state.web_token_cache
    now = time.monotonic()
    hit = _token_cache.get(token_hash)
    if hit is not None and hit[0] > now:
        return hit[1]
    token = services(request).circlet.token_by_hash(token_hash)
    if len(_token_cache) > 10_000:
        _token_cache.clear()
    _token_cache[token_hash] = (now + _TOKEN_CACHE_SECONDS, token)
    return token


def current_session(request: Request) -> Session | None:
    """The signed-in user, or None. Also makes the API's permission helpers (deps.caller) see
    the session's token for this request."""
    if hasattr(request.state, "web_session"):
        found: Session | None = request.state.web_session
        return found
    session = None
    value = request.cookies.get(SESSION_COOKIE, "")
    token_hash = parse_session_value(services(request).links.secret, value, time.time()) if value else None
    token = _find_token(request, token_hash) if token_hash else None
    if token is not None and not token.revoked and token.user_id is not None:
        user = services(request).circlet.user(token.user_id)
        if user is not None:
            session = Session(token=token, user=user)
    request.state.web_session = session
    request.state.token = session.token if session else None  # what deps.caller() reads
    return session


def require_session(request: Request) -> Session:
    session = current_session(request)
    if session is None:
        raise LoginRequired("Sign in to see this page.")
    return session


def secure_cookies(request: Request) -> bool:
    """Secure cookies when the page was reached over https or the public URL is https."""
    forwarded = request.headers.get("x-forwarded-proto", "")
    return (
        request.url.scheme == "https"
        or services(request).links.base_url.startswith("https://")
        or (forwarded == "https" and request.client is not None and request.client.host in _LOOPBACK)
    )


_LOOPBACK = ("127.0.0.1", "::1")


def set_session(request: Request, response: Response, token: Token) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session_value(services(request).links.secret, token, time.time()),
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
    )


def clear_session(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=secure_cookies(request)
    )


def csrf_token(request: Request) -> str:
    """This browser's CSRF value (made now if it has none; ensure_csrf_cookie sends it)."""
    if not hasattr(request.state, "csrf"):
        existing = request.cookies.get(CSRF_COOKIE, "")
        request.state.csrf = existing if len(existing) == 43 else secrets.token_urlsafe(32)
    value: str = request.state.csrf
    return value


def ensure_csrf_cookie(request: Request, response: Response) -> None:
    if hasattr(request.state, "csrf") and request.cookies.get(CSRF_COOKIE) != request.state.csrf:
        response.set_cookie(
            CSRF_COOKIE,
            request.state.csrf,
            path="/",
            httponly=True,
            samesite="strict",
            secure=secure_cookies(request),
        )


def check_csrf(request: Request, submitted: str) -> None:
    """Raise CsrfFailed unless the form's `csrf` matches the cookie and the origin is ours."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not submitted or not hmac.compare_digest(cookie.encode(), submitted.encode()):
        raise CsrfFailed("The form expired or came from another site: reload the page and try again.")
    origin = request.headers.get("origin")
    if origin and origin != "null":
        ours = {f"{request.url.scheme}://{request.url.netloc}", services(request).links.base_url}
        host = urlsplit(origin)
        if f"{host.scheme}://{host.netloc}" not in ours:
            raise CsrfFailed("Cross-site form submissions are refused.")


def safe_next(target: str | None) -> str:
    """A local path to go to after signing in (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
