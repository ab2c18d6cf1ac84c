"""JSON shapes the gateway and the client share beyond executors/protocol.py's."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from circlet.core.blobs import BlobInfo


def encode_info(info: BlobInfo) -> dict[str, Any]:
    return {"key": info.key, "size": info.size, "created_at": info.created_at.isoformat()}


def decode_info(data: dict[str, Any]) -> BlobInfo:
    return BlobInfo(
        key=data["key"], size=int(data["size"]), created_at=datetime.fromisoformat(data["created_at"])
    )
