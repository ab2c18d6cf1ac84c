"""Web sessions and CSRF protection.

A session lives on the server (core/sessions.py, table `web_sessions`), never in the cookie:
`circlet_session` holds only a random secret, whose sha256 names the session row; the row points
at the API token used to sign in (the token's secret is never in a cookie, and the cookie cannot
call the API). Signing out (/logout) ends the row, so a copy of the cookie stops working too;
revoking the token ends its sessions, since every check looks the token up again; a session
expires after two weeks. Checks are cached per process for _SESSION_CACHE_SECONDS (5 s): the
server that handled the sign-out forgets the session at once, another server behind the same
database sees it within 5 s. The cookie is HttpOnly and SameSite=Lax; it is Secure
when the request came over https or `CIRCLET_BASE_URL` is https (behind a TLS proxy), and not
on plain http, where browsers would refuse to send it back.

CSRF: every POST form carries the field `csrf`, which must equal the `circlet_csrf` cookie
(double submit; the cookie is random, HttpOnly, SameSite=Strict, made on the first page and
made anew when signing in or out).
A POST whose Origin header names another site is refused as well.
"""

from __future__ import annotations

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
from circlet.core.sessions import SESSION_LIFETIME
from circlet.http.deps import services

SESSION_COOKIE = "circlet_session"
CSRF_COOKIE = "circlet_csrf"
SESSION_SECONDS = int(SESSION_LIFETIME.total_seconds())  # the cookie's max-age, as the row's
_SESSION_CACHE_SECONDS = 5.0


class LoginRequired(CircletError):
    """No valid session: the page redirects to /login (raised by routes, handled by WebRoute)."""


class CsrfFailed(CircletError):
    """A POST without the right CSRF field or from another origin (403)."""


@dataclass(frozen=True, kw_only=True)
class Session:
    """Who is signed in: their token (as stored) and user."""

    token: Token
    user: User


def _cache(request: Request) -> dict[str, tuple[float, Token | None]]:
    state = request.app.state
    if not hasattr(state, "web_session_cache"):
        state.web_session_cache = {}
    cache: dict[str, tuple[float, Token | None]] = state.web_session_cache
    return cache


def _cache_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()  # never keep the cookie's secret itself


def _session_token(request: Request, secret: str) -> Token | None:
    """The token of the live session with this secret (None when unknown, ended, expired or
    its token revoked), cached per application for _SESSION_CACHE_SECONDS."""
    cache = _cache(request)
    key = _cache_key(secret)
    now = time.monotonic()
    hit = cache.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    token = services(request).circlet.session_token(secret)
    if len(cache) > 10_000:
        cache.clear()
    cache[key] = (now + _SESSION_CACHE_SECONDS, token)
    return token


def current_session(request: Request) -> Session | None:
    """The signed-in user, or None. Also makes the API's permission helpers (deps.caller) see
    the session's token for this request."""
    if hasattr(request.state, "web_session"):
        found: Session | None = request.state.web_session
        return found
    session = None
    secret = request.cookies.get(SESSION_COOKIE, "")
    token = _session_token(request, secret) if 0 < len(secret) <= 128 else None
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
    """Start a server-side session of `token` and set its cookie (blocking: database write).
    A session this browser had before is ended."""
    _end_cookie_session(request)
    response.set_cookie(
        SESSION_COOKIE,
        services(request).circlet.start_session(token),
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
    )


def clear_session(request: Request, response: Response) -> None:
    """End the browser's session on the server (every copy of the cookie stops working; this
    process forgets it at once) and delete the cookie (blocking: database write)."""
    _end_cookie_session(request)
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=secure_cookies(request)
    )


def _end_cookie_session(request: Request) -> None:
    secret = request.cookies.get(SESSION_COOKIE, "")
    if 0 < len(secret) <= 128:
        services(request).circlet.end_session(secret)
        _cache(request).pop(_cache_key(secret), None)


def csrf_token(request: Request) -> str:
    """This browser's CSRF value (made now if it has none; ensure_csrf_cookie sends it)."""
    if not hasattr(request.state, "csrf"):
        existing = request.cookies.get(CSRF_COOKIE, "")
        request.state.csrf = existing if len(existing) == 43 else secrets.token_urlsafe(32)
    value: str = request.state.csrf
    return value


def ensure_csrf_cookie(request: Request, response: Response) -> None:
    if hasattr(request.state, "csrf") and request.cookies.get(CSRF_COOKIE) != request.state.csrf:
        _set_csrf(request, response, request.state.csrf)


def renew_csrf(request: Request, response: Response) -> None:
    """A new CSRF value on signing in and out: a value planted or seen before (another site
    setting cookies for a shared parent domain, a shared computer) is worth nothing after."""
    request.state.csrf = secrets.token_urlsafe(32)
    _set_csrf(request, response, request.state.csrf)


def _set_csrf(request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        CSRF_COOKIE, value, path="/", httponly=True, samesite="strict", secure=secure_cookies(request)
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
    """A local path to go to after signing in (never another site). Control characters are
    refused too: browsers drop tabs and newlines from URLs, so `/<TAB>/evil` would be `//evil`
    to them if anything on the way did not encode it."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target):
        return "/"
    return target
