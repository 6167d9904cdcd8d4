"""The synthetic product world: deterministic, seeded, with ground truth (docs/world.md).

>>> from tripwire.sim import World, WorldConfig
>>> truth = World(WorldConfig(seed=7, users=100, days=14)).ground_truth()
>>> [i.id for i in truth.incidents]
['payments-deploy', 'telemetry-outage', 'retrieval-shard']
"""

from tripwire.sim.config import DEFAULT_START, WorldConfig
from tripwire.sim.messages import APP, DEPLOY, LEDGER, SOURCES
from tripwire.sim.truth import EffectTruth, ExperimentTruth, GroundTruth, IncidentTruth
from tripwire.sim.world import Batch, World

__all__ = [
    "APP",
    "DEFAULT_START",
    "DEPLOY",
    "LEDGER",
    "SOURCES",
    "Batch",
    "EffectTruth",
    "ExperimentTruth",
    "GroundTruth",
    "IncidentTruth",
    "World",
    "WorldConfig",
]
