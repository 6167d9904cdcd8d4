"""Generated multi-dimensional root-cause cases with known answers.

Follows the construction of the public benchmarks for this task (Squeeze's and RiskLoc's
semi-synthetic datasets): leaves are combinations of dimension values with forecast ``f``
(lognormal volumes), observed ``v = f`` plus noise, and 1–3 injected root causes at depth
1–3 whose leaves all move by a common ratio with per-leaf jitter (the ripple effect). The
injected causes never overlap. :func:`generate_ratio_case` does the same for a derived ratio
measure (conversion = orders / sessions, Squeeze's "derived measure" setting) with a
traffic-mix decoy. Used by the tests (precision/recall/F1) and ``bench/rca.py``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LocalizationCase:
    columns: dict[str, list[str]]
    observed: np.ndarray
    expected: np.ndarray
    causes: tuple[dict[str, str], ...]


def generate_case(
    rng: np.random.Generator,
    *,
    cardinalities: tuple[int, ...] = (8, 6, 5, 4, 4),
    n_causes: int = 1,
    depth: int = 1,
    magnitude: tuple[float, float] = (0.3, 0.8),
    noise: float = 0.05,
    max_leaves: int | None = None,
    direction: int = -1,
) -> LocalizationCase:
    """One case: ``n_causes`` disjoint causes at ``depth``, relative ``magnitude`` range.

    ``noise`` is the relative standard deviation of the forecast error on every leaf
    (on top of Poisson noise); ``direction`` −1 for drops, +1 for spikes.
    """
    names = [f"d{i}" for i in range(len(cardinalities))]
    grid = np.array(list(itertools.product(*[range(c) for c in cardinalities])), dtype=np.int64)
    if max_leaves is not None and grid.shape[0] > max_leaves:
        grid = grid[rng.choice(grid.shape[0], size=max_leaves, replace=False)]
    expected = np.exp(rng.normal(3.0, 1.2, size=grid.shape[0])) * 10
    observed = rng.poisson(expected * np.exp(rng.normal(0.0, noise, size=grid.shape[0]))).astype(
        np.float64
    )
    causes: list[dict[str, str]] = []
    taken = np.zeros(grid.shape[0], dtype=bool)
    attempts = 0
    while len(causes) < n_causes and attempts < 200:
        attempts += 1
        dims = sorted(rng.choice(len(cardinalities), size=depth, replace=False))
        values = [int(rng.integers(cardinalities[d])) for d in dims]
        mask = np.all(grid[:, dims] == values, axis=1)
        if not mask.any() or (taken & mask).any():
            continue
        # Causes must be disjoint *and* not nested in each other's ancestors.
        taken |= mask
        ratio = 1.0 + direction * rng.uniform(*magnitude)
        jitter = np.exp(rng.normal(0.0, 0.05, size=int(mask.sum())))
        observed[mask] = rng.poisson(np.maximum(expected[mask] * ratio * jitter, 0.0))
        causes.append({names[d]: f"v{v}" for d, v in zip(dims, values, strict=True)})
    columns = {name: [f"v{code}" for code in grid[:, i]] for i, name in enumerate(names)}
    return LocalizationCase(columns, observed, expected, tuple(causes))


@dataclass(frozen=True)
class RatioCase:
    """A derived (ratio) measure per leaf: numerator/denominator now and in the baseline."""

    columns: dict[str, list[str]]
    numerator: np.ndarray
    denominator: np.ndarray
    baseline_numerator: np.ndarray
    baseline_denominator: np.ndarray
    causes: tuple[dict[str, str], ...]


def generate_ratio_case(
    rng: np.random.Generator,
    *,
    cardinalities: tuple[int, ...] = (8, 6, 5, 4, 4),
    n_causes: int = 1,
    depth: int = 1,
    magnitude: tuple[float, float] = (0.3, 0.8),
    rate: float = 0.2,
    volume: float = 3.0,
    mix_shift: bool = True,
    direction: int = -1,
) -> RatioCase:
    """A conversion-like ratio (orders / sessions) with ``n_causes`` injected rate changes.

    Sessions per leaf are lognormal (log-mean ``volume`` + log 10); each leaf has its own
    baseline rate (beta around ``rate``, so leaves differ the way real segments do); the
    baseline is 7 windows. Injected causes multiply the rate of their leaves by
    ``1 + direction·U(magnitude)`` (the ripple effect). With ``mix_shift`` one depth-1
    segment that is *not* a cause doubles its traffic at an unchanged rate: a traffic-mix
    shift that a localizer of ratios must not blame.
    """
    names = [f"d{i}" for i in range(len(cardinalities))]
    grid = np.array(list(itertools.product(*[range(c) for c in cardinalities])), dtype=np.int64)
    size = grid.shape[0]
    sessions = np.exp(rng.normal(volume, 1.2, size=size)) * 10
    leaf_rate = rng.beta(rate * 40, (1 - rate) * 40, size=size)
    base_den = rng.poisson(sessions * 7).astype(np.float64)
    base_num = rng.binomial(base_den.astype(np.int64), leaf_rate).astype(np.float64)
    traffic = np.ones(size)
    current_rate = np.array(leaf_rate, dtype=np.float64)
    causes: list[dict[str, str]] = []
    taken = np.zeros(size, dtype=bool)
    attempts = 0
    while len(causes) < n_causes and attempts < 200:
        attempts += 1
        dims = sorted(rng.choice(len(cardinalities), size=depth, replace=False))
        values = [int(rng.integers(cardinalities[d])) for d in dims]
        mask = np.all(grid[:, dims] == values, axis=1)
        if not mask.any() or (taken & mask).any():
            continue
        taken |= mask
        ratio = 1.0 + direction * rng.uniform(*magnitude)
        current_rate[mask] = np.clip(current_rate[mask] * ratio, 0.0, 1.0)
        causes.append({names[d]: f"v{v}" for d, v in zip(dims, values, strict=True)})
    if mix_shift:
        d = int(rng.integers(len(cardinalities)))
        traffic[grid[:, d] == int(rng.integers(cardinalities[d]))] = 2.0
    den = rng.poisson(sessions * traffic).astype(np.float64)
    num = rng.binomial(den.astype(np.int64), current_rate).astype(np.float64)
    columns = {name: [f"v{code}" for code in grid[:, i]] for i, name in enumerate(names)}
    return RatioCase(columns, num, den, base_num, base_den, tuple(causes))


def f1_score(
    found: list[dict[str, str]], truth: list[dict[str, str]]
) -> tuple[float, float, float]:
    """Element-level precision, recall and F1 (exact match of the condition sets)."""
    found_set = {frozenset(item.items()) for item in found}
    truth_set = {frozenset(item.items()) for item in truth}
    hits = len(found_set & truth_set)
    precision = hits / len(found_set) if found_set else (1.0 if not truth_set else 0.0)
    recall = hits / len(truth_set) if truth_set else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1
