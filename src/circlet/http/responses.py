"""JSON responses as CircleCI clients expect them (api-v1.1.md section 4)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

JSON_TYPE = "application/json;charset=utf-8"


def json_response(
    request: Request | None, data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """Compact JSON when the client accepts JSON, pretty-printed otherwise; same content."""
    accept = request.headers.get("accept", "") if request is not None else "application/json"
    if "application/json" in accept:
        body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    else:
        body = json.dumps(data, indent=2, ensure_ascii=False)
    return Response(body.encode(), status_code=status, media_type=JSON_TYPE, headers=headers)


def error_response(request: Request | None, status: int, message: str) -> Response:
    return json_response(request, {"message": message}, status)
