"""Cache key templates (config.md 3.4): `v1-{{ .Branch }}-{{ checksum "go.sum" }}` -> a key. Pure.

Go-template syntax, the subset CircleCI documents: actions `{{ ... }}` (spaces optional, `{{-`
and `-}}` trim the whitespace beside them as in Go) holding one of

    .Branch  .BuildNum  .Revision  .CheckoutKey  .Environment.NAME  epoch  arch  checksum "FILE"

The file of `checksum` may be quoted with "..." or `...`. Anything else is a TemplateError naming
it (the step fails). File contents come from the caller (`checksum` callback), so this module
stays free of I/O; `file_checksum` turns a SHA-256 digest into CircleCI's text form.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from circlet.core.errors import InvalidRequest

CHECKOUT_KEY = "circlet-checkout-key"  # DECISION (config.md 3.4): one fixed string

_ACTION = re.compile(r"\{\{(-\s)?\s*(.*?)\s*(\s-)?\}\}", re.DOTALL)
_CHECKSUM = re.compile(r'checksum\s+(?:"((?:[^"\\]|\\.)*)"|`([^`]*)`)\Z', re.DOTALL)
_ENVIRONMENT = re.compile(r"\.Environment\.([A-Za-z_][A-Za-z0-9_]*)\Z")
_MACHINES = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i686": "386",
    "i386": "386",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}


class TemplateError(InvalidRequest):
    """A cache key template circlet cannot render; the message says which part and why."""


@dataclass(frozen=True, kw_only=True)
class KeyValues:
    """What a key template may refer to, for one build."""

    branch: str | None  # None (rendered "") for tag builds
    build_num: int
    revision: str
    environment: Mapping[str, str] = field(default_factory=dict)  # built-in and project variables
    epoch: int = 0  # the Unix time of the step, seconds
    arch: str = "arch1-linux-amd64"


def arch_name(system: str, machine: str) -> str:
    """`{{ arch }}` (DECISION config.md 3.4): arch1-<os>-<arch>, Go's names: arch1-linux-amd64."""
    return f"arch1-{system.lower()}-{_MACHINES.get(machine.lower(), machine.lower())}"


def file_checksum(sha256_digest: bytes) -> str:
    """`{{ checksum }}`'s text: standard base64 (with `=` padding) of the digest, `/` -> `_`."""
    return base64.b64encode(sha256_digest).decode("ascii").replace("/", "_")


def checksum_files(template: str) -> list[str]:
    """The files a template checksums, in order (so the caller can read them first)."""
    files = []
    for match in _ACTION.finditer(template):
        found = _CHECKSUM.match(match.group(2))
        if found:
            files.append(_unquote(found))
    return files


def render(template: str, values: KeyValues, checksum: Callable[[str], str]) -> str:
    """The key a template stands for. `checksum(file)` returns file_checksum of the file's bytes
    (or raises a CircletError, e.g. for a missing file). TemplateError for an unknown action,
    an unclosed `{{` or a stray `}}`."""
    out: list[str] = []
    position = 0
    for match in _ACTION.finditer(template):
        text = template[position : match.start()]
        if match.group(1):
            text = text.rstrip()
        out.append(_literal(text, template))
        out.append(_evaluate(match.group(2), values, checksum))
        position = match.end()
        if match.group(3):
            while position < len(template) and template[position].isspace():
                position += 1
    out.append(_literal(template[position:], template))
    return "".join(out)


def _literal(text: str, template: str) -> str:
    if "{{" in text:
        raise TemplateError(f"unclosed '{{{{' in cache key template {template!r}")
    if "}}" in text:
        raise TemplateError(f"'}}}}' without '{{{{' in cache key template {template!r}")
    return text


def _evaluate(expression: str, values: KeyValues, checksum: Callable[[str], str]) -> str:
    if expression == ".Branch":
        return values.branch or ""
    if expression == ".BuildNum":
        return str(values.build_num)
    if expression == ".Revision":
        return values.revision
    if expression == ".CheckoutKey":
        return CHECKOUT_KEY
    if expression == "epoch":
        return str(values.epoch)
    if expression == "arch":
        return values.arch
    env = _ENVIRONMENT.match(expression)
    if env:
        return values.environment.get(env.group(1), "")
    found = _CHECKSUM.match(expression)
    if found:
        path = _unquote(found)
        if not path:
            raise TemplateError('checksum needs a file name: {{ checksum "FILE" }}')
        return checksum(path)
    raise TemplateError(
        f"unknown cache key template {{{{ {expression} }}}}; circlet knows .Branch, .BuildNum, "
        '.Revision, .CheckoutKey, .Environment.NAME, epoch, arch and checksum "FILE"'
    )


def _unquote(found: re.Match[str]) -> str:
    if found.group(1) is not None:
        return re.sub(r"\\(.)", r"\1", found.group(1))
    return found.group(2)
