"""The web page: server-rendered pages at the paths the API's `build_url` points to.

`install(app)` mounts it; it must come after the API routers so that `/api/...` wins. See
docs/web.md for what it shows and how sessions and CSRF protection work.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from circlet.http.web import forms, logroutes, pages, workflowpages
from circlet.http.web.common import HERE


def install(app: FastAPI) -> None:
    """Add the static files, the forms, the log endpoints, the workflow pages and the pages (in
    that order: the fixed paths before the page patterns they would otherwise match)."""
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(forms.router)
    app.include_router(logroutes.router)
    app.include_router(workflowpages.router)
    app.include_router(pages.router)


__all__ = ["install"]
