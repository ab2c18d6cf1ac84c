"""`circlet schedule ...`: scheduled workflows from the command line (docs/schedules.md).

Like the other admin commands they work on the database and the git mirrors directly.
`run-due` records runs as pending; the running server starts them within a few seconds (its
scheduler does, with CIRCLET_SCHEDULER on or off): the server is the one that runs builds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from circlet.cli_common import load_app as _app
from circlet.cli_common import project_by_slug as _project
from circlet.core.errors import CircletError

if TYPE_CHECKING:
    from circlet.bootstrap import App
    from circlet.scheduler import Scheduler


def _scheduler(app: App) -> Scheduler:
    if app.scheduler is None:
        raise click.ClickException("this circlet has no scheduler")
    return app.scheduler


def _when(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time such as 2026-01-31T03:00Z") from None
    return found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)


@click.group()
def schedule() -> None:
    """Scheduled workflows: run what is due, list runs, show the next ones."""


@schedule.command("run-due")
@click.option("--at", "at", default=None, help="The minute to run (ISO 8601, UTC if no zone); default: now.")
@click.option("--project", "slug", default=None, help="Only this project (gh/acme/widget).")
def run_due(at: str | None, slug: str | None) -> None:
    """Record the runs due at a minute; the running server starts them within seconds.

    A run already recorded for that minute (by the server or an earlier call) is not run again.
    """
    app = _app()
    minute = _when(at)
    projects = [_project(app, slug)] if slug else None
    runs = _scheduler(app).run_due(minute, start=False, projects=projects)
    slugs = {p.id: p.slug for p in app.circlet.list_projects()}
    for run in runs:
        click.echo(
            f"{run.state.value}\t{slugs.get(run.project_id, run.project_id)}\t{run.workflow}\t"
            f"{run.branch}\t{run.minute:%Y-%m-%dT%H:%MZ}\t{run.revision[:12]}"
        )
    if not runs:
        click.echo(f"nothing new is due at {minute:%Y-%m-%dT%H:%MZ}", err=True)


@schedule.command("list")
@click.option("--project", "slug", default=None, help="Only this project (gh/acme/widget).")
@click.option("--limit", default=30, show_default=True, type=click.IntRange(min=1), help="How many.")
def list_runs(slug: str | None, limit: int) -> None:
    """Recorded runs, newest minute first: state, project, workflow, branch, minute, build, error."""
    app = _app()
    project_id = _project(app, slug).id if slug else None
    slugs = {p.id: p.slug for p in app.circlet.list_projects()}
    for run in _scheduler(app).store.list_runs(project_id, limit=limit):
        click.echo(
            f"{run.state.value}\t{slugs.get(run.project_id, run.project_id)}\t{run.workflow}\t{run.branch}\t"
            f"{run.minute:%Y-%m-%dT%H:%MZ}\t{run.build_num if run.build_num is not None else '-'}\t"
            f"{run.error or ''}".rstrip()
        )


@schedule.command("next")
@click.argument("slug")
def next_runs(slug: str) -> None:
    """The next run of each scheduled workflow on each branch of SLUG (fetches it first)."""
    app = _app()
    project = _project(app, slug)
    try:
        upcoming = _scheduler(app).upcoming(project)
    except CircletError as exc:
        raise click.ClickException(exc.message) from exc
    for item in upcoming:
        click.echo(f"{item.at:%Y-%m-%dT%H:%MZ}\t{item.workflow}\t{item.branch}\t{item.cron}")
    if not upcoming:
        click.echo(f"{slug} has no scheduled workflow on any branch", err=True)
