"""Settings: read once from CIRCLET_* environment variables and/or a TOML file, then passed down.

Precedence: environment variable > TOML file (CIRCLET_CONFIG, or <data_dir>/circlet.toml) > default.
TOML keys are the variable names without the prefix, lowercased (`database_url = "..."`).
"""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

PREFIX = "CIRCLET_"


BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp")  # the celery executor's brokers


class SettingsError(ValueError):
    """A setting has a value circlet cannot use."""


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "circlet"


@dataclass(frozen=True, kw_only=True)
class Settings:
    data_dir: Path
    database_url: str = ""  # default: SQLite file in data_dir
    host: str = "127.0.0.1"
    port: int = 8080
    base_url: str = ""  # default: http://host:port
    executor: str = "local"  # local | celery
    slots: int = 0  # local executor slots; 0 = CPU count
    runner: str = "process"  # local executor: a runner process per slot, or "thread" in the server
    broker_url: str = "redis://127.0.0.1:6379/0"
    orbs_dir: Path | None = None
    keep_workspaces: bool = False
    kill_grace: float = 3.0  # seconds between TERM and KILL on timeouts
    log_level: str = "info"
    blob_dir: Path | None = None  # artifacts, caches, workspace layers; default <data dir>/blobs
    worker_token: str = ""  # shared by the server and its workers (runner gateway); "" = gateway off
    sandbox: str = ""  # bwrap | none; "" = bwrap for `circlet worker`, none for the local executor
    worker_lost_after: float = 30.0  # seconds without a heartbeat before a worker is lost (docs/workers.md)
    worker_heartbeat: float = 0.5  # seconds between a worker's heartbeats (cancel reaches it this fast)
    poll_interval: float = 0.0  # seconds between polls of every project; 0 = off (docs/push-triggers.md)
    push_secret: str = ""  # push webhooks' secret for projects without CIRCLET_PUSH_SECRET; "" = none
    resubmit_after: float = 30.0  # seconds before a waiting build's broker message is sent again
    scheduler: bool = True  # `serve` runs scheduled workflows at their minutes (docs/schedules.md)
    artifact_days: float = 30.0  # days artifacts are kept; 0 = for ever (core/retention.py)
    cache_days: float = 15.0  # days a saved cache is kept
    workspace_days: float = 15.0  # days a workflow's workspace layers are kept

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'circlet.db'}"

    @property
    def effective_base_url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def effective_slots(self) -> int:
        return self.slots or os.cpu_count() or 1

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def mirrors_dir(self) -> Path:
        return self.data_dir / "mirrors"

    @property
    def workspaces_dir(self) -> Path:
        return self.data_dir / "workspaces"

    @property
    def blobs_dir(self) -> Path:
        """Where the filesystem blob store keeps artifacts, caches and workspaces."""
        return self.blob_dir or self.data_dir / "blobs"

    def secret_key(self) -> bytes:
        """The server's signing secret, made on first use and kept in the data folder."""
        path = self.data_dir / "secret.key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
        return bytes.fromhex(path.read_text().strip())

    def with_changes(self, **changes: Any) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update({k: v for k, v in changes.items() if v is not None})
        return Settings(**values)


def _convert(name: str, raw: Any, kind: Any) -> Any:
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
        if kind in (bool, "bool"):
            if isinstance(raw, bool):
                return raw
            word = str(raw).strip().lower()
            if word in ("1", "true", "yes", "on"):
                return True
            if word in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(word)
        if kind in (Path, "Path", "Path | None"):
            return Path(str(raw)).expanduser() if str(raw) else None
    except ValueError as exc:
        raise SettingsError(f"{PREFIX}{name.upper()}: {raw!r} is not a valid {kind}") from exc
    return str(raw)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from the environment (default: os.environ), a TOML file, then explicit overrides."""
    env = os.environ if environ is None else environ
    # Absolute from the start: runners and git run in other directories.
    data_dir = Path(env.get(PREFIX + "DATA_DIR") or default_data_dir(env)).expanduser().resolve()
    values: dict[str, Any] = {}
    named = env.get(PREFIX + "CONFIG")
    toml_path = Path(named).expanduser() if named else data_dir / "circlet.toml"
    if named and not toml_path.is_file():
        raise SettingsError(f"{PREFIX}CONFIG names {toml_path}, which is not a readable file")
    if toml_path.is_file():
        try:
            values.update({k.lower(): v for k, v in tomllib.loads(toml_path.read_text()).items()})
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{toml_path}: {exc}") from exc
    for f in fields(Settings):
        key = PREFIX + f.name.upper()
        if key in env and f.name != "data_dir":
            values[f.name] = env[key]
    known = {f.name: f.type for f in fields(Settings)}
    unknown = set(values) - set(known)
    if unknown:
        raise SettingsError(f"unknown settings: {', '.join(sorted(unknown))}")
    converted = {name: _convert(name, raw, known[name]) for name, raw in values.items() if name != "data_dir"}
    settings = Settings(data_dir=data_dir, **converted).with_changes(**overrides)
    if settings.executor not in ("local", "celery"):
        raise SettingsError(f"{PREFIX}EXECUTOR must be local or celery, not {settings.executor!r}")
    if settings.runner not in ("process", "thread"):
        raise SettingsError(f"{PREFIX}RUNNER must be process or thread, not {settings.runner!r}")
    if settings.sandbox not in ("", "bwrap", "none"):
        raise SettingsError(f"{PREFIX}SANDBOX must be bwrap or none, not {settings.sandbox!r}")
    if settings.executor == "celery" and settings.effective_database_url.startswith("sqlite"):
        raise SettingsError(
            "the celery executor needs a database every machine can reach: "
            "set CIRCLET_DATABASE_URL=postgresql://..."
        )
    if settings.executor == "celery":  # docs/workers.md
        if not settings.worker_token:
            raise SettingsError("the celery executor needs CIRCLET_WORKER_TOKEN, the secret of its workers")
        if settings.broker_url.split("://", 1)[0] not in BROKER_SCHEMES:
            raise SettingsError(
                f"{PREFIX}BROKER_URL must be a redis:// or amqp:// URL, not {settings.broker_url.split('://')[0]!r}"
            )
    return settings
