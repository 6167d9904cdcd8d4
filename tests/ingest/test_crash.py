"""SIGKILL crash test: acknowledged means durable, and nothing is half-written.

A load generator posts batches to a ``tripwire serve`` subprocess from several threads;
the server is killed with SIGKILL at a random moment. After a restart:

- every messageId of every acknowledged (HTTP 200) batch is stored exactly once;
- each unacknowledged batch is stored entirely or not at all (one request = one
  transaction), and every stored payload is intact JSON;
- re-sending the unacknowledged batches (what an SDK does) leaves every messageId of every
  batch stored exactly once.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tripwire.store.buffer import Buffer
from tripwire.store.keys import KeyStore
from tripwire.store.workspace import init_workspace

BATCH = 50
THREADS = 4


def _start(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start `tripwire serve --port 0` and read the bound port from its log."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tripwire.cli.main",
            "serve",
            "--port",
            "0",
            "--workspace",
            str(root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    lines = []
    while time.monotonic() < deadline:
        line = process.stderr.readline().decode()
        lines.append(line)
        match = re.search(r"running on http://127\.0\.0\.1:(\d+)", line, re.IGNORECASE)
        if match:
            threading.Thread(target=process.stderr.read, daemon=True).start()  # drain
            return process, f"http://127.0.0.1:{match.group(1)}"
        if process.poll() is not None:
            break
    process.kill()
    raise RuntimeError("server did not start:\n" + "".join(lines))


def _load(
    url: str, key: str, thread: int, acked: list, unacked: list, stop: threading.Event
) -> None:
    with httpx.Client(base_url=url, timeout=10, auth=(key, "")) as client:
        number = 0
        while not stop.is_set():
            ids = [f"t{thread}-b{number}-e{i}" for i in range(BATCH)]
            number += 1
            batch = [
                {
                    "type": "track",
                    "event": "Load",
                    "userId": f"u{i}",
                    "messageId": mid,
                    "properties": {"i": i, "pad": "x" * 100},
                }
                for i, mid in enumerate(ids)
            ]
            try:
                response = client.post("/v1/batch", json={"batch": batch})
            except httpx.HTTPError:
                unacked.append(ids)
                return
            (acked if response.status_code == 200 else unacked).append(ids)


def _stored_counts(buffer_path: Path) -> dict[str, int]:
    """messageId → how many times the buffer holds it (every payload must decode)."""
    counts: dict[str, int] = {}
    with Buffer(buffer_path) as buffer:
        for row in buffer.read_after(0, 10**9):
            assert row.envelope()["messageId"] == row.message_id
            counts[row.message_id] = counts.get(row.message_id, 0) + 1
    return counts


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_event_and_half_writes_nothing(tmp_path):
    workspace = init_workspace(tmp_path / "ws")
    with KeyStore.for_workspace(workspace) as keys:
        key = keys.create("app").secret
    rng = random.Random()
    process, url = _start(workspace.root)
    acked: list[list[str]] = []
    unacked: list[list[str]] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=_load, args=(url, key, t, acked, unacked, stop))
        for t in range(THREADS)
    ]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(acked) < 10 and time.monotonic() < deadline:  # let load build up
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.0))
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        if process.poll() is None:
            process.kill()
    assert len(acked) >= 10

    counts = _stored_counts(workspace.buffer_path)
    for ids in acked:
        assert all(counts.get(mid) == 1 for mid in ids), (
            "an acknowledged event is missing or doubled"
        )
    for ids in unacked:
        present = {counts.get(mid, 0) for mid in ids}
        assert present in ({0}, {1}), "an unacknowledged batch was half-written"

    # The SDK's retry after the restart: every batch ends up stored exactly once.
    process, url = _start(workspace.root)
    try:
        with httpx.Client(base_url=url, timeout=30, auth=(key, "")) as client:
            for ids in unacked + acked[:3]:
                batch = [
                    {"type": "track", "event": "Load", "userId": "u", "messageId": m} for m in ids
                ]
                assert client.post("/v1/batch", json={"batch": batch}).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    counts = _stored_counts(workspace.buffer_path)
    expected = {mid for ids in acked + unacked for mid in ids}
    assert set(counts) == expected
    assert set(counts.values()) == {1}
