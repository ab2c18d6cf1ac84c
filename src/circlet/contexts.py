"""Contexts: named sets of environment variables that workflow jobs name in `context`.

Managed by administrators (HTTP: /api/v1.1/contexts, CLI: `circlet context ...`); a job that
names a context gets its variables over the project's (config.md 4). Values are never shown
again once set: lists mask them like project variables.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from datetime import datetime

from circlet.core import env as env_mod
from circlet.core.errors import InvalidRequest, NotFound
from circlet.core.pipeline import Context, ContextVar, PipelineStore

log = logging.getLogger("circlet.contexts")
CONTEXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class Contexts:
    """The use cases of contexts (reached as `Circlet.workflows.contexts`)."""

    def __init__(self, store: PipelineStore, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock

    def create(self, name: str) -> Context:
        """InvalidRequest for a bad name; Conflict when it exists."""
        if not CONTEXT_NAME.fullmatch(name):
            raise InvalidRequest(
                f"Invalid context name {name!r}: use letters, digits, '.', '_' and '-' (at most 200)"
            )
        context = self.store.create_context(Context(id=str(uuid.uuid4()), name=name, created_at=self.clock()))
        log.info("event=context_created name=%s", name)
        return context

    def get(self, name: str) -> Context:
        found = self.store.get_context(name)
        if found is None:
            raise NotFound(f"Context {name!r} not found")
        return found

    def all(self) -> list[Context]:
        return self.store.list_contexts()

    def delete(self, name: str) -> None:
        if not self.store.delete_context(name):
            raise NotFound(f"Context {name!r} not found")
        log.info("event=context_deleted name=%s", name)

    def set_var(self, name: str, var_name: str, value: str) -> ContextVar:
        if not env_mod.is_env_name(var_name):
            raise InvalidRequest(
                f"Invalid environment variable name {var_name!r}: names must match [A-Za-z_][A-Za-z0-9_]*"
            )
        self.get(name)
        var = self.store.set_context_var(
            name, ContextVar(name=var_name, value=value, created_at=self.clock())
        )
        log.info("event=context_var_set context=%s name=%s", name, var_name)
        return var

    def vars(self, name: str) -> list[ContextVar]:
        self.get(name)
        return self.store.list_context_vars(name)

    def unset_var(self, name: str, var_name: str) -> None:
        self.get(name)
        if not self.store.delete_context_var(name, var_name):
            raise NotFound(f"Context {name!r} has no variable {var_name!r}")
        log.info("event=context_var_unset context=%s name=%s", name, var_name)
