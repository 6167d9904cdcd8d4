"""Shared fixtures: a small simulated workspace with its buffer and lake filled."""

from __future__ import annotations

from pathlib import Path

import pytest

from tripwire.ingest.archiver import Archiver
from tripwire.metrics.catalog import install_catalog
from tripwire.sim.config import WorldConfig
from tripwire.sim.feed import InProcessSink
from tripwire.sim.world import World
from tripwire.store.buffer import Buffer
from tripwire.store.workspace import Workspace, init_workspace

#: A 2-day world with all three incidents on the second day, 1,500 users at 1 session per
#: user-day and no per-stage turn latency events (~110k events): small enough to simulate,
#: ingest and archive within the test budget, busy enough for the retrieval-shard
#: incident (resolution 82% → 35% on product_search × retrieval-shard-3) to page.
SMALL_WORLD = WorldConfig(
    seed=3,
    users=1500,
    days=2,
    sessions_per_user_day=1.0,
    incident_days=(1, 1, 1),
    turn_latency_sampling=0.0,
)

MONITORS = """\
monitors:
  - name: resolution
    metric: resolution_rate
    segments: {dimensions: [properties.intent, properties.service], depth: 2, min_volume: 10}
    detector: {calibration: 1d, warmup: 6h}
    rules:
      - {name: resolution_down, severity: P2, detector: down}
      - {name: resolution_low, severity: P3, below: 0.5, for: 2m, min_volume: 1, scope: segments, resolve_after: 10m}
      - {name: resolution_all_resolved, severity: P4, above: 0.99, for: 2m, min_volume: 2, scope: aggregate, resolve_after: 5m}
"""


def fill_buffer(ws: Workspace, config: WorldConfig) -> None:
    """Send the world hour by hour (all sources of an hour before the next hour), so a
    lateness window of an hour covers every event, and write its ground truth."""
    world = World(config, sent_at=False)
    world.ground_truth().write(ws.data_dir / "sim" / "ground_truth.json")
    sink = InProcessSink(ws)
    try:
        for batch in world.batches(20_000):
            sink.send(batch.source, batch.messages)
    finally:
        sink.close()


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A workspace with SMALL_WORLD in its buffer and lake, the catalog and MONITORS."""
    root: Path = tmp_path_factory.mktemp("monitor-world")
    ws = init_workspace(root)
    install_catalog(ws)
    (ws.monitors_dir / "test.yaml").write_text(MONITORS)
    fill_buffer(ws, SMALL_WORLD)
    buffer = Buffer.for_workspace(ws)
    try:
        Archiver.for_workspace(ws, buffer).run()
    finally:
        buffer.close()
    return ws
