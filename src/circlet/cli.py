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

from circlet import __version__, cli_schedules, cli_workflows, fleet_cli
from circlet.cli_common import project_by_slug as _project
from circlet.core.errors import CircletError, NotFound
from circlet.core.model import Scope
from circlet.core.projects import Role, mask
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
    if app.poller is not None:
        app.poller.start()  # CIRCLET_POLL_INTERVAL > 0 only
    if app.scheduler is not None:
        app.scheduler.start()  # scheduled workflows; CIRCLET_SCHEDULER=off: `schedule run-due` only
    if app.janitor is not None:
        app.janitor.start()  # expired artifacts, caches, workspaces (CIRCLET_*_DAYS)
    click.echo(f"circlet {__version__} serving {settings.effective_base_url}")
    click.echo(f"  data folder: {settings.data_dir}")
    click.echo(f"  database:    {_safe_url(settings.effective_database_url)}")
    if settings.executor == "celery":  # builds run on `circlet worker`s (docs/workers.md)
        click.echo(f"  executor:    celery (broker {_safe_url(settings.broker_url)})")
    else:
        click.echo(f"  executor:    {settings.executor} ({settings.effective_slots} slots)")
    if not app.circlet.store.list_tokens():
        click.echo(
            "  no API token yet: run `circlet token create` to make one "
            "(same CIRCLET_DATA_DIR), then send it as the Circle-Token header."
        )
    try:
        uvicorn.run(
            create_app(app.services, on_shutdown=app.stop),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,
        )
    finally:
        app.stop()  # idempotent: the lifespan usually did it (uvicorn re-raises SIGTERM)


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


@project.command("grant")
@click.argument("slug")
@click.argument("login")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True, help="What they may do.")
def project_grant(slug: str, login: str, role: str) -> None:
    """Make LOGIN a member of SLUG with a role (read: see builds; write: also trigger, retry,
    cancel and read settings; admin: everything), or change their role."""
    app = _app(_settings())
    target = _project(app, slug)
    try:
        app.circlet.grant(target, login, Role(role))
    except CircletError as exc:
        raise click.ClickException(f"{exc.message} (add users with `circlet user add`)") from exc
    click.echo(f"{login} is now {role} on {target.slug}")


@project.command("revoke")
@click.argument("slug")
@click.argument("login")
def project_revoke(slug: str, login: str) -> None:
    """End LOGIN's membership of SLUG."""
    app = _app(_settings())
    target = _project(app, slug)
    try:
        app.circlet.revoke(target, login)
    except CircletError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"{login} is no longer a member of {target.slug}")


@project.group("webhook")
def project_webhook() -> None:
    """URLs notified when a build of the project finishes."""


@project_webhook.command("add")
@click.argument("slug")
@click.argument("url")
def webhook_add(slug: str, url: str) -> None:
    """Notify URL when a build of SLUG finishes."""
    app = _app(_settings())
    try:
        hook = app.circlet.add_webhook(_project(app, slug), url)
    except CircletError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"added webhook {hook.id}: {hook.url}")


@project_webhook.command("list")
@click.argument("slug")
def webhook_list(slug: str) -> None:
    """List SLUG's webhooks: id and URL."""
    app = _app(_settings())
    for hook in app.circlet.list_webhooks(_project(app, slug)):
        click.echo(f"{hook.id}\t{hook.url}")


@project_webhook.command("remove")
@click.argument("slug")
@click.argument("hook_id", metavar="ID", type=int)
def webhook_remove(slug: str, hook_id: int) -> None:
    """Remove webhook ID (see `circlet project webhook list`)."""
    app = _app(_settings())
    try:
        app.circlet.remove_webhook(_project(app, slug), hook_id)
    except CircletError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"removed webhook {hook_id}")


@project.group("env")
def project_env() -> None:
    """Environment variables every build of the project gets."""


@project_env.command("set")
@click.argument("slug")
@click.argument("name")
@click.argument("value")
def env_set(slug: str, name: str, value: str) -> None:
    """Set NAME to VALUE for SLUG's builds (overwrites)."""
    app = _app(_settings())
    try:
        app.circlet.set_env_var(_project(app, slug), name, value)
    except CircletError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"set {name}")


@project_env.command("list")
@click.argument("slug")
def env_list(slug: str) -> None:
    """List SLUG's variables, values masked."""
    app = _app(_settings())
    for var in app.circlet.list_env_vars(_project(app, slug)):
        click.echo(f"{var.name}\t{mask(var.value)}")


@project_env.command("unset")
@click.argument("slug")
@click.argument("name")
def env_unset(slug: str, name: str) -> None:
    """Delete NAME from SLUG's variables."""
    app = _app(_settings())
    try:
        app.circlet.delete_env_var(_project(app, slug), name)
    except CircletError as exc:
        raise click.ClickException(f"{exc.message}: {name}") from exc
    click.echo(f"unset {name}")


# ---------------------------------------------------------------- users


@main.group()
def user() -> None:
    """Add and list users (people who hold personal tokens)."""


@user.command("add")
@click.argument("login")
@click.option("--name", default=None, help="Full name.")
@click.option("--email", default=None, help="Email address.")
@click.option("--admin", is_flag=True, help="An administrator: may do everything on every project.")
def user_add(login: str, name: str | None, email: str | None, admin: bool) -> None:
    """Add a user; give them projects with `circlet project grant` and a token with
    `circlet token create --user LOGIN`."""
    app = _app(_settings())
    try:
        app.circlet.add_user(login, name=name, email=email, admin=admin)
    except CircletError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"added user {login}" + (" (administrator)" if admin else ""))


@user.command("list")
def user_list() -> None:
    """List users: login, admin or user, name, email."""
    app = _app(_settings())
    for u in app.circlet.list_users():
        click.echo(f"{u.login}\t{'admin' if u.admin else 'user'}\t{u.name or ''}\t{u.email or ''}")


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
            if login == "admin":
                user = svc.ensure_user(login, admin=True)
            else:
                try:
                    user = svc.user_by_login(login)
                except NotFound:
                    raise click.ClickException(
                        f"no user {login!r}: add it first with `circlet user add {login}`"
                    ) from None
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
    if not app.circlet.revoke_token(token_id):
        raise click.ClickException(f"no token with id {token_id}")
    click.echo(f"revoked token {token_id}")


# ---------------------------------------------------------------- webhook deliveries


@main.command()
@click.option("--limit", default=30, show_default=True, type=click.IntRange(min=0), help="How many.")
def deliveries(limit: int) -> None:
    """List notification webhook deliveries, newest first (docs/webhooks.md)."""
    app = _app(_settings())
    for d, build, project in app.circlet.list_deliveries(limit=limit):
        where = f"{project.slug}/{build.build_num}" if project and build else f"build-id:{d.build_id}"
        outcome = d.last_error or (f"HTTP {d.last_status}" if d.last_status is not None else "-")
        click.echo(f"{d.id}\t{d.state}\t{d.attempts}\t{where}\t{d.source}\t{d.url}\t{outcome}")


# ---------------------------------------------------------------- configs


@main.group()
def config() -> None:
    """Look at configs as circlet reads them."""


@config.command("process")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--param", "params", multiple=True, help="NAME=VALUE pipeline parameter (repeatable).")
@click.option("--branch", default="main", show_default=True, help="pipeline.git.branch to compile for.")
def config_process(file: Path, params: tuple[str, ...], branch: str) -> None:
    """Print FILE compiled to version 2, as `circleci config process` does.

    Orbs from the registry are read from CIRCLET_ORBS_DIR (<namespace>/<orb>@<version>.yml)."""
    import yaml

    from circlet.core.compile import PipelineValues, compile_config, render_config
    from circlet.core.config import load_config
    from circlet.core.errors import ConfigError

    parameters: dict[str, object] = {}
    for pair in params:
        name, sep, value = pair.partition("=")
        if not sep:
            raise click.UsageError(f"--param takes NAME=VALUE, not {pair!r}")
        parameters[name] = yaml.safe_load(value) if value else ""
    settings = _settings()
    try:
        loaded = load_config(file.read_text(), filename=str(file))
        compiled = compile_config(
            loaded,
            pipeline=PipelineValues(git_branch=branch, trigger_source="api"),
            parameters=parameters,
            orbs=_orb_folder(settings.orbs_dir),
        )
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(1)
    click.echo(render_config(compiled), nl=False)


def _orb_folder(folder: Path | None) -> dict[str, str]:
    """The operator's orbs: `<folder>/<namespace>/<orb>@<version>.yml` -> YAML text by reference."""
    if folder is None or not folder.is_dir():
        return {}
    return {f"{path.parent.name}/{path.stem}": path.read_text() for path in sorted(folder.glob("*/*@*.yml"))}


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


@main.group()
def blobs() -> None:
    """Artifacts, caches and workspace layers kept by this server."""


@blobs.command("prune")
@click.option("--dry-run", is_flag=True, help="Only say what has expired.")
def blobs_prune(dry_run: bool) -> None:
    """Delete expired artifacts, caches and workspaces now (the server also does it every hour).

    Kept: artifacts CIRCLET_ARTIFACT_DAYS (30), caches CIRCLET_CACHE_DAYS (15), workspaces
    CIRCLET_WORKSPACE_DAYS (15) days; 0 keeps them for ever."""
    app = _app(_settings())
    if app.janitor is None:
        raise click.ClickException("this circlet has no blob store")
    found = app.janitor.prune(dry_run=dry_run)
    for prefix in found.prefixes:
        click.echo(prefix)
    verb = "expired (not deleted: --dry-run)" if dry_run else "deleted"
    click.echo(f"{len(found.prefixes)} units, {found.blobs} blobs, {found.bytes} bytes {verb}")


main.add_command(fleet_cli.worker)  # `circlet worker`, `circlet workers` (fleet_cli.py, docs/workers.md)
main.add_command(fleet_cli.workers)
main.add_command(cli_workflows.workflow)  # `circlet workflow`, `circlet context` (docs/workflows.md)
main.add_command(cli_workflows.context)
main.add_command(cli_schedules.schedule)  # `circlet schedule` (docs/schedules.md)

if __name__ == "__main__":
    main()
