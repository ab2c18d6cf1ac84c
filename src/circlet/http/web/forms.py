"""What people do through forms: sign in and out, trigger, retry, cancel, settings (approving
and canceling workflows: workflowpages.py).

Every POST checks the CSRF field first (common.form) and then the same rights the API
checks; a success redirects (303) to the page that shows the result.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from circlet.core.errors import InvalidRequest, NotFound
from circlet.core.model import Scope, Why
from circlet.http.deps import services
from circlet.http.web.common import WebRoute, error_page, form, open_build, open_project, page, redirect
from circlet.http.web.pages import project_context
from circlet.http.web.session import clear_session, current_session, renew_csrf, safe_next, set_session
from circlet.http.web.views import web_path

router = APIRouter(route_class=WebRoute, include_in_schema=False)
log = logging.getLogger("circlet.web")

P = "/{vcs_type}/{username}/{reponame}"
B = P + "/{build_num}"


@router.get("/login")
def login_form(request: Request) -> Response:
    if current_session(request) is not None:
        return redirect(safe_next(request.query_params.get("next")))
    return page(request, "login.html", {"next": safe_next(request.query_params.get("next")), "error": ""})


@router.post("/login")
async def login(request: Request) -> Response:
    fields = await form(request)
    target = safe_next(fields.get("next"))
    secret = fields.get("token", "").strip()
    circlet = services(request).circlet
    token = await run_in_threadpool(circlet.authenticate, secret) if secret else None
    error = ""
    if token is None:
        error = "That token is not valid (or was revoked)."
    elif token.user_id is None:
        error = "Project tokens cannot sign in: use a personal token (circlet token create)."
    if error:
        client = request.client.host if request.client else "-"
        log.warning("event=web_login_refused client=%s project_token=%s", client, token is not None)
        return page(request, "login.html", {"next": target, "error": error}, 401)
    assert token is not None
    log.info("event=web_login user_id=%s token_id=%s", token.user_id, token.id)
    response = redirect(target)
    await run_in_threadpool(set_session, request, response, token)
    renew_csrf(request, response)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await form(request)
    response = redirect("/login")
    await run_in_threadpool(clear_session, request, response)
    renew_csrf(request, response)
    return response


@router.post(P + "/trigger")
async def trigger(request: Request, vcs_type: str, username: str, reponame: str) -> Response:
    fields = await form(request)
    session, project = await run_in_threadpool(
        open_project, request, vcs_type, username, reponame, Scope.TRIGGER_BUILDS
    )
    branch = fields.get("branch", "").strip() or None
    circlet = services(request).circlet
    build = await run_in_threadpool(
        lambda: circlet.trigger_pipeline(project, branch=branch, user_id=session.user.id, why=Why.TRIGGER)
    )
    if build is None:
        return redirect(web_path(project) + "?notice=triggered")
    return redirect(web_path(project, build.build_num))


async def _retry(
    request: Request,
    vcs_type: str,
    username: str,
    reponame: str,
    build_num: str,
    *,
    ssh: bool,
    no_cache: bool = False,
) -> Response:
    await form(request)
    session, project, build = await run_in_threadpool(
        open_build, request, vcs_type, username, reponame, build_num, Scope.TRIGGER_BUILDS
    )
    circlet = services(request).circlet
    new = await run_in_threadpool(
        lambda: circlet.retry(project, build.build_num, ssh=ssh, no_cache=no_cache, user_id=session.user.id)
    )
    return redirect(web_path(project, new.build_num))


@router.post(B + "/retry")
async def retry(request: Request, vcs_type: str, username: str, reponame: str, build_num: str) -> Response:
    return await _retry(request, vcs_type, username, reponame, build_num, ssh=False)


@router.post(B + "/retry-without-cache")
async def retry_without_cache(
    request: Request, vcs_type: str, username: str, reponame: str, build_num: str
) -> Response:
    """As the API's `/retry` with `no-cache`: the new build skips cache restores."""
    return await _retry(request, vcs_type, username, reponame, build_num, ssh=False, no_cache=True)


@router.post(B + "/ssh")
async def retry_ssh(
    request: Request, vcs_type: str, username: str, reponame: str, build_num: str
) -> Response:
    return await _retry(request, vcs_type, username, reponame, build_num, ssh=True)


@router.post(B + "/cancel")
async def cancel(request: Request, vcs_type: str, username: str, reponame: str, build_num: str) -> Response:
    await form(request)
    session, project, build = await run_in_threadpool(
        open_build, request, vcs_type, username, reponame, build_num, Scope.TRIGGER_BUILDS
    )
    circlet = services(request).circlet
    await run_in_threadpool(lambda: circlet.cancel(project, build.build_num, user_id=session.user.id))
    return redirect(web_path(project, build.build_num))


@router.post(P + "/settings/env")
async def set_env(request: Request, vcs_type: str, username: str, reponame: str) -> Response:
    fields = await form(request)
    _, project = await run_in_threadpool(
        open_project, request, vcs_type, username, reponame, Scope.WRITE_SETTINGS
    )
    circlet = services(request).circlet
    name = fields.get("name", "").strip()
    if fields.get("delete"):
        await run_in_threadpool(circlet.delete_env_var, project, name)
    else:
        await run_in_threadpool(circlet.set_env_var, project, name, fields.get("value", ""))
    return redirect(web_path(project) + "#settings")


@router.post(P + "/settings/webhooks")
async def webhooks(request: Request, vcs_type: str, username: str, reponame: str) -> Response:
    fields = await form(request)
    _, project = await run_in_threadpool(
        open_project, request, vcs_type, username, reponame, Scope.WRITE_SETTINGS
    )
    circlet = services(request).circlet
    hook_id = fields.get("remove", "")
    if hook_id:
        if not hook_id.isdigit():
            raise InvalidRequest("webhook id must be a number")
        await run_in_threadpool(circlet.remove_webhook, project, int(hook_id))
    else:
        await run_in_threadpool(circlet.add_webhook, project, fields.get("url", "").strip())
    return redirect(web_path(project) + "#settings")


@router.post(P + "/settings/tokens")
async def tokens(request: Request, vcs_type: str, username: str, reponame: str) -> Response:
    """Create a project token (its secret is shown once, in this answer only) or revoke one."""
    fields = await form(request)
    _, project = await run_in_threadpool(open_project, request, vcs_type, username, reponame, Scope.ALL)
    circlet = services(request).circlet
    revoke = fields.get("revoke", "")
    if revoke:
        mine = {t.id for t in circlet.project_tokens(project)}
        if not revoke.isdigit() or int(revoke) not in mine:
            raise NotFound("No such token on this project")
        await run_in_threadpool(circlet.revoke_token, int(revoke))
        return redirect(web_path(project) + "#settings")
    try:
        scope = Scope(fields.get("scope", ""))
    except ValueError:
        return error_page(request, 400, "Choose a scope for the token.")
    label = fields.get("label", "").strip()[:100]
    _, secret = await run_in_threadpool(
        lambda: circlet.create_token(project=project, scope=scope, label=label)
    )
    context = project_context(request, project, new_token=secret)
    return page(request, "project.html", context)
