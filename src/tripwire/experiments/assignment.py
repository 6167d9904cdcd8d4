"""Deterministic assignment of units to arms: hashing, layers, holdouts, staged rollouts.

The algorithm is published so that any language reproduces it with its standard SHA-256
(test vectors in ``docs/assignment.md`` and ``tests/experiments/assignment_vectors.json``):

1. ``h = first 8 bytes of SHA-256(utf8(key))`` read as a big-endian unsigned 64-bit integer.
2. The high 32 bits give one position in [0, 1): ``(h >> 32) / 2**32``; the low 32 bits give
   a second, independent one: ``(h & 0xFFFFFFFF) / 2**32``.
3. Keys, for experiment salt ``s`` (default: the experiment name) and unit ``u``:
   - global holdout: key ``"holdout:" + holdout_salt + ":" + u``, high position < holdout share;
   - layer: key ``"layer:" + layer + ":" + u``, high position; the experiment owns
     ``[start, end)`` of its layer, so experiments in one layer never share a unit and
     different layers are independent;
   - experiment: key ``s + ":" + u``; the unit is enrolled when the high position < rollout
     share (raising the share keeps every unit already enrolled: stages 1% → 5% → 25% → 50%
     only add units), and its arm is the low position mapped through the cumulative arm
     weights (independent of the rollout position, so an arm never changes as rollout grows).

SHA-256 costs one C call per key (≈1 µs per assignment in CPython), is in every language's
standard library and has no weak bits for sequential ids.

References: Kohavi, Tang & Xu, *Trustworthy Online Controlled Experiments* (2020), ch. 4 and
14 (layers, holdouts, ramping); Tang et al., "Overlapping Experiment Infrastructure" (KDD 2010).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

NOT_ENROLLED = -1
_TWO_32 = float(2**32)
_sha256 = hashlib.sha256


def unit_hash(key: str) -> int:
    """First 8 bytes of SHA-256 of ``key`` as a big-endian unsigned 64-bit integer.

    >>> unit_hash("ranker_v2:user-1")
    8977640915012565696
    """
    return int.from_bytes(_sha256(key.encode("utf-8")).digest()[:8], "big")


def positions(key: str) -> tuple[float, float]:
    """The two independent positions in [0, 1) of ``key``: (high 32 bits, low 32 bits)."""
    h = unit_hash(key)
    return (h >> 32) / _TWO_32, (h & 0xFFFFFFFF) / _TWO_32


def unit_hashes(prefix: str, unit_ids: Sequence[str]) -> np.ndarray:
    """:func:`unit_hash` of ``prefix + unit_id`` for many units (uint64 array)."""
    raw = b"".join([_sha256(f"{prefix}{u}".encode()).digest()[:8] for u in unit_ids])
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64)


def positions_many(prefix: str, unit_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`positions` (two float64 arrays)."""
    h = unit_hashes(prefix, unit_ids)
    return (h >> np.uint64(32)).astype(np.float64) / _TWO_32, (h & np.uint64(0xFFFFFFFF)).astype(
        np.float64
    ) / _TWO_32


@dataclass(frozen=True)
class Allocation:
    """How one experiment allocates units. Shares are fractions in [0, 1]."""

    experiment: str
    arms: tuple[str, ...]
    weights: tuple[float, ...]
    salt: str = ""
    rollout: float = 1.0
    layer: str | None = None
    layer_range: tuple[float, float] = (0.0, 1.0)
    holdout_share: float = 0.0
    holdout_salt: str = "global"
    killed: bool = False
    cumulative: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.arms) < 2 or len(self.arms) != len(self.weights):
            raise ValueError(f"{self.experiment}: need ≥ 2 arms with one weight each")
        if any(w <= 0 for w in self.weights):
            raise ValueError(f"{self.experiment}: arm weights must be positive, got {self.weights}")
        for name, share in (("rollout", self.rollout), ("holdout_share", self.holdout_share)):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{self.experiment}: {name} must be in [0, 1], got {share}")
        start, end = self.layer_range
        if not 0.0 <= start < end <= 1.0:
            raise ValueError(f"{self.experiment}: layer_range must satisfy 0 ≤ start < end ≤ 1")
        total = float(sum(self.weights))
        object.__setattr__(self, "cumulative", tuple(np.cumsum(self.weights) / total))

    @property
    def experiment_salt(self) -> str:
        return self.salt or self.experiment


@dataclass(frozen=True)
class Assignment:
    """Where one unit landed and why (``arm`` is None when not enrolled)."""

    experiment: str
    unit_id: str
    arm: str | None
    reason: str  # assigned | killed | holdout | outside_layer_range | outside_rollout


def _arm_index(position: float, cumulative: tuple[float, ...]) -> int:
    for index, edge in enumerate(cumulative):
        if position < edge:
            return index
    return len(cumulative) - 1


def assign(allocation: Allocation, unit_id: str) -> Assignment:
    """Assign one unit (the rules in the module docstring, checked in that order).

    >>> ab = Allocation("ranker_v2", ("control", "treatment"), (50, 50))
    >>> assign(ab, "user-1").arm
    'treatment'
    """
    unit = str(unit_id)

    def result(arm: str | None, reason: str) -> Assignment:
        return Assignment(allocation.experiment, unit, arm, reason)

    if allocation.killed:
        return result(None, "killed")
    holdout = f"holdout:{allocation.holdout_salt}:{unit}"
    if allocation.holdout_share and positions(holdout)[0] < allocation.holdout_share:
        return result(None, "holdout")
    if allocation.layer is not None:
        start, end = allocation.layer_range
        if not start <= positions(f"layer:{allocation.layer}:{unit}")[0] < end:
            return result(None, "outside_layer_range")
    rollout_position, arm_position = positions(f"{allocation.experiment_salt}:{unit}")
    if rollout_position >= allocation.rollout:
        return result(None, "outside_rollout")
    return result(allocation.arms[_arm_index(arm_position, allocation.cumulative)], "assigned")


def assign_many(allocation: Allocation, unit_ids: Sequence[str]) -> np.ndarray:
    """Arm index per unit (``NOT_ENROLLED`` = -1 when not enrolled); same rules as :func:`assign`."""
    n = len(unit_ids)
    if allocation.killed or n == 0:
        return np.full(n, NOT_ENROLLED, dtype=np.int64)
    rollout_position, arm_position = positions_many(f"{allocation.experiment_salt}:", unit_ids)
    enrolled = rollout_position < allocation.rollout
    if allocation.holdout_share:
        held, _ = positions_many(f"holdout:{allocation.holdout_salt}:", unit_ids)
        enrolled &= held >= allocation.holdout_share
    if allocation.layer is not None:
        start, end = allocation.layer_range
        layer_position, _ = positions_many(f"layer:{allocation.layer}:", unit_ids)
        enrolled &= (layer_position >= start) & (layer_position < end)
    edges = np.asarray(allocation.cumulative[:-1])
    arms = np.searchsorted(edges, arm_position, side="right").astype(np.int64)
    return np.where(enrolled, arms, NOT_ENROLLED)
