"""Shared small worlds for the sim tests (module-scoped: built once per xdist worker)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from tripwire.sim import World, WorldConfig

#: 14 days so that the default incident schedule and both experiments are in range.
SMALL = WorldConfig(seed=11, users=1500, days=14)


@pytest.fixture(scope="session")
def small_world() -> World:
    return World(SMALL)


@pytest.fixture(scope="session")
def small_messages(small_world: World) -> list[dict[str, Any]]:
    return list(small_world.messages())


@pytest.fixture(scope="session")
def by_event(small_messages: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in small_messages:
        name = message["event"] if message["type"] == "track" else "$" + message["type"]
        groups[name].append(message)
    return groups
