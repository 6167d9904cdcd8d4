"""Fixtures shared across test packages: the demo's own world, in a lake, built once."""

from __future__ import annotations

import pytest

from tripwire.cli.demo import demo_world_config
from tripwire.metrics.catalog import install_catalog
from tripwire.sim.feed import write_world_to_lake
from tripwire.sim.world import World
from tripwire.store.workspace import Workspace, init_workspace


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A workspace whose lake holds every event of the demo's world and its ground truth.

    Events go straight into the lake, received when sent (the capture path and the archiver
    are tested on their own); tests using it share the ``demo-world`` xdist group so that
    one worker builds it once.
    """
    ws = init_workspace(tmp_path_factory.mktemp("demo-world") / "ws")
    install_catalog(ws)
    world = World(demo_world_config())  # seed 7, 10,000 users, 14 days: ~1.1 M events
    write_world_to_lake(world, ws)
    return ws
