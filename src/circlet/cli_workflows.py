"""`circlet workflow ...` and `circlet context ...` (attached to the main group in cli.py).

They work on the database directly, like the other admin commands. An approval made here is
recorded at once and applied by the running server within a second (or when it next starts):
the server is the one that creates and runs the builds it unblocks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from circlet.cli_common import load_app as _app
from circlet.cli_common import project_by_slug
from circlet.core.errors import CircletError
from circlet.core.projects import mask

if TYPE_CHECKING:
    from circlet.bootstrap import App
    from circlet.pipelines import Workflows


def _engine(app: App) -> Workflows:
    if app.circlet.workflows is None:
        raise click.ClickException("this circlet keeps no pipelines")
    return app.circlet.workflows


@click.group()
def workflow() -> None:
    """Workflows: list, show, approve."""


@workflow.command("list")
@click.argument("slug")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(min=1), help="Pipelines to show.")
def workflow_list(slug: str, limit: int) -> None:
    """The workflows of SLUG's newest pipelines: id, pipeline number, name, status."""
    app = _app()
    project = project_by_slug(app, slug)
    engine = _engine(app)
    for pipeline in engine.store.list_pipelines(project.id or 0, limit=limit):
        for found in engine.store.workflows_of(pipeline.id):
            click.echo(f"{found.id}\t{pipeline.number}\t{found.name}\t{found.status.value}")


@workflow.command("show")
@click.argument("workflow_id")
def workflow_show(workflow_id: str) -> None:
    """A workflow's status and its jobs: name, type, state, build number, requirements."""
    app = _app()
    try:
        graph = _engine(app).graph(workflow_id)
    except CircletError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"{graph.name}\t{graph.status.value}\tpipeline {graph.pipeline_number}")
    for job in graph.jobs:
        build = str(job.build_num) if job.build_num is not None else "-"
        requires = ",".join(job.requires) or "-"
        click.echo(f"  {job.name}\t{job.type.value}\t{job.state.value}\t{build}\t{requires}")


@workflow.command("approve")
@click.argument("workflow_id")
@click.argument("job_name")
@click.option("--user", "login", default=None, help="Who approves (a user login); recorded.")
def workflow_approve(workflow_id: str, job_name: str, login: str | None) -> None:
    """Approve JOB_NAME, an approval job on hold in WORKFLOW_ID."""
    app = _app()
    user = app.circlet.store.get_user_by_login(login) if login else None
    if login and user is None:
        raise click.ClickException(f"no user {login!r}")
    try:
        _engine(app).approve(None, workflow_id, job_name, user_id=user.id if user else None, apply=False)
    except CircletError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"approved {job_name}; the server starts what waited for it")


@click.group()
def context() -> None:
    """Contexts: named sets of environment variables for workflow jobs."""


def _run(action: str, *args: str) -> object:
    app = _app()
    try:
        return getattr(_engine(app).contexts, action)(*args)
    except CircletError as exc:
        raise click.ClickException(exc.message) from exc


@context.command("create")
@click.argument("name")
def context_create(name: str) -> None:
    """Create the context NAME."""
    _run("create", name)
    click.echo(f"created context {name}")


@context.command("list")
def context_list() -> None:
    """Every context, by name."""
    app = _app()
    for found in _engine(app).contexts.all():
        click.echo(f"{found.name}\t{found.id}")


@context.command("delete")
@click.argument("name")
def context_delete(name: str) -> None:
    """Delete the context NAME and its variables."""
    _run("delete", name)
    click.echo(f"deleted context {name}")


@context.group("env")
def context_env() -> None:
    """The variables of a context."""


@context_env.command("set")
@click.argument("name")
@click.argument("var")
@click.argument("value")
def context_env_set(name: str, var: str, value: str) -> None:
    """Set VAR to VALUE in context NAME."""
    _run("set_var", name, var, value)
    click.echo(f"set {var} in {name}")


@context_env.command("list")
@click.argument("name")
def context_env_list(name: str) -> None:
    """The variables of context NAME, values masked."""
    app = _app()
    try:
        found = _engine(app).contexts.vars(name)
    except CircletError as exc:
        raise click.ClickException(exc.message) from exc
    for var in found:
        click.echo(f"{var.name}\t{mask(var.value)}")


@context_env.command("unset")
@click.argument("name")
@click.argument("var")
def context_env_unset(name: str, var: str) -> None:
    """Remove VAR from context NAME."""
    _run("unset_var", name, var)
    click.echo(f"removed {var} from {name}")
