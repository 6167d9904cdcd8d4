"""Assignment: published vectors, weights, stability, layers, holdouts and rollouts."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from tripwire.experiments.assignment import (
    NOT_ENROLLED,
    Allocation,
    assign,
    assign_many,
    positions,
    unit_hash,
    unit_hashes,
)

VECTORS = json.loads((Path(__file__).parent / "assignment_vectors.json").read_text())
UNITS = [f"user-{i}" for i in range(60_000)]


def _allocation(spec: dict) -> Allocation:
    return Allocation(
        spec["experiment"],
        tuple(spec["arms"]),
        tuple(spec["weights"]),
        rollout=spec.get("rollout", 1.0),
        layer=spec.get("layer"),
        layer_range=tuple(spec.get("layer_range", (0.0, 1.0))),
        holdout_share=spec.get("holdout_share", 0.0),
    )


@pytest.mark.parametrize("vector", VECTORS["hashes"], ids=lambda v: v["key"])
def test_hash_vectors_match_an_independent_sha256(vector):
    independent = int(hashlib.sha256(vector["key"].encode()).hexdigest()[:16], 16)
    assert unit_hash(vector["key"]) == independent == int(vector["hash"])
    assert positions(vector["key"]) == (vector["high"], vector["low"])


@pytest.mark.parametrize(
    "case", VECTORS["assignments"], ids=lambda c: c["allocation"]["experiment"]
)
def test_assignment_vectors(case):
    allocation = _allocation(case["allocation"])
    for unit, (arm, reason) in case["units"].items():
        got = assign(allocation, unit)
        assert (got.arm, got.reason) == (arm, reason)


def test_vectorised_equals_scalar():
    allocation = Allocation(
        "x",
        ("a", "b", "c"),
        (2, 1, 1),
        rollout=0.6,
        layer="L",
        layer_range=(0.2, 0.9),
        holdout_share=0.1,
    )
    many = assign_many(allocation, UNITS[:5000])
    for unit, index in zip(UNITS[:5000], many, strict=True):
        arm = assign(allocation, unit).arm
        assert arm == (None if index == NOT_ENROLLED else allocation.arms[index])


def test_vectorised_sha256_equals_hashlib_on_awkward_keys():
    """The NumPy SHA-256 of batches: empty, non-ASCII, one-block edge (55/56 bytes), long
    keys (hashlib fallback), non-string ids, and more rows than one chunk."""
    prefix = "ranker_v2:"  # 10 bytes: units of 45 bytes fill one block exactly, 46 do not
    awkward = ["", "ü" * 20, "日本語-ユーザー", "x" * 45, "x" * 46, "y" * 200, "a'b\\c"]
    units = [*awkward, *(f"user-{i}" for i in range(40_000)), *awkward]
    got = unit_hashes(prefix, units)
    expected = [int(hashlib.sha256(f"{prefix}{u}".encode()).hexdigest()[:16], 16) for u in units]
    assert got.dtype == np.uint64 and [int(h) for h in got] == expected
    numbers = list(range(1000))
    assert [int(h) for h in unit_hashes("e:", numbers)] == [unit_hash(f"e:{i}") for i in numbers]
    assert unit_hashes("e:", []).size == 0


def test_split_matches_weights_by_chi_square():
    allocation = Allocation("weights", ("control", "a", "b"), (50, 30, 20))
    counts = np.bincount(assign_many(allocation, UNITS), minlength=3)
    expected = np.array([0.5, 0.3, 0.2]) * len(UNITS)
    assert stats.chisquare(counts, expected).pvalue > 0.001


def test_stable_across_processes():
    code = (
        "from tripwire.experiments.assignment import Allocation, assign;"
        "a = Allocation('ranker_v2', ('control', 'treatment'), (50, 50));"
        "print(','.join(assign(a, f'user-{i}').arm for i in range(200)))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    allocation = Allocation("ranker_v2", ("control", "treatment"), (50, 50))
    here = ",".join(assign(allocation, f"user-{i}").arm for i in range(200))
    assert other.stdout.strip() == here


def test_layers_are_exclusive_inside_and_independent_across():
    first = Allocation("e1", ("c", "t"), (1, 1), layer="home", layer_range=(0.0, 0.5))
    second = Allocation("e2", ("c", "t"), (1, 1), layer="home", layer_range=(0.5, 1.0))
    other_layer = Allocation("e3", ("c", "t"), (1, 1), layer="checkout")
    a, b, c = (assign_many(x, UNITS) for x in (first, second, other_layer))
    assert not np.any((a != NOT_ENROLLED) & (b != NOT_ENROLLED))
    assert abs(np.mean(a != NOT_ENROLLED) - 0.5) < 0.01
    enrolled = a != NOT_ENROLLED
    table = np.array([[np.sum((a == i) & (c == j) & enrolled) for j in (0, 1)] for i in (0, 1)])
    assert stats.chi2_contingency(table).pvalue > 0.001


def test_rollout_stages_only_add_units_and_never_move_arms():
    previous = None
    for share in (0.01, 0.05, 0.25, 0.5, 1.0):
        arms = assign_many(Allocation("ramp", ("c", "t"), (1, 1), rollout=share), UNITS)
        assert abs(np.mean(arms != NOT_ENROLLED) - share) < 0.01
        if previous is not None:
            kept = previous != NOT_ENROLLED
            assert np.array_equal(arms[kept], previous[kept])
        previous = arms


def test_holdout_and_kill_switch():
    held = Allocation("h", ("c", "t"), (1, 1), holdout_share=0.1)
    share_held = np.mean(assign_many(held, UNITS) == NOT_ENROLLED)
    assert abs(share_held - 0.1) < 0.01
    reasons = {assign(held, u).reason for u in UNITS[:2000]}
    assert reasons == {"holdout", "assigned"}
    killed = Allocation("k", ("c", "t"), (1, 1), killed=True)
    assert assign(killed, "u").reason == "killed"
    assert np.all(assign_many(killed, UNITS[:10]) == NOT_ENROLLED)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arms": ("only",), "weights": (1,)}, "≥ 2 arms"),
        ({"arms": ("a", "b"), "weights": (1, 0)}, "positive"),
        ({"arms": ("a", "b"), "weights": (1, 1), "rollout": 1.5}, "rollout"),
        ({"arms": ("a", "b"), "weights": (1, 1), "layer_range": (0.6, 0.4)}, "layer_range"),
    ],
)
def test_bad_allocations_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Allocation("bad", **kwargs)
