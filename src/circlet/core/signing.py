"""Signed, expiring links (output_url, artifact url) that work without credentials.

Pure: the secret and the time are parameters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def sign(secret: bytes, path: str, expires: int) -> str:
    """A URL-safe signature of `path` valid until the Unix time `expires`."""
    mac = hmac.new(secret, f"{path}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:18]).decode().rstrip("=")


def verify(secret: bytes, path: str, expires: int, signature: str, now: float) -> bool:
    if expires < now:
        return False
    return hmac.compare_digest(sign(secret, path, expires), signature)
