"""Signed URLs on the way in: the project a valid `expires` + `sig` pair stands in a token for.

Log output_urls (api.py) and artifact URLs (artifacts.py) carry a signature of their canonical
path (core/signing.py) so a browser link works without a token; both check it here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.requests import Request

from circlet.core import signing
from circlet.core.errors import NotFound
from circlet.core.model import Project
from circlet.http.deps import services


def signed_project(
    request: Request,
    vcs_type: str,
    username: str,
    reponame: str,
    sig: str,
    expires: str,
    canonical: Callable[[Project], str],
) -> Project | None:
    """The project when `sig` signs `canonical(project)` until `expires` (not yet past), else None.

    Never raises for a bad signature, an unknown project or a malformed `expires`: the caller
    then asks for a token as usual.
    """
    if not (sig and sig.isascii() and expires.isascii() and expires.isdigit() and len(expires) < 20):
        return None
    svc = services(request)
    try:
        project = svc.circlet.get_project(vcs_type, username, reponame)
    except NotFound:
        return None
    valid = signing.verify(svc.links.secret, canonical(project), int(expires), sig, time.time())
    return project if valid else None
