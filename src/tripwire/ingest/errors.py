"""The one error type of the capture endpoints and its JSON response.

Error bodies look like ``{"success": false, "code": "invalid_json", "message": "...",
...details}``; ``code`` and ``message`` are what Segment's SDKs log on a failed request.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class IngestError(Exception):
    """A request the server refuses; ``status`` is its HTTP status (4xx for client errors)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details

    def response(self) -> Response:
        body = {"success": False, "code": self.code, "message": self.message, **self.details}
        return json_response(body, self.status, self.headers)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response serialized with orjson."""
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type="application/json"
    )
