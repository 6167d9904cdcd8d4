"""Feeding a simulated world into a workspace: in process or over HTTP (or, for tests and
benchmarks, straight into the lake: :func:`write_world_to_lake`).

Both paths send the same raw Segment messages per source, in time order, and write the
world's ground truth to ``<data dir>/sim/ground_truth.json``.

- In process: through :func:`tripwire.api.open` (one client per source, so each event is
  stamped with its source), which validates like the capture API and group-commits to the
  workspace's durable buffer. The archiver then moves it to the lake.
- HTTP: ``POST <url>/v1/batch`` with the source's write key as HTTP Basic user, bodies under
  Segment's 500 KB limit, retrying 408/429/5xx and honouring ``Retry-After``.

The world is a historical backfill, so messages are sent without ``sentAt``: with it, the
server's clock-skew correction (``receivedAt − (sentAt − timestamp)``) would move every
event to the time of the upload (Segment gives the same advice for historical imports).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson

from tripwire.api import Tripwire
from tripwire.api import open as open_workspace_client
from tripwire.events.envelope import MAX_BATCH_BYTES
from tripwire.sim.config import WorldConfig
from tripwire.sim.world import World
from tripwire.store.lake import write_events
from tripwire.store.workspace import Workspace

#: Where the ground truth lives inside a workspace's data folder.
GROUND_TRUTH_PATH = Path("sim") / "ground_truth.json"
#: Leave room for the JSON wrapper (``{"batch": [...]}``) under Segment's batch limit.
HTTP_BODY_LIMIT = MAX_BATCH_BYTES - 4 * 1024
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class SimFeedError(RuntimeError):
    """The destination refused the world's events (the message says which and why)."""


@dataclass(frozen=True)
class SinkTotals:
    stored: int
    duplicates: int
    rejected: int


class Sink(Protocol):
    """Where batches go: ``send`` may return before the batch is durable; ``close`` waits."""

    def send(self, source: str, messages: list[dict[str, Any]]) -> None: ...

    def close(self) -> SinkTotals: ...


class InProcessSink:
    """Send through the in-process API (:func:`tripwire.api.open`), one client per source.

    ``track_many`` validates like the capture API and queues; the clients' background
    threads group-commit to the durable buffer while the world keeps simulating, and
    :meth:`close` flushes (blocks until everything is durable).
    """

    def __init__(self, workspace: Workspace) -> None:
        self.root = workspace.root
        self.clients: dict[str, Tripwire] = {}

    def send(self, source: str, messages: list[dict[str, Any]]) -> None:
        client = self.clients.get(source)
        if client is None:
            client = self.clients[source] = open_workspace_client(self.root, source=source)
        result = client.track_many(messages)
        if result.rejected:
            first = result.rejected[0]
            raise SimFeedError(
                f"{len(result.rejected)} simulated {source} events rejected; first: index "
                f"{first.index}, field {first.field}: {first.reason}"
            )

    def close(self) -> SinkTotals:
        stored = duplicates = 0
        try:
            for client in self.clients.values():
                flushed = client.flush()
                stored += flushed.stored
                duplicates += flushed.duplicates
        finally:
            for client in self.clients.values():
                client.close()
        return SinkTotals(stored, duplicates, 0)


class HttpSink:
    """POST batches to a running ``tripwire serve`` (or any Segment-compatible endpoint)."""

    def __init__(
        self,
        url: str,
        write_keys: Mapping[str, str],
        *,
        timeout_s: float = 30.0,
        max_attempts: int = 8,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/") + "/v1/batch"
        self.write_keys = dict(write_keys)
        self.max_attempts = max_attempts
        self.client = client or httpx.Client(timeout=timeout_s)
        self._totals = SinkTotals(0, 0, 0)

    def _key(self, source: str) -> str:
        key = self.write_keys.get(source) or self.write_keys.get("*")
        if key is None:
            raise SimFeedError(
                f"no write key for source {source!r}; pass --write-key {source}=KEY (or one KEY for all)"
            )
        return key

    def send(self, source: str, messages: list[dict[str, Any]]) -> None:
        key = self._key(source)
        stored = duplicates = rejected = 0
        body: list[bytes] = []
        size = 0
        for message in messages:
            encoded = orjson.dumps(message)
            if body and size + len(encoded) + 1 > HTTP_BODY_LIMIT:
                s, d, r = self._post(key, body)
                stored, duplicates, rejected = stored + s, duplicates + d, rejected + r
                body, size = [], 0
            body.append(encoded)
            size += len(encoded) + 1
        if body:
            s, d, r = self._post(key, body)
            stored, duplicates, rejected = stored + s, duplicates + d, rejected + r
        self._totals = SinkTotals(
            self._totals.stored + stored,
            self._totals.duplicates + duplicates,
            self._totals.rejected + rejected,
        )

    def _post(self, key: str, encoded: list[bytes]) -> tuple[int, int, int]:
        payload = b'{"batch":[' + b",".join(encoded) + b"]}"
        delay = 0.2
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self.client.post(
                    self.url,
                    content=payload,
                    auth=(key, ""),
                    headers={"Content-Type": "application/json"},
                )
            except httpx.TransportError as error:
                if attempt == self.max_attempts:
                    raise SimFeedError(f"POST {self.url} failed: {error}") from error
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if response.status_code == 200:
                data = response.json() if response.content else {}
                rejected = len(data.get("rejected", []) or [])
                duplicates = int(data.get("duplicates", 0) or 0)
                stored = int(data.get("stored", len(encoded) - rejected - duplicates))
                return stored, duplicates, rejected
            if response.status_code in RETRY_STATUSES and attempt < self.max_attempts:
                retry_after = response.headers.get("Retry-After")
                time.sleep(float(retry_after) if retry_after and retry_after.isdigit() else delay)
                delay = min(delay * 2, 5.0)
                continue
            raise SimFeedError(
                f"POST {self.url} answered {response.status_code}: {response.text[:300]}"
            )
        raise SimFeedError(f"POST {self.url}: gave up after {self.max_attempts} attempts")

    def close(self) -> SinkTotals:
        self.client.close()
        return self._totals


@dataclass(frozen=True)
class FeedResult:
    """What a feed sent."""

    events: int
    stored: int
    duplicates: int
    rejected: int
    by_source: dict[str, int]
    seconds: float
    ground_truth: Path
    days: list[str] = field(default_factory=list)


def feed(
    config: WorldConfig,
    sink: Sink,
    workspace: Workspace,
    *,
    batch_size: int = 20_000,
    on_day: Callable[[str, int], None] | None = None,
) -> FeedResult:
    """Simulate ``config`` and send every batch to ``sink``; write the ground truth.

    ``on_day(day, events)`` is called after each simulated day (progress bars).
    """
    started = time.perf_counter()
    world = World(config, sent_at=False)
    truth_path = world.ground_truth().write(ground_truth_path(workspace))
    counts: Counter[str] = Counter()
    days: list[str] = []
    closed = False
    try:
        for day, ordered in world.days():
            for batch in world.batches_of(ordered, batch_size, by_hour=False):
                sink.send(batch.source, batch.messages)
                counts[batch.source] += len(batch)
            days.append(day.date().isoformat())
            if on_day is not None:
                on_day(days[-1], len(ordered))
        closed = True
        totals = sink.close()
    finally:
        if not closed:
            sink.close()
    return FeedResult(
        events=sum(counts.values()),
        stored=totals.stored,
        duplicates=totals.duplicates,
        rejected=totals.rejected,
        by_source=dict(counts),
        seconds=time.perf_counter() - started,
        ground_truth=truth_path,
        days=days,
    )


def write_world_to_lake(
    world: World,
    workspace: Workspace,
    *,
    keep: Callable[[dict[str, Any]], bool] | None = None,
    rows_per_write: int = 250_000,
) -> int:
    """Write every message of ``world`` straight into the workspace's lake, received when
    sent, and its ground truth; returns the events written.

    Bypasses the capture path and the archiver (tested on their own) for tests and
    benchmarks that need a big world's lake fast. ``keep`` drops the messages it returns
    False for (e.g. to plant a data loss the world does not have).
    """
    written = 0
    pending: list[dict[str, Any]] = []
    for part in world.batches(100_000):
        pending += [
            {**m, "source": part.source, "receivedAt": m.get("sentAt") or m["timestamp"]}
            for m in part.messages
            if keep is None or keep(m)
        ]
        if len(pending) >= rows_per_write:
            write_events(workspace.lake_dir, pending)
            written, pending = written + len(pending), []
    if pending:
        write_events(workspace.lake_dir, pending)
        written += len(pending)
    world.ground_truth().write(ground_truth_path(workspace))
    return written


def ground_truth_path(workspace: Workspace) -> Path:
    """Where :func:`feed` wrote the workspace's ground truth."""
    return workspace.data_dir / GROUND_TRUTH_PATH
