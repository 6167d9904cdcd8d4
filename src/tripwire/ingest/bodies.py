"""Request bodies: read with a size limit, gunzip with a size limit, parse JSON with a position.

Every failure here is the client's and becomes an :class:`IngestError` with a 4xx status:
413 when a limit is exceeded (before the excess is read or inflated, so a gzip bomb costs
at most the limit), 400 for bad gzip, bad base64 or malformed JSON (with line, column and
character position of the first error).
"""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Any
from urllib.parse import parse_qs

import orjson
from starlette.requests import Request

from tripwire.ingest.errors import IngestError

GZIP_MAGIC = b"\x1f\x8b"
#: Slack for gzip framing when the compressed body is checked against the inflated limit.
_GZIP_SLACK = 1024


async def read_limited(request: Request, limit: int) -> bytes:
    """The raw body, refusing (413) anything longer than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise IngestError(
            413, "payload_too_large", f"body is {declared} bytes, over the {limit}-byte limit"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise IngestError(413, "payload_too_large", f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def gunzip_limited(data: bytes, limit: int) -> bytes:
    """Inflate one gzip member, refusing (413) output longer than ``limit`` bytes."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as error:
        raise IngestError(400, "invalid_gzip", f"body is not valid gzip: {error}") from None
    if len(out) > limit:
        raise IngestError(
            413, "payload_too_large", f"decompressed body is over the {limit}-byte limit"
        )
    if not inflater.eof:
        raise IngestError(400, "invalid_gzip", "gzip stream is truncated")
    if inflater.unused_data:
        raise IngestError(400, "invalid_gzip", "unexpected data after the gzip stream")
    return out


def parse_json(data: bytes) -> Any:
    """Parse JSON, or 400 naming the line, column and character position of the error.

    >>> try:
    ...     parse_json(b'{"batch": [1,]}')
    ... except IngestError as error:
    ...     error.details["line"], error.details["column"], error.details["position"]
    (1, 13, 12)
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise IngestError(
            400,
            "invalid_json",
            f"malformed JSON at line {error.lineno}, column {error.colno}"
            f" (character {error.pos}): {error.msg}",
            line=error.lineno,
            column=error.colno,
            position=error.pos,
        ) from None


def _wants_gzip(request: Request, data: bytes) -> bool:
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return True
    if encoding not in ("", "identity"):
        raise IngestError(
            415,
            "unsupported_encoding",
            f"Content-Encoding {encoding!r} is not supported (use gzip)",
        )
    compression = request.query_params.get("compression", "")
    if compression in ("gzip", "gzip-js"):
        return True
    if compression not in ("", "none"):
        raise IngestError(
            415, "unsupported_encoding", f"compression={compression!r} is not supported (use gzip)"
        )
    return data[:2] == GZIP_MAGIC


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON: size-limited, gunzipped when gzip, limit applied after inflating."""
    data = await read_limited(request, limit + _GZIP_SLACK)
    if _wants_gzip(request, data):
        data = gunzip_limited(data, limit)
    elif len(data) > limit:
        raise IngestError(
            413, "payload_too_large", f"body is {len(data)} bytes, over the {limit}-byte limit"
        )
    return parse_json(data)


async def read_posthog_json(request: Request, limit: int) -> Any:
    """PostHog bodies: JSON, or a form with ``data=`` holding JSON or base64 JSON
    (posthog-js' older transport), each optionally gzip-compressed."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/x-www-form-urlencoded"):
        return await read_json(request, limit)
    data = await read_limited(request, limit * 2 + _GZIP_SLACK)  # base64 inflates by 4/3
    if _wants_gzip(request, data):
        data = gunzip_limited(data, limit * 2)
    try:
        fields = parse_qs(data.decode("utf-8"), strict_parsing=False)
    except UnicodeDecodeError:
        raise IngestError(400, "invalid_form", "form body is not UTF-8") from None
    payload = (fields.get("data") or [""])[0].strip()
    if not payload:
        raise IngestError(400, "invalid_form", "form body has no data= field")
    if payload[0] not in "{[":
        try:
            raw = base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError) as error:
            raise IngestError(400, "invalid_base64", f"data= is not base64: {error}") from None
        if raw[:2] == GZIP_MAGIC:
            raw = gunzip_limited(raw, limit)
    else:
        raw = payload.encode("utf-8")
    if len(raw) > limit:
        raise IngestError(413, "payload_too_large", f"data is over the {limit}-byte limit")
    return parse_json(raw)
