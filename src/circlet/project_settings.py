"""Project settings: the settings verbs of the `Circlet` facade (spec api-v1.1.md 8 and 10).

Environment variables, checkout keys, SSH keys, notification webhooks, the build cache, the
Heroku key and the project's own settings. `ProjectSettingsVerbs` is mixed into
`service.Circlet`: callers use these methods on a Circlet, never this class alone.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from circlet import sshkeys
from circlet.core import env as env_mod
from circlet.core.blobkeys import caches_prefix
from circlet.core.blobs import BlobStore
from circlet.core.errors import InvalidRequest, NotFound
from circlet.core.model import Project, User
from circlet.core.ports import BuildStore, ProjectSettingsStore
from circlet.core.projects import CheckoutKey, EnvVar, PublicSshKey, SshKey, Webhook

log = logging.getLogger("circlet.service")

CHECKOUT_KEY_TYPES = ("deploy-key", "github-user-key")
INVALID_SSH_KEY = "it looks like private key is invalid key.  Double check"  # CircleCI's words


class ProjectSettingsVerbs:
    """Reads and changes what a project keeps besides its builds (its settings store)."""

    store: BuildStore
    settings: ProjectSettingsStore
    blobs: BlobStore | None
    clock: Callable[[], datetime]

    if TYPE_CHECKING:  # provided by Circlet

        def _touch(self, project_id: int) -> None: ...

        def forget_project(self, project: Project) -> None: ...

    def update_project_settings(
        self, project: Project, *, oss: bool | None = None, default_branch: str | None = None
    ) -> Project:
        """Change whether the project is open source and its default branch; returns it as stored."""
        if default_branch is not None and (
            not default_branch.strip() or default_branch != default_branch.strip()
        ):
            raise InvalidRequest("default_branch must be a branch name")
        changed = replace(
            project,
            oss=project.oss if oss is None else oss,
            default_branch=project.default_branch if default_branch is None else default_branch,
        )
        if changed != project:
            self.store.save_project(changed)
            self.forget_project(project)
            self._touch(project.id or 0)
            log.info(
                "event=project_settings project=%s oss=%s default_branch=%s",
                project.slug,
                changed.oss,
                changed.default_branch,
            )
        return self.store.get_project_by_id(project.id or 0) or changed

    def clear_build_cache(self, project: Project) -> None:
        """Forget the project's dependency caches (save_cache): the next builds start cold."""
        removed = self.blobs.delete_prefix(caches_prefix(project.id or 0)) if self.blobs is not None else 0
        log.info("event=build_cache_cleared project=%s blobs=%s", project.slug, removed)

    def set_heroku_key(self, user: User, apikey: str) -> None:
        """Accepted for compatibility (POST /user/heroku-key); circlet deploys nothing to Heroku,
        so the key is not kept."""
        if not apikey:
            raise InvalidRequest("apikey is required")
        log.info("event=heroku_key_ignored login=%s", user.login)

    # environment variables

    def set_env_var(self, project: Project, name: str, value: str) -> EnvVar:
        """Create or overwrite a variable; InvalidRequest for a name that is not [A-Za-z_][A-Za-z0-9_]*."""
        if not env_mod.is_env_name(name):
            raise InvalidRequest(
                f"Invalid environment variable name {name!r}: names must match [A-Za-z_][A-Za-z0-9_]*"
            )
        var = self.settings.set_env_var(
            project.id or 0, EnvVar(name=name, value=value, created_at=self.clock())
        )
        log.info("event=env_var_set project=%s name=%s", project.slug, name)
        return var

    def get_env_var(self, project: Project, name: str) -> EnvVar:
        var = self.settings.get_env_var(project.id or 0, name)
        if var is None:
            raise NotFound("env var not found")
        return var

    def list_env_vars(self, project: Project) -> list[EnvVar]:
        return self.settings.list_env_vars(project.id or 0)

    def delete_env_var(self, project: Project, name: str) -> None:
        if not self.settings.delete_env_var(project.id or 0, name):
            raise NotFound("env var not found")
        log.info("event=env_var_deleted project=%s name=%s", project.slug, name)

    # checkout keys

    def create_checkout_key(self, project: Project, key_type: str, user: User) -> CheckoutKey:
        """A new ed25519 key pair for checking the project out. The first key is the preferred
        one; a github-user-key records the user it was made for."""
        if key_type not in CHECKOUT_KEY_TYPES:
            raise InvalidRequest(f"type must be one of {', '.join(CHECKOUT_KEY_TYPES)}")
        pair = sshkeys.generate_ed25519(f"circlet {project.slug} {key_type}")
        key = self.settings.add_checkout_key(
            CheckoutKey(
                project_id=project.id or 0,
                type=key_type,
                public_key=pair.public_key,
                private_key=pair.private_key,
                fingerprint_md5=pair.fingerprint_md5,
                fingerprint_sha256=pair.fingerprint_sha256,
                login=user.login if key_type == "github-user-key" else None,
                preferred=not self.settings.list_checkout_keys(project.id or 0),
                created_at=self.clock(),
            )
        )
        log.info("event=checkout_key_created project=%s fingerprint=%s", project.slug, key.fingerprint_md5)
        return key

    def list_checkout_keys(self, project: Project) -> list[CheckoutKey]:
        return self.settings.list_checkout_keys(project.id or 0)

    def find_checkout_key(self, project: Project, fingerprint: str) -> tuple[CheckoutKey, str]:
        """The key with this md5 or sha256 fingerprint (percent-encoded or not, with or without an
        `MD5:`/`SHA256:` prefix), and which digest matched; NotFound `checkout key not found`."""
        given = fingerprint_text(fingerprint)
        for key in self.settings.list_checkout_keys(project.id or 0):
            if given.lower() == key.fingerprint_md5.lower():
                return key, "md5"
            if _slashes(given.rstrip("=")) == _slashes(key.fingerprint_sha256.rstrip("=")):
                return key, "sha256"
        raise NotFound("checkout key not found")

    def delete_checkout_key(self, project: Project, fingerprint: str) -> None:
        key, _ = self.find_checkout_key(project, fingerprint)
        self.settings.delete_checkout_key(project.id or 0, key.id or 0)
        log.info("event=checkout_key_deleted project=%s fingerprint=%s", project.slug, key.fingerprint_md5)

    # SSH keys

    def add_ssh_key(self, project: Project, private_key: str, hostname: str | None = None) -> SshKey:
        """Add a private key for the project's builds (hostname None or "" = every host).
        InvalidRequest with CircleCI's words when it is not an unencrypted private key. Adding
        the same key for the same host again changes nothing."""
        try:
            pair = sshkeys.read_private_key(private_key)
        except ValueError:
            raise InvalidRequest(INVALID_SSH_KEY) from None
        host = (hostname or "").strip()
        for key in self.settings.list_ssh_keys(project.id or 0):
            if key.fingerprint == pair.fingerprint_md5 and key.hostname == host:
                return key
        key = self.settings.add_ssh_key(
            SshKey(
                project_id=project.id or 0,
                hostname=host,
                private_key=private_key,
                fingerprint=pair.fingerprint_md5,
                created_at=self.clock(),
            )
        )
        log.info("event=ssh_key_added project=%s fingerprint=%s host=%s", project.slug, key.fingerprint, host)
        return key

    def delete_ssh_key(self, project: Project, fingerprint: str, hostname: str | None = None) -> None:
        """NotFound when the project has no key with this md5 fingerprint for this hostname."""
        given = fingerprint_text(fingerprint).lower()
        if not self.settings.delete_ssh_key(project.id or 0, given, (hostname or "").strip()):
            raise NotFound("ssh key not found")
        log.info("event=ssh_key_deleted project=%s fingerprint=%s", project.slug, given)

    def public_ssh_keys(self, project: Project) -> list[PublicSshKey]:
        found = []
        for key in self.settings.list_ssh_keys(project.id or 0):
            try:
                public = sshkeys.read_private_key(key.private_key).public_key
            except ValueError:
                public = ""
            found.append(PublicSshKey(hostname=key.hostname, public_key=public, fingerprint=key.fingerprint))
        return found

    # webhooks (sent by the notifier when a build finishes)

    def add_webhook(self, project: Project, url: str) -> Webhook:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidRequest(f"invalid webhook URL {url!r}: use an http:// or https:// URL")
        hook = self.settings.add_webhook(
            Webhook(project_id=project.id or 0, url=url, created_at=self.clock())
        )
        log.info("event=webhook_added project=%s id=%s", project.slug, hook.id)
        return hook

    def list_webhooks(self, project: Project) -> list[Webhook]:
        return self.settings.list_webhooks(project.id or 0)

    def remove_webhook(self, project: Project, hook_id: int) -> None:
        if not self.settings.delete_webhook(project.id or 0, hook_id):
            raise NotFound(f"{project.slug} has no webhook {hook_id}")
        log.info("event=webhook_removed project=%s id=%s", project.slug, hook_id)


def fingerprint_text(fingerprint: str) -> str:
    """A fingerprint as a client sent it, made comparable: percent-decoded, `MD5:`/`SHA256:`
    prefix and surrounding blanks removed, a `+` turned blank by form decoding put back."""
    text = unquote(fingerprint.strip()) if "%" in fingerprint else fingerprint.strip()
    for prefix in ("MD5:", "SHA256:"):
        if text.upper().startswith(prefix):
            text = text[len(prefix) :]
    return text.replace(" ", "+")


def _slashes(text: str) -> str:
    # The HTTP layer folds repeated slashes of a path into one; a base64 fingerprint may hold "//".
    return re.sub("/+", "/", text)
