"""The `circlet` command: serve, migrate, project, token, build.

Every command reads settings the same way (CIRCLET_* variables, CIRCLET_DATA_DIR, a TOML
file), so a `project add` in one terminal and a `serve` in another share one data folder.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from circlet import __version__
from circlet.core.errors import CircletError
from circlet.core.model import Scope
from circlet.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from circlet.bootstrap import App


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc


def _app(settings: Settings) -> App:
    from circlet.bootstrap import build_services

    return build_services(settings)


@click.group()
@click.version_option(__version__, prog_name="circlet")
def main() -> None:
    """circlet: a self-hosted CI server for .circleci/config.yml, speaking CircleCI's API v1.1."""


@main.command()
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1, CIRCLET_HOST).")
@click.option("--port", default=None, type=int, help="Port to listen on (default 8080, CIRCLET_PORT).")
@click.option("--slots", default=None, type=int, help="Builds run at once by the local executor.")
def serve(host: str | None, port: int | None, slots: int | None) -> None:
    """Start the server (API, and builds on the local executor)."""
    import uvicorn

    from circlet.http.app import create_app

    settings = _settings(host=host, port=port, slots=slots)
    # Runner threads wait on processes and wake for a moment between steps; with the default
    # 5 ms GIL switch interval a busy request thread can hold a waking runner back that long
    # at every step. 0.5 ms keeps steps prompt under API load (bench/w1_steps.py).
    sys.setswitchinterval(0.0005)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    app = _app(settings)
    app.circlet.start()
    click.echo(f"circlet {__version__} serving {settings.effective_base_url}")
    click.echo(f"  data folder: {settings.data_dir}")
    click.echo(f"  database:    {_safe_url(settings.effective_database_url)}")
    click.echo(f"  executor:    {settings.executor} ({settings.effective_slots} slots)")
    if not app.circlet.store.list_tokens():
        click.echo(
            "  no API token yet: run `circlet token create` to make one "
            "(same CIRCLET_DATA_DIR), then send it as the Circle-Token header."
        )
    try:
        uvicorn.run(
            create_app(app.services, on_shutdown=app.circlet.stop),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,
        )
    finally:
        app.circlet.stop()  # idempotent: the lifespan usually did it (uvicorn re-raises SIGTERM)


def _safe_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


@main.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    settings = _settings()
    from circlet.store.migrate import migrate as run_migrate
    from circlet.store.sql import make_engine

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    run_migrate(make_engine(settings.effective_database_url))
    click.echo(f"database is up to date: {_safe_url(settings.effective_database_url)}")


# ---------------------------------------------------------------- projects


@main.group()
def project() -> None:
    """Register and list projects."""


@project.command("add")
@click.argument("slug")
@click.option("--repo", "repo", required=True, help="Path or git URL of the repository.")
@click.option("--default-branch", default=None, help="Default branch (default: the repository's HEAD).")
def project_add(slug: str, repo: str, default_branch: str | None) -> None:
    """Register SLUG (gh/USER/REPO or bb/USER/REPO) built from the repository at --repo."""
    parts = slug.strip("/").split("/")
    if len(parts) != 3:
        raise click.UsageError("SLUG must look like gh/acme/widget")
    path = Path(repo).expanduser()
    repo_url = str(path.resolve()) if path.exists() else repo
    app = _app(_settings())
    try:
        created = app.circlet.add_project(
            vcs_type=parts[0],
            username=parts[1],
            reponame=parts[2],
            repo_url=repo_url,
            default_branch=default_branch,
        )
    except CircletError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"added {created.slug} ({created.repo_url}, default branch {created.default_branch})")


@project.command("list")
def project_list() -> None:
    """List registered projects."""
    app = _app(_settings())
    for p in app.circlet.list_projects():
        click.echo(f"{p.slug}\t{p.default_branch}\t{p.repo_url}")


# ---------------------------------------------------------------- tokens


@main.group()
def token() -> None:
    """Create, list and revoke API tokens."""


@token.command("create")
@click.option("--user", "login", default="admin", show_default=True, help="User the token acts as.")
@click.option("--project", "slug", default=None, help="Make a project token for this slug instead.")
@click.option(
    "--scope",
    type=click.Choice(["status", "view-builds", "all"]),
    default="all",
    show_default=True,
    help="Scope of a project token.",
)
@click.option("--label", default="", help="A note to recognise the token by.")
def token_create(login: str, slug: str | None, scope: str, label: str) -> None:
    """Make a token and print it alone on standard output (it is stored hashed: copy it now)."""
    app = _app(_settings())
    svc = app.circlet
    try:
        if slug:
            parts = slug.strip("/").split("/")
            if len(parts) != 3:
                raise click.UsageError("--project must look like gh/acme/widget")
            target = svc.get_project(*parts)
            _, secret = svc.create_token(project=target, scope=Scope(scope), label=label)
        else:
            user = svc.ensure_user(login, admin=login == "admin")
            _, secret = svc.create_token(user=user, label=label)
    except CircletError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(secret)


@token.command("list")
def token_list() -> None:
    """List tokens (never their secrets)."""
    app = _app(_settings())
    for t in app.circlet.store.list_tokens():
        owner = f"user:{t.user_id}" if t.user_id is not None else f"project:{t.project_id} scope:{t.scope}"
        state = "revoked" if t.revoked else "active"
        click.echo(f"{t.id}\t{owner}\t{state}\t{t.label}")


@token.command("revoke")
@click.argument("token_id", type=int)
def token_revoke(token_id: int) -> None:
    """Revoke a token by its id (see `circlet token list`)."""
    app = _app(_settings())
    if not app.circlet.store.revoke_token(token_id):
        raise click.ClickException(f"no token with id {token_id}")
    click.echo(f"revoked token {token_id}")


# ---------------------------------------------------------------- local builds


@main.command()
@click.argument("path", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--job", default="build", show_default=True, help="Job of the config to run.")
@click.option("-e", "--env", "env_pairs", multiple=True, help="KEY=VALUE build parameter (repeatable).")
def build(path: Path, job: str, env_pairs: tuple[str, ...]) -> None:
    """Run a checkout's .circleci/config.yml once, here and now, showing each step live."""
    from circlet.localbuild import run_local_build

    params: dict[str, str] = {}
    for pair in env_pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise click.UsageError(f"--env takes KEY=VALUE, not {pair!r}")
        params[name] = value
    try:
        ok = run_local_build(path.resolve(), job=job, build_parameters=params)
    except CircletError as exc:
        raise click.ClickException(exc.message) from exc
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
