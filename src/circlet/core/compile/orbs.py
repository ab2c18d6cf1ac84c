"""Namespaces: the config's own elements and its orbs, inline or from the registry (spec 7.5)."""

from __future__ import annotations

import re
from typing import Any

from circlet.core.compile.parameters import _ELEMENT_NAME, _Parameters
from circlet.core.compile.state import _Namespace
from circlet.core.errors import ConfigError
from circlet.core.yamlload import load_yaml

MAX_ORB_DEPTH = 10

_JOB_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")  # uppercase job names: CCI warns, we accept
_ORB_REF = re.compile(r"[a-z0-9_-]+/[a-z0-9_-]+@\S+")


class _Orbs(_Parameters):
    """Builds the namespace tree and resolves `name` and `alias/name` in it."""

    def _namespace(
        self,
        body: dict[str, Any],
        prefix: str,
        path: str,
        pipeline: bool,
        parent: _Namespace | None,
        depth: int,
    ) -> _Namespace:
        ns = _Namespace(prefix=prefix, path=path, pipeline=pipeline, parent=parent)
        for section in ("commands", "executors", "jobs"):
            elements = body.get(section)
            if elements is None:
                continue
            if not isinstance(elements, dict):
                self.add(f"`{section}` must be a mapping of names to definitions", f"{path}{section}")
                continue
            pattern = _JOB_NAME if section == "jobs" else _ELEMENT_NAME
            for name, element in elements.items():
                if not isinstance(name, str) or not pattern.fullmatch(name):
                    what = section.removesuffix("s")
                    self.add(
                        f"invalid {what} name {name!r}: a letter, then lowercase letters, digits, _ or -",
                        f"{path}{section}.{name}",
                    )
                getattr(ns, section)[str(name)] = element
        declared = body.get("orbs")
        if declared is None:
            return ns
        if not isinstance(declared, dict):
            self.add("`orbs` must be a mapping of aliases to orbs", f"{path}orbs")
            return ns
        for alias, orb in declared.items():
            at = f"{path}orbs.{alias}"
            if depth >= MAX_ORB_DEPTH:
                self.add(f"orbs nested deeper than {MAX_ORB_DEPTH}", at)
                break
            if isinstance(orb, str) and pipeline:
                orb = self.subst(orb, self.top, at)
            if isinstance(orb, str):
                orb = self._registry_orb(orb, at)
            elif not isinstance(orb, dict):
                self.add("an orb is a `namespace/name@version` string or an inline orb mapping", at)
                continue
            if orb is not None:
                ns.orbs[str(alias)] = self._namespace(
                    orb, f"{prefix}{alias}/", f"{at}.", False, ns, depth + 1
                )
        return ns

    def _registry_orb(self, ref: str, path: str) -> dict[str, Any] | None:
        if not _ORB_REF.fullmatch(ref):
            self.add(f"invalid orb reference {ref!r}: expected namespace/name@version", path)
            return None
        text = self.orb_texts.get(ref)
        if text is None:
            self.add(f"Cannot find orb {ref}", path)
            return None
        try:
            data, _ = load_yaml(text, filename=ref)
        except ConfigError as exc:
            for problem in exc.problems:
                self.add(f"orb {ref}: {problem.message}", path)
            return None
        if not isinstance(data, dict):
            self.add(f"orb {ref} must be a mapping", path)
            return None
        return data

    def resolve(self, ns: _Namespace, section: str, name: str) -> tuple[_Namespace, Any, str] | None:
        """`name` or `alias/name` -> (owning namespace, definition, key path); own orb first."""
        if "/" in name:
            alias, _, rest = name.partition("/")
            scope: _Namespace | None = ns
            while scope is not None:
                if alias in scope.orbs:
                    return self.resolve_in(scope.orbs[alias], section, rest)
                scope = scope.parent
            return None
        scope = ns
        while scope is not None:
            found = self.resolve_in(scope, section, name)
            if found is not None:
                return found
            scope = scope.parent
        return None

    def resolve_in(self, ns: _Namespace, section: str, name: str) -> tuple[_Namespace, Any, str] | None:
        if "/" in name:
            return self.resolve(ns, section, name) if name.partition("/")[0] in ns.orbs else None
        elements: dict[str, Any] = getattr(ns, section)
        if name in elements:
            return ns, elements[name], f"{ns.path}{section}.{name}"
        return None
