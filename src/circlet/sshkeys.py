"""SSH keys with asyncssh: make checkout key pairs, read private keys users add, fingerprints.

Fingerprints are taken of the public key's SSH wire blob, in CircleCI's two forms
(api-v1.1.md 9.7): md5 as colon-separated hex (`c9:0b:1c:...`), sha256 as base64 without
padding and without OpenSSH's `SHA256:` prefix.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import asyncssh


@dataclass(frozen=True, kw_only=True)
class KeyPair:
    """A private key (OpenSSH text) with its public half and fingerprints."""

    private_key: str
    public_key: str  # `ssh-ed25519 AAAA... comment`
    fingerprint_md5: str
    fingerprint_sha256: str


def md5_fingerprint(blob: bytes) -> str:
    return ":".join(f"{b:02x}" for b in hashlib.md5(blob, usedforsecurity=False).digest())


def sha256_fingerprint(blob: bytes) -> str:
    return base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _pair(key: asyncssh.SSHKey, private_text: str) -> KeyPair:
    blob = key.public_data
    return KeyPair(
        private_key=private_text,
        public_key=key.export_public_key("openssh").decode().strip(),
        fingerprint_md5=md5_fingerprint(blob),
        fingerprint_sha256=sha256_fingerprint(blob),
    )


def generate_ed25519(comment: str) -> KeyPair:
    """A new ed25519 key pair (the private key in OpenSSH format, unencrypted)."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    return _pair(key, key.export_private_key("openssh").decode())


def read_private_key(text: str) -> KeyPair:
    """Parse an unencrypted private key in any format asyncssh reads (OpenSSH, PEM, PKCS#8).

    Raises ValueError when the text is not such a key (a public key, an encrypted key, junk).
    """
    try:
        key = asyncssh.import_private_key(text)
    except (asyncssh.KeyImportError, ValueError, TypeError) as exc:
        raise ValueError(str(exc) or "not a private key") from None
    return _pair(key, text)
