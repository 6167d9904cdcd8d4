"""Feeding a workspace: in process through the buffer, and over HTTP."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import httpx
import pytest

from tripwire.events.envelope import MAX_BATCH_BYTES
from tripwire.sim import GroundTruth, WorldConfig
from tripwire.sim.feed import GROUND_TRUTH_PATH, HttpSink, InProcessSink, SimFeedError, feed
from tripwire.store.buffer import Buffer
from tripwire.store.workspace import init_workspace

CONFIG = WorldConfig(seed=9, users=150, days=2)


def test_in_process_feed_stores_every_event_once_and_writes_ground_truth(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    days: list[str] = []
    result = feed(
        CONFIG, InProcessSink(ws), ws, batch_size=1000, on_day=lambda d, n: days.append(d)
    )
    assert result.events > 2000 and result.stored == result.events and result.rejected == 0
    assert set(result.by_source) == {"app", "order-ledger", "deploy-bot"}
    assert days == ["2026-11-02", "2026-11-03"]
    truth = GroundTruth.read(ws.data_dir / GROUND_TRUTH_PATH)
    assert truth.seed == 9
    with Buffer.for_workspace(ws) as buffer:
        rows = buffer.read_after(0, result.events + 10)
    assert len(rows) == result.events
    envelope = rows[0].envelope()
    assert envelope["source"] in {"app", "order-ledger", "deploy-bot"}
    # a backfill keeps the simulated times (no clock-skew shift to the upload time)
    assert envelope["timestamp"].startswith("2026-11-0")
    again = feed(CONFIG, InProcessSink(ws), ws)
    assert again.stored == 0 and again.duplicates == again.events


def test_http_feed_posts_batches_under_the_limit_with_each_sources_key(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    seen: list[tuple[str, int, int]] = []
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 2:
            return httpx.Response(429, headers={"Retry-After": "0"})
        body = request.content
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        batch = json.loads(body)["batch"]
        user = request.headers["authorization"]
        assert user.startswith("Basic ")
        seen.append((user, len(body), len(batch)))
        assert all("sentAt" not in m or m["sentAt"] is None for m in batch)
        return httpx.Response(
            200, json={"success": True, "stored": len(batch), "duplicates": 0, "rejected": []}
        )

    client = httpx.Client(transport=httpx.MockTransport(handler))
    keys = {"app": "k-app", "order-ledger": "k-ledger", "deploy-bot": "k-deploy"}
    result = feed(CONFIG, HttpSink("http://test", keys, client=client), ws)
    assert result.stored == result.events
    assert sum(n for _, _, n in seen) == result.events
    assert all(size <= MAX_BATCH_BYTES for _, size, _ in seen)
    assert len({auth for auth, _, _ in seen}) == 3


def test_http_feed_without_a_key_for_a_source_says_which(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json={})))
    with pytest.raises(SimFeedError, match="no write key for source"):
        feed(CONFIG, HttpSink("http://test", {"app": "k"}, client=client), ws)


def test_http_feed_reports_a_refusal(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    client = httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(401, json={"message": "bad key"}))
    )
    with pytest.raises(SimFeedError, match="401"):
        feed(CONFIG, HttpSink("http://test", {"*": "k"}, client=client), ws)


def test_http_feed_into_the_real_capture_app_lands_every_event_with_its_source(
    tmp_path: Path,
) -> None:
    from fastapi.testclient import TestClient

    from tripwire.ingest.app import create_app
    from tripwire.store.keys import KeyStore

    ws = init_workspace(tmp_path / "ws")
    with KeyStore.for_workspace(ws) as store:
        keys = {
            source: store.create(source).secret for source in ("app", "order-ledger", "deploy-bot")
        }
    with TestClient(create_app(ws)) as client:
        result = feed(CONFIG, HttpSink(str(client.base_url), keys, client=client), ws)
    assert result.rejected == 0 and result.stored == result.events
    with Buffer.for_workspace(ws) as buffer:
        rows = [row.envelope() for row in buffer.read_after(0, result.events + 10)]
    assert len(rows) == result.events
    sources = {row["source"] for row in rows if row["event"] == "Ledger Order Recorded"}
    assert sources == {"order-ledger"}
    assert min(row["timestamp"] for row in rows).startswith("2026-11-02")
