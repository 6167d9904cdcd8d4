"""The capture app's shortcut (capture POSTs skip FastAPI's middleware stack and router)
answers exactly as the ordinary path does, and steps aside when middleware is added."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from starlette.middleware.base import BaseHTTPMiddleware

from tripwire.ingest.app import CaptureApp, create_app
from tripwire.store.buffer import Buffer
from tripwire.store.keys import KeyStore
from tripwire.store.workspace import init_workspace


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[tuple[CaptureApp, CaptureApp, str]]:
    """Two capture apps on one workspace: the shortcut on, and off (a pass-through
    middleware is added, which must see every request)."""
    workspace = init_workspace(tmp_path / "ws")
    with Buffer.for_workspace(workspace) as buffer, KeyStore.for_workspace(workspace) as keys:
        secret = keys.create("app").secret
        fast = create_app(workspace, buffer=buffer, keys=keys)
        slow = create_app(workspace, buffer=buffer, keys=keys)
        slow.add_middleware(
            BaseHTTPMiddleware, dispatch=lambda request, call_next: call_next(request)
        )
        yield fast, slow, secret


def _track(message_id: str) -> dict[str, object]:
    return {"type": "track", "event": "Order Completed", "userId": "u1", "messageId": message_id,
            "timestamp": "2026-03-01T11:59:00Z"}  # fmt: skip


def _requests(secret: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, httpx keyword arguments) covering every answer of the capture routes;
        each call builds fresh messageIds (both apps share one buffer, and each must store what it
    is sent)."""
    auth = (secret, "")
    batch = {"batch": [_track(str(uuid.uuid4())), {"type": "track"}]}
    gz = gzip.compress(orjson.dumps({"batch": [_track(str(uuid.uuid4()))]}))
    return [
        ("POST", "/v1/batch", {"json": batch, "auth": auth}),
        ("POST", "/v1/batch", {"json": {**batch, "writeKey": secret}}),
        ("POST", "/v1/batch", {"json": batch}),
        ("POST", "/v1/batch", {"json": batch, "auth": ("tw_nope", "")}),
        ("POST", "/v1/batch", {"content": b'{"batch": [1,]}', "auth": auth}),
        (
            "POST",
            "/v1/batch",
            {"content": gz, "auth": auth, "headers": {"Content-Encoding": "gzip"}},
        ),  # fmt: skip
        ("POST", "/v1/batch", {"content": gz, "auth": auth, "headers": {"Content-Encoding": "br"}}),
        ("POST", "/v1/batch", {"content": b"x" * 600_000, "auth": auth}),
        ("POST", "/v1/batch", {"json": {"batch": [{"type": "track"}]}, "auth": auth}),
        ("POST", "/v1/track", {"json": _track(str(uuid.uuid4())), "auth": auth}),
        ("POST", "/v1/identify", {"json": {"traits": {"a": 1}}, "auth": auth}),
        (
            "POST",
            "/batch/",
            {
                "json": {
                    "api_key": secret,
                    "batch": [{"event": "e", "distinct_id": "d", "uuid": str(uuid.uuid4())}],
                }
            },
        ),  # fmt: skip
        ("GET", "/v1/batch", {}),
        ("POST", "/v1/nothing", {"json": {}, "auth": auth}),
        ("GET", "/healthz", {}),
    ]


def _answer(response) -> tuple[int, dict[str, str], object]:  # type: ignore[no-untyped-def]
    headers = {k: v for k, v in response.headers.items() if k not in ("content-length", "date")}
    try:
        body: object = response.json()
    except ValueError:
        body = response.text
    return response.status_code, headers, body


def test_shortcut_answers_like_the_ordinary_path(apps) -> None:  # type: ignore[no-untyped-def]
    fast, slow, secret = apps
    with TestClient(fast) as fast_client, TestClient(slow) as slow_client:
        for (method, path, kwargs), (_, _, same) in zip(
            _requests(secret), _requests(secret), strict=True
        ):
            got = _answer(fast_client.request(method, path, **kwargs))
            want = _answer(slow_client.request(method, path, **same))
            assert got == want, (method, path)


def test_capture_posts_skip_the_middleware_stack(apps) -> None:  # type: ignore[no-untyped-def]
    fast, slow, secret = apps
    batch = {"batch": [_track(str(uuid.uuid4()))]}
    assert TestClient(fast).post("/v1/batch", json=batch, auth=(secret, "")).status_code == 200
    assert fast.middleware_stack is None  # never built: the shortcut answered
    assert TestClient(fast).get("/healthz").status_code == 200
    assert fast.middleware_stack is not None  # everything else takes the ordinary path

    seen: list[str] = []

    async def dispatch(request, call_next):  # type: ignore[no-untyped-def]
        seen.append(request.url.path)
        return await call_next(request)

    slow.add_middleware(BaseHTTPMiddleware, dispatch=dispatch)
    batch = {"batch": [_track(str(uuid.uuid4()))]}
    assert TestClient(slow).post("/v1/batch", json=batch, auth=(secret, "")).status_code == 200
    assert seen == ["/v1/batch"]


def test_unexpected_errors_are_500_and_raised(apps, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    fast, _, secret = apps

    def broken(batch: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(fast.state.capture.buffer, "submit_batch", broken)
    batch = {"batch": [_track(str(uuid.uuid4()))]}
    client = TestClient(fast, raise_server_exceptions=False)
    response = client.post("/v1/batch", json=batch, auth=(secret, ""))
    assert (response.status_code, response.text) == (500, "Internal Server Error")
    with pytest.raises(RuntimeError, match="bug"):
        TestClient(fast).post("/v1/batch", json=batch, auth=(secret, ""))
