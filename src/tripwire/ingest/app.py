"""The HTTP capture API: Segment's tracking API and PostHog's capture API on one buffer.

Endpoints (docs/ingest.md has the full reference):

- ``POST /v1/batch`` and ``/v1/track|identify|page|screen|group|alias`` — Segment format;
  write key as HTTP Basic username or ``writeKey`` in the body.
- ``POST /batch/``, ``/capture/``, ``/e/``, ``/i/v0/e/`` — PostHog format (``api_key``).
- ``GET /healthz`` — liveness and buffer depth.

A request is answered 200 only after its accepted events are durable in the buffer (group
commit: concurrent requests share one fsync). Invalid events of a batch are listed by index
and reason while the valid ones are stored. Client mistakes get 4xx with a clear message;
when the buffer is over its high-water mark the answer is 429 with ``Retry-After``.

The routes are plain Starlette routes on a FastAPI app: no per-request model validation
(the envelope is validated by :mod:`tripwire.events`, by hand, for speed). The app is a
:class:`CaptureApp`, which hands a capture ``POST`` straight to its endpoint instead of
through FastAPI's middleware stack and router (≈ 0.14 ms of the event loop's CPU per
request of 100 events, 8% of it); every other request, and every request once middleware or
FastAPI's telemetry is enabled, takes the ordinary path.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from tripwire.events import (
    MAX_BATCH_BYTES,
    MAX_EVENT_BYTES,
    EventValidationError,
    Rejection,
    normalize_event,
)
from tripwire.events.columns import (
    EnvelopeBatch,
    envelopes_to_batch,
    normalize_batch,
    rejection_batch,
)
from tripwire.events.posthog import posthog_to_segment, posthog_write_key
from tripwire.ingest.bodies import read_json, read_posthog_json
from tripwire.ingest.errors import IngestError, json_response
from tripwire.store.buffer import AppendResult, Buffer, BufferError
from tripwire.store.keys import ApiKey, AuthenticationError, KeyStore
from tripwire.store.workspace import Workspace

log = logging.getLogger("tripwire.ingest")

SEGMENT_CALLS = ("track", "identify", "page", "screen", "group", "alias")
POSTHOG_PATHS = ("/batch", "/capture", "/e", "/i/v0/e")
DEFAULT_RETRY_AFTER_S = 5


@dataclass(frozen=True)
class Limits:
    """Size limits (bytes, after decompression) and the backpressure answer."""

    max_event_bytes: int = MAX_EVENT_BYTES
    max_batch_bytes: int = MAX_BATCH_BYTES
    retry_after_s: int = DEFAULT_RETRY_AFTER_S

    @classmethod
    def for_workspace(cls, workspace: Workspace) -> Limits:
        return cls(
            max_event_bytes=int(workspace.setting("ingest", "max_event_bytes")),
            max_batch_bytes=int(workspace.setting("ingest", "max_batch_bytes")),
            retry_after_s=int(
                workspace.setting("ingest", "retry_after_seconds", default=DEFAULT_RETRY_AFTER_S)
            ),
        )


def header_write_key(request: Request) -> str | None:
    """The key from ``Authorization: Basic base64(key:)`` or ``Authorization: Bearer key``."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip() or None
    if scheme != "basic":
        raise IngestError(401, "unauthorized", f"unsupported Authorization scheme {scheme!r}")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise IngestError(401, "unauthorized", "malformed Basic credentials") from None
    return decoded.partition(":")[0] or None


def _rejections(rejected: Sequence[Rejection]) -> list[dict[str, object]]:
    return [r.as_dict() for r in rejected]


class CaptureService:
    """Authenticates, validates and appends; one per server process."""

    def __init__(self, buffer: Buffer, keys: KeyStore, limits: Limits) -> None:
        self.buffer = buffer
        self.keys = keys
        self.limits = limits

    # -- shared steps ---------------------------------------------------------------------

    def check_backpressure(self) -> None:
        if self.buffer.over_high_water():
            raise IngestError(
                429,
                "buffer_full",
                "the buffer is behind its consumers; retry later",
                headers={"Retry-After": str(self.limits.retry_after_s)},
            )

    def authenticate(self, header_key: str | None, body_key: Any) -> ApiKey:
        if body_key is not None and not isinstance(body_key, str):
            raise IngestError(401, "unauthorized", "writeKey must be a string")
        if header_key and body_key and header_key != body_key:
            raise IngestError(
                401, "unauthorized", "the Authorization header and writeKey name different keys"
            )
        try:
            return self.keys.authenticate(header_key or body_key, "write")
        except AuthenticationError as error:
            raise IngestError(error.status, "unauthorized", error.reason) from None

    async def store(
        self,
        batch: EnvelopeBatch,
        rejected: Sequence[Rejection] = (),
        messages: Sequence[Any] = (),
        key: ApiKey | None = None,
        received_at: datetime | None = None,
    ) -> AppendResult:
        """Append the accepted events and, in the same group commit, one ``$rejected``
        record per rejected message (so rejections are counted per source and minute)."""
        try:
            if rejected and key is not None and received_at is not None:
                records = rejection_batch(
                    rejected,
                    messages,
                    received_at=received_at,
                    source=key.source,
                    write_key=key.key_id,
                )
                self.buffer.submit_batch(records)  # shares the commit of the batch below
            if not len(batch):
                return AppendResult(stored=0, duplicates=0)
            return await asyncio.wrap_future(self.buffer.submit_batch(batch))
        except (BufferError, sqlite3.Error, OSError) as error:
            log.exception("buffer append failed")
            raise IngestError(
                503,
                "buffer_unavailable",
                f"events could not be stored durably ({type(error).__name__}); retry",
                headers={"Retry-After": str(self.limits.retry_after_s)},
            ) from None

    @staticmethod
    def answer(
        accepted: int, result: AppendResult, rejected: Sequence[Rejection], extra: dict[str, Any]
    ) -> Response:
        body = {
            **extra,
            "success": True,
            "accepted": accepted,
            "stored": result.stored,
            "duplicates": result.duplicates,
            "rejected": _rejections(rejected),
        }
        if not accepted and rejected:
            body["success"] = False
            body["code"] = "invalid_events"
            body["message"] = f"all {len(rejected)} events were rejected"
            return json_response(body, 400)
        return json_response(body)

    # -- Segment ----------------------------------------------------------------------------

    async def segment(self, request: Request, call: str | None) -> Response:
        """``/v1/batch`` (``call`` None) or a single ``/v1/<call>``."""
        try:
            self.check_backpressure()
            limit = self.limits.max_batch_bytes if call is None else self.limits.max_event_bytes
            header_key = header_write_key(request)
            body = await read_json(request, limit)
            if not isinstance(body, dict):
                raise IngestError(
                    400, "invalid_body", f"body must be a JSON object, got {type(body).__name__}"
                )
            key = self.authenticate(header_key, body.get("writeKey"))
            received_at = datetime.now(UTC)
            if call is None:
                messages = body.get("batch")
                if not isinstance(messages, list):
                    raise IngestError(400, "invalid_body", "batch must be an array of messages")
                context = body.get("context")
                try:
                    accepted, rejected = normalize_batch(
                        messages,
                        received_at=received_at,
                        source=key.source,
                        sent_at=body.get("sentAt"),
                        context=context if isinstance(context, dict) else None,
                        max_event_bytes=self.limits.max_event_bytes,
                    )
                except EventValidationError as error:
                    raise IngestError(400, "invalid_body", str(error), field=error.field) from None
            else:
                body["type"] = call
                messages = [body]
                try:
                    accepted = envelopes_to_batch(
                        [
                            normalize_event(
                                body,
                                received_at=received_at,
                                source=key.source,
                                max_event_bytes=self.limits.max_event_bytes,
                            )
                        ]
                    )
                except EventValidationError as error:
                    await self.store(
                        EnvelopeBatch.empty(),
                        [Rejection(0, error.field, error.reason)],
                        messages,
                        key,
                        received_at,
                    )
                    raise IngestError(
                        400, "invalid_event", str(error), field=error.field, reason=error.reason
                    ) from None
                rejected = []
            result = await self.store(accepted, rejected, messages, key, received_at)
            return self.answer(len(accepted), result, rejected, {})
        except IngestError as error:
            return error.response()

    # -- PostHog ----------------------------------------------------------------------------

    async def posthog(self, request: Request) -> Response:
        """PostHog's ``/batch/``, ``/capture/``, ``/e/``: one event, a batch or a list."""
        try:
            self.check_backpressure()
            body = await read_posthog_json(request, self.limits.max_batch_bytes)
            header_key = header_write_key(request)
            key = self.authenticate(header_key, posthog_write_key(body))
            received_at = datetime.now(UTC)
            sent_at: Any = None
            if isinstance(body, dict) and "batch" in body:
                events = body["batch"]
                sent_at = body.get("sent_at")
                if not isinstance(events, list):
                    raise IngestError(400, "invalid_body", "batch must be an array of events")
            elif isinstance(body, list):
                events = body
            elif isinstance(body, dict):
                events = [body]
            else:
                raise IngestError(
                    400,
                    "invalid_body",
                    f"body must be an object or an array, got {type(body).__name__}",
                )
            messages = [
                posthog_to_segment(event, received_at=received_at, sent_at=sent_at)
                for event in events
            ]
            accepted, rejected = normalize_batch(
                messages,
                received_at=received_at,
                source=key.source,
                max_event_bytes=self.limits.max_event_bytes,
            )
            result = await self.store(accepted, rejected, messages, key, received_at)
            return self.answer(len(accepted), result, rejected, {"status": 1})
        except IngestError as error:
            return error.response()

    # -- health -----------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        depth = self.buffer.depth()
        return json_response(
            {
                "status": "ok",
                "buffer_depth": depth,
                "high_water_mark": self.buffer.high_water_mark,
                "over_high_water": depth > self.buffer.high_water_mark,
            }
        )


Endpoint = Callable[[Request], Awaitable[Response]]


def _route_path(scope: Scope) -> str:
    """The request path below the app's ``root_path`` (as Starlette's router matches it)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path + "/"):
        return path[len(root_path) :]
    return path


class CaptureApp(FastAPI):
    """A FastAPI app that serves its capture ``POST`` routes without the middleware stack.

    FastAPI runs every request through its error, telemetry, body-limit, exception and
    exit-stack middlewares, the router's match over every route, and the endpoint wrapper;
    for a capture request that is ≈ 0.14 ms of CPU (median of paired runs of
    ``bench.ingest``'s ``app_*`` measurement), while parsing and validating 100 events is
    ≈ 0.75 ms. The capture endpoints need none of it (they answer every client error
    themselves), so :meth:`__call__` gives a ``POST`` to one of :attr:`fast_routes`
    directly to its endpoint. The routes stay registered on the router too, so a GET gets
    405 and the app behaves the same whichever path a request takes. Middleware added to
    the app or FastAPI's telemetry switch the shortcut off (they must see every request).
    """

    #: Path → endpoint of the routes served directly (filled by :func:`install_capture_routes`).
    fast_routes: dict[str, Endpoint]

    #: How long the answer "is FastAPI's telemetry on?" is reused (asking costs ≈ 25 µs:
    #: it looks up OpenTelemetry's global providers, which can be installed at any time).
    TELEMETRY_RECHECK_S = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast_routes = {}
        self._telemetry_checked: tuple[float, bool] = (-math.inf, False)

    def _shortcut_allowed(self) -> bool:
        if self.user_middleware:
            return False
        checked, enabled = self._telemetry_checked
        now = time.monotonic()
        if now - checked > self.TELEMETRY_RECHECK_S:
            telemetry = getattr(self, "_native_telemetry", None)  # FastAPI ≥ 0.160
            enabled = telemetry is not None and bool(telemetry.enabled())
            self._telemetry_checked = (now, enabled)
        return not enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.fast_routes.get(_route_path(scope))
            if endpoint is not None and not self.root_path and self._shortcut_allowed():
                scope["app"] = self
                await _serve_directly(endpoint, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def _serve_directly(endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
    """Run ``endpoint`` as Starlette's route would, with its error middleware's last resort:
    an unexpected exception is answered 500 and re-raised for the server to log."""
    try:
        response = await endpoint(Request(scope, receive))
    except ClientDisconnect:  # nobody is left to answer
        return
    except Exception:
        await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
        raise
    await response(scope, receive, send)


def _segment_endpoint(service: CaptureService, call: str | None) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        return await service.segment(request, call)

    endpoint.__name__ = f"segment_{call or 'batch'}"
    return endpoint


def install_capture_routes(app: FastAPI, service: CaptureService) -> None:
    """Add the Segment, PostHog and health routes of ``service`` to ``app`` (and, on a
    :class:`CaptureApp`, the ``POST`` routes to its :attr:`~CaptureApp.fast_routes`)."""
    posts: dict[str, Endpoint] = {"/v1/batch": _segment_endpoint(service, None)}
    for call in SEGMENT_CALLS:
        posts[f"/v1/{call}"] = _segment_endpoint(service, call)
    for path in POSTHOG_PATHS:
        posts[path] = posts[f"{path}/"] = service.posthog
    for path, endpoint in posts.items():
        app.router.add_route(path, endpoint, methods=["POST"])
    app.router.add_route("/healthz", service.health, methods=["GET"])
    if isinstance(app, CaptureApp):
        app.fast_routes.update(posts)


def create_app(
    workspace: Workspace,
    *,
    buffer: Buffer | None = None,
    keys: KeyStore | None = None,
) -> CaptureApp:
    """The capture app of ``workspace``: the Segment, PostHog and health routes only.

    Opens the workspace's buffer and key store now and closes them when the app shuts
    down; a ``buffer``/``keys`` passed in is used as is and left open (tests, embedding).
    The service is ``app.state.capture`` (its ``keys`` are shared by the routes other
    areas add). ``tripwire serve`` composes this app with the monitor, experiment and
    dashboard routes in :func:`tripwire.web.server.create_server_app`.
    """
    the_buffer = buffer if buffer is not None else Buffer.for_workspace(workspace)
    the_keys = keys if keys is not None else KeyStore.for_workspace(workspace)
    owned = [r for r, given in ((the_buffer, buffer), (the_keys, keys)) if given is None]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # the writer thread loads the dedupe index now, not while the first request waits
        the_buffer.preload_keys()
        try:
            yield
        finally:
            for resource in owned:
                resource.close()

    app = CaptureApp(title="tripwire capture API", lifespan=lifespan, openapi_url=None)
    service = CaptureService(the_buffer, the_keys, Limits.for_workspace(workspace))
    app.state.capture = service
    install_capture_routes(app, service)
    return app
