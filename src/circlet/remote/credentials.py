"""The worker's own secrets: read once at start, then gone from its environment.

A worker (`circlet worker`) holds two secrets: the broker URL (with its password) and the worker
token of the runner gateway. It reads them from the file CIRCLET_WORKER_CREDENTIALS names
(`KEY=VALUE` lines, `#` comments; keep it mode 0600, and the sandbox hides it from steps) or else
from its environment, and then calls `scrub_environment()` before it starts anything: the
secrets leave `os.environ` (so no child inherits them) and their bytes are overwritten in the
process's initial environment block, which is what /proc/<pid>/environ shows to anyone allowed to
read it. Secrets on the command line cannot be taken back: never pass them as arguments.

    creds = load_worker_credentials()        # before anything else reads the environment
    scrub_environment()
    client = RunnerClient(creds.server_url, creds.worker_token)
"""

from __future__ import annotations

import ctypes
import logging
import os
import stat
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("circlet.remote.credentials")

FILE_VARIABLE = "CIRCLET_WORKER_CREDENTIALS"
TOKEN = "CIRCLET_WORKER_TOKEN"
BROKER = "CIRCLET_BROKER_URL"
SERVER = "CIRCLET_SERVER_URL"
# Never left for a step to find: what a worker holds, and what a server would.
SECRET_NAMES = (TOKEN, BROKER, "CIRCLET_DATABASE_URL", FILE_VARIABLE)


class CredentialsError(ValueError):
    """The worker's credentials are missing or unreadable; the message says which and where."""


@dataclass(frozen=True, kw_only=True)
class WorkerCredentials:
    """What a worker needs to reach its server and broker."""

    worker_token: str
    broker_url: str
    server_url: str
    source: str  # where they came from (a file path or "environment"), for messages
    file: Path | None = None  # the credentials file, to hide from steps (runner/sandbox.py)

    def __repr__(self) -> str:  # never print a secret by accident
        return f"WorkerCredentials(server_url={self.server_url!r}, source={self.source!r})"


def parse_file(text: str, where: str) -> dict[str, str]:
    """`KEY=VALUE` lines (`export ` and quotes allowed, `#` comments); CredentialsError on others."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise CredentialsError(f"{where}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def load_worker_credentials(environ: Mapping[str, str] | None = None) -> WorkerCredentials:
    """The worker's credentials: from CIRCLET_WORKER_CREDENTIALS's file when set (its values win),
    else from the environment. CredentialsError naming what is missing."""
    env = os.environ if environ is None else environ
    values = {name: env[name] for name in (TOKEN, BROKER, SERVER) if env.get(name)}
    named = env.get(FILE_VARIABLE)
    path: Path | None = None
    source = "environment"
    if named:
        path = Path(named).expanduser().absolute()
        try:
            text = path.read_text()
            mode = path.stat().st_mode
        except OSError as exc:
            raise CredentialsError(
                f"{FILE_VARIABLE} names {path}, which cannot be read: {exc.strerror}"
            ) from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("event=credentials_file_readable_by_others path=%s mode=%o", path, mode & 0o777)
        values.update(parse_file(text, str(path)))
        source = str(path)
    missing = [name for name in (TOKEN, SERVER) if not values.get(name)]
    if missing:
        raise CredentialsError(
            f"the worker needs {', '.join(missing)} (in its environment or in {FILE_VARIABLE})"
        )
    return WorkerCredentials(
        worker_token=values[TOKEN],
        broker_url=values.get(BROKER, ""),
        server_url=values[SERVER],
        source=source,
        file=path,
    )


def scrub_environment(
    names: Iterable[str] = SECRET_NAMES, environ: MutableMapping[str, str] | None = None
) -> list[str]:
    """Remove `names` from the environment and overwrite their values in the process's
    environment block (/proc/self/environ); returns the names that were there. Call it before
    starting threads or processes."""
    wanted = {name.encode() for name in names}
    _overwrite_initial_environment(wanted)
    env = os.environ if environ is None else environ
    removed = [name for name in names if env.pop(name, None) is not None]
    if removed:
        log.info("event=environment_scrubbed names=%s", ",".join(removed))
    return removed


def _overwrite_initial_environment(names: set[bytes]) -> None:
    """Zero the value bytes of these variables where libc's `environ` points: the strings the
    kernel placed on the stack at exec, which /proc/<pid>/environ reads."""
    try:
        libc = ctypes.CDLL(None)
        entries = ctypes.POINTER(ctypes.c_void_p).in_dll(libc, "environ")
    except (OSError, ValueError):
        log.warning("event=environment_block_not_scrubbed reason=no_libc_environ")
        return
    position = 0
    while entries[position]:
        address = entries[position]
        assert address is not None
        entry = ctypes.string_at(address)
        name, sep, value = entry.partition(b"=")
        if sep and name in names and value:
            ctypes.memset(address + len(name) + 1, 0, len(value))
        position += 1
