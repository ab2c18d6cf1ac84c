"""`circlet worker` and `circlet workers` (registered on the main group by cli.py)."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

import click

from circlet.settings import SettingsError, load_settings


def settings_file() -> Path | None:
    """The TOML settings file a worker may have read (it can hold secrets: hidden from steps)."""
    named = os.environ.get("CIRCLET_CONFIG")
    return Path(named).expanduser().absolute() if named else None


@click.command()
@click.option(
    "--resource-class",
    "resource_classes",
    multiple=True,
    default=("medium",),
    show_default=True,
    help="A resource class whose jobs this worker runs; repeat for several.",
)
@click.option("--slots", default=None, type=int, help="Builds run at once (default: CPU count).")
@click.option("--server", default=None, help="The server's URL (default CIRCLET_BASE_URL).")
@click.option("--broker", default=None, help="The broker URL (default CIRCLET_BROKER_URL).")
@click.option("--name", default=None, help="This worker's name (default host:pid); unique in the fleet.")
@click.option("--workspaces", type=click.Path(path_type=Path), default=None, help="Where builds run.")
def worker(
    resource_classes: tuple[str, ...],
    slots: int | None,
    server: str | None,
    broker: str | None,
    name: str | None,
    workspaces: Path | None,
) -> None:
    """Run builds of the celery executor here (docs/workers.md). The worker token and the broker
    URL come from CIRCLET_WORKER_CREDENTIALS (a file) or the environment, never from arguments:
    those are readable in /proc by any process."""
    from circlet.remote import credentials
    from circlet.runner import sandbox
    from circlet.worker import WorkerOptions, default_name, run_worker

    try:
        settings = load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    environ = dict(os.environ)
    if server:
        environ[credentials.SERVER] = server
    environ.setdefault(credentials.SERVER, settings.effective_base_url)
    try:
        creds = credentials.load_worker_credentials(environ)
    except credentials.CredentialsError as exc:
        raise click.ClickException(str(exc)) from exc
    credentials.scrub_environment()  # before any thread or process starts
    token = creds.worker_token
    classes = tuple(dict.fromkeys(c.strip() for c in resource_classes if c.strip()))
    if not classes:
        raise click.ClickException("--resource-class needs a name")
    count = slots or settings.effective_slots
    if count < 1:
        raise click.ClickException("--slots must be at least 1")
    host = socket.gethostname()
    root = (workspaces or settings.workspaces_dir).resolve()
    hidden = tuple(p for p in (creds.file, settings_file()) if p is not None)
    try:  # refuse to start, saying why, rather than fail every build
        sandbox.enable(settings.sandbox, worker=True, workspace_root=root, extra_hidden=hidden)
    except sandbox.SandboxError as exc:
        raise click.ClickException(str(exc)) from exc
    options = WorkerOptions(
        server=creds.server_url.rstrip("/"),
        token=token,
        broker_url=broker or creds.broker_url or settings.broker_url,
        resource_classes=classes,
        slots=count,
        name=name or default_name(host),
        host=host,
        workspaces=root,
        kill_grace=settings.kill_grace,
        keep_workspaces=settings.keep_workspaces,
        sandbox=settings.sandbox,
        hidden=hidden,
        heartbeat=settings.worker_heartbeat,
    )
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    click.echo(
        f"circlet worker {options.name}: classes {', '.join(classes)}, {count} slots, server {options.server}"
    )
    run_worker(options, loglevel=settings.log_level)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON, as GET /api/v1.1/admin/workers does.")
def workers(as_json: bool) -> None:
    """List the workers the server knows: host, classes, slots, busy, last heartbeat, state."""
    import json

    from circlet.bootstrap import build_services
    from circlet.core.workers import worker_json

    try:
        settings = load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    app = build_services(settings)
    now = app.circlet.clock()
    rows: list[dict[str, Any]] = [worker_json(w, now) for w in app.circlet.list_workers()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no workers have reported to this server")
        return
    click.echo(f"{'NAME':<28} {'STATE':<8} {'CLASSES':<18} {'BUSY':>9}  LAST HEARTBEAT")
    for row in rows:
        busy = f"{row['busy']}/{row['slots']}"
        click.echo(
            f"{row['name']:<28} {row['state']:<8} {','.join(row['resource_classes']):<18} {busy:>9}  "
            f"{row['last_heartbeat']} ({row['seconds_since_heartbeat']} s ago)"
        )
