"""What every web route shares: templates, the HTML error handling route class, form parsing,
project and build lookup with the API's permission rules."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from circlet.core.errors import CircletError, NotFound
from circlet.core.model import Build, Project, Scope, VcsType
from circlet.core.permissions import Decision, decide
from circlet.http.deps import project_access, services
from circlet.http.errors import status_for
from circlet.http.web.session import (
    CsrfFailed,
    LoginRequired,
    Session,
    check_csrf,
    csrf_token,
    current_session,
    ensure_csrf_cookie,
    require_session,
)
from circlet.http.web.views import label, tone

HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
TEMPLATES.env.globals.update(tone=tone, label=label)
MAX_FORM_BYTES = 256 * 1024
MAX_BUILD_NUM = 2**63 - 1

# No inline script or style anywhere: the policy forbids them, so injected markup cannot run.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


def is_fragment_request(request: Request) -> bool:
    """Requests made by the page's scripts (they answer 401 instead of redirecting)."""
    return request.headers.get("x-circlet-fragment") == "1" or request.url.path.endswith("/events")


def secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """Render a template with the session, the CSRF value and security headers."""
    full = {"session": current_session(request), "csrf": csrf_token(request), **context}
    response = TEMPLATES.TemplateResponse(request, name, full, status_code=status)
    ensure_csrf_cookie(request, response)
    return secure(response)


def error_page(request: Request, status: int, message: str) -> Response:
    if is_fragment_request(request):
        return secure(JSONResponse({"message": message}, status_code=status))
    return page(request, "error.html", {"status": status, "message": message}, status)


def redirect(url: str) -> Response:
    return secure(RedirectResponse(url, status_code=303))


class WebRoute(APIRoute):
    """A route whose domain errors become HTML pages, and whose missing session becomes a
    redirect to /login (a 401 for the page's own script requests)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            if "vcs_type" in request.path_params:
                check_vcs(request.path_params["vcs_type"])  # before anything: /api/... stays JSON
            try:
                return await original(request)
            except LoginRequired as exc:
                if is_fragment_request(request):
                    return secure(JSONResponse({"message": exc.message}, status_code=401))
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return redirect("/login?next=" + quote(target, safe=""))
            except CsrfFailed as exc:
                return error_page(request, 403, exc.message)
            except CircletError as exc:
                return error_page(request, status_for(exc), exc.message)

        return handler


async def form(request: Request) -> dict[str, str]:
    """The urlencoded body of a POST form, after the CSRF check (first value of each field)."""
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise CsrfFailed("The form is too large.")
    fields: dict[str, str] = {}
    for key, value in parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True):
        fields.setdefault(key, value)
    check_csrf(request, fields.get("csrf", ""))
    return fields


def check_vcs(vcs_type: str) -> None:
    """Paths that cannot be a project are not web pages: the app's JSON 404 answers them."""
    if VcsType.parse(vcs_type) is None:
        raise HTTPException(404)


@dataclass(frozen=True, kw_only=True)
class Rights:
    """What the signed-in user may do on one project."""

    trigger: bool  # trigger, retry, cancel, approve
    read_settings: bool
    write_settings: bool
    admin: bool  # tokens


def rights(request: Request, session: Session, project: Project) -> Rights:
    circlet = services(request).circlet
    user_admin, role = circlet.standing(session.token, project)

    def may(need: Scope) -> bool:
        return decide(session.token, project, need, user_admin=user_admin, role=role) is Decision.ALLOW

    return Rights(
        trigger=may(Scope.TRIGGER_BUILDS),
        read_settings=may(Scope.READ_SETTINGS),
        write_settings=may(Scope.WRITE_SETTINGS),
        admin=may(Scope.ALL),
    )


def open_project(
    request: Request, vcs_type: str, username: str, reponame: str, need: Scope = Scope.VIEW_BUILDS
) -> tuple[Session, Project]:
    """The signed-in session and the project, if they may `need` it (404/403 as the API says)."""
    check_vcs(vcs_type)
    session = require_session(request)
    project, _ = project_access(request, vcs_type, username, reponame, need)
    return session, project


def build_number(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_BUILD_NUM:
        raise NotFound("Build not found")
    return int(text)


def open_build(
    request: Request,
    vcs_type: str,
    username: str,
    reponame: str,
    build_num: str,
    need: Scope = Scope.VIEW_BUILDS,
) -> tuple[Session, Project, Build]:
    session, project = open_project(request, vcs_type, username, reponame, need)
    build = services(request).circlet.get_build(project, build_number(build_num))
    return session, project, build
