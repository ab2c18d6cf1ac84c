"""What the command groups of the CLI share (cli.py, cli_workflows.py, cli_schedules.py).

Lives apart from cli.py because cli.py imports the other groups to attach them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from circlet.core.errors import CircletError
from circlet.settings import SettingsError, load_settings

if TYPE_CHECKING:
    from circlet.bootstrap import App
    from circlet.core.model import Project


def load_app() -> App:
    """The services built from CIRCLET_* settings; a ClickException for bad settings."""
    from circlet.bootstrap import build_services

    try:
        return build_services(load_settings())
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc


def project_by_slug(app: App, slug: str) -> Project:
    """The project named by a gh/acme/widget slug: UsageError for a malformed slug,
    ClickException (the service's message and the slug) when there is no such project."""
    parts = slug.strip("/").split("/")
    if len(parts) != 3:
        raise click.UsageError(f"SLUG must look like gh/acme/widget, not {slug!r}")
    try:
        return app.circlet.get_project(*parts)
    except CircletError as exc:
        raise click.ClickException(f"{exc.message}: {slug}") from exc
