"""Switchback experiments: time blocks alternate between treatment and control.

When units interfere (a shared model, a marketplace, a cache), the whole system is switched
between arms over time. Time is cut into blocks of L periods; a balanced random schedule
assigns half of the blocks to treatment. Effects that linger after a switch (carryover of
m periods) are handled by dropping the first m periods of every block (a burn-in;
Bojinov, Simchi-Levi & Zhao 2023).

* **Analysis**: τ̂ = mean of kept treated periods − mean of kept control periods, with a
  Fisher randomisation test over the same block-level randomisation (Bojinov & Shephard
  2019): under the sharp null the outcomes are fixed and only the schedule is random, so
  p = (1 + #{r: |τ̂_r| ≥ |τ̂|}) / (1 + R) is exact whatever the autocorrelation of the
  metric. A confidence interval comes from inverting the test for constant effects τ₀
  (y − τ₀·W is the control outcome under H_τ₀).
* **Design**: for a metric with autocovariance γ(h) and B blocks of k kept periods, the
  randomisation variance of τ̂ under a balanced schedule is

      Var(τ̂) = (1/m²) [Σ_b C_bb − 1/(B − 1) Σ_{b≠b'} C_bb'],  C_bb' = Σ_{i∈b, j∈b'} γ(i − j),

  with m = Bk/2. Long blocks waste less data to burn-in but keep correlated noise
  together; :func:`choose_block_length` picks the L that minimises this variance using the
  sample autocovariance of the metric's history.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import linalg

Seed = int | np.random.Generator | None


@dataclass(frozen=True)
class SwitchbackDesign:
    """A schedule: ``assignment[t]`` is 1 (treatment) or 0 (control) for period t."""

    n_periods: int
    block_length: int
    burn_in: int
    block_assignment: tuple[int, ...]
    assignment: tuple[int, ...]

    @property
    def n_blocks(self) -> int:
        """Number of blocks (the last may be shorter than ``block_length``)."""
        return len(self.block_assignment)


@dataclass(frozen=True)
class BlockLengthChoice:
    """The chosen block length and the design variance of every candidate considered."""

    block_length: int
    burn_in: int
    variance: float
    candidates: tuple[int, ...]
    variances: tuple[float, ...]


@dataclass(frozen=True)
class SwitchbackResult:
    """Difference in means over kept periods with a randomisation-inference p-value and CI."""

    estimate: float
    p_value: float
    ci_lower: float
    ci_upper: float
    n_blocks: int
    n_treated_blocks: int
    n_kept_periods: int
    n_permutations: int
    alpha: float


def _blocks(n_periods: int, block_length: int) -> NDArray[np.intp]:
    return np.arange(n_periods, dtype=np.intp) // block_length


def _kept(n_periods: int, block_length: int, burn_in: int) -> NDArray[np.bool_]:
    return (np.arange(n_periods) % block_length) >= burn_in


def _check_lengths(n_periods: int, block_length: int, burn_in: int) -> None:
    if n_periods < 2:
        raise ValueError(f"n_periods must be >= 2, got {n_periods!r}")
    if not 1 <= block_length <= n_periods // 2:
        raise ValueError(
            f"block_length must be between 1 and n_periods // 2 = {n_periods // 2}, "
            f"got {block_length!r}"
        )
    if not 0 <= burn_in < block_length:
        raise ValueError(f"burn_in must be in [0, block_length), got {burn_in!r}")


def autocovariance(series: ArrayLike) -> NDArray[np.float64]:
    """Biased sample autocovariance γ̂(h) = (1/n) Σ_t (y_t − ȳ)(y_{t+h} − ȳ), h = 0…n−1.

    The 1/n (biased) form keeps every Toeplitz matrix built from it positive semi-definite
    (Brockwell & Davis 1991). Computed by FFT in O(n log n).

    >>> np.round(autocovariance([1.0, 2.0, 3.0, 4.0]), 4).tolist()
    [1.25, 0.3125, -0.375, -0.5625]
    """
    y = np.asarray(series, dtype=np.float64)
    if y.ndim != 1 or y.size < 2 or not np.all(np.isfinite(y)):
        raise ValueError("series must be a finite 1-D array with at least 2 points")
    d = y - y.mean()
    n = d.size
    full = np.fft.irfft(np.abs(np.fft.rfft(d, 2 * n)) ** 2, 2 * n)[:n]
    return np.asarray(full / n, dtype=np.float64)


def estimator_variance(
    autocov: ArrayLike, n_periods: int, block_length: int, burn_in: int = 0
) -> float:
    """Randomisation variance of τ̂ under a balanced schedule of full blocks (see module doc).

    ``autocov[h]`` is γ(h); lags beyond its length count as 0. A trailing partial block is
    ignored (an approximation used only to compare candidate block lengths).
    """
    _check_lengths(n_periods, block_length, burn_in)
    gamma = np.asarray(autocov, dtype=np.float64)
    n_blocks = n_periods // block_length
    if n_blocks < 2:
        raise ValueError("need at least 2 full blocks")
    used = n_blocks * block_length
    g = np.zeros(used)
    g[: min(used, gamma.size)] = gamma[:used]
    cov = linalg.toeplitz(g)
    keep = _kept(used, block_length, burn_in)
    member = np.zeros((used, n_blocks))
    member[np.arange(used), _blocks(used, block_length)] = 1.0
    member[~keep] = 0.0
    c = member.T @ cov @ member
    diag = float(np.trace(c))
    off = float(c.sum()) - diag
    m = n_blocks * (block_length - burn_in) / 2.0
    return max((diag - off / (n_blocks - 1)) / (m * m), 0.0)


def choose_block_length(
    history: ArrayLike,
    n_periods: int,
    carryover_periods: int = 0,
    *,
    min_blocks: int = 10,
    candidates: Sequence[int] | None = None,
) -> BlockLengthChoice:
    """Pick the block length minimising the design variance of τ̂ for this metric.

    ``history`` is the metric per period before the experiment (its sample autocovariance
    stands in for γ); ``carryover_periods`` m become the burn-in, so only L > m qualify;
    at least ``min_blocks`` blocks are kept so the randomisation test has resolution
    (C(10, 5) = 252 schedules). Ties go to the shorter block. Bojinov, Simchi-Levi & Zhao
    (2023) for the carryover trade-off.
    """
    if carryover_periods < 0:
        raise ValueError(f"carryover_periods must be >= 0, got {carryover_periods!r}")
    if min_blocks < 2:
        raise ValueError(f"min_blocks must be >= 2, got {min_blocks!r}")
    gamma = autocovariance(history)
    longest = n_periods // min_blocks
    if candidates is None:
        cands = list(range(carryover_periods + 1, longest + 1))
    else:
        cands = sorted({int(c) for c in candidates if carryover_periods < int(c) <= longest})
    if not cands:
        raise ValueError(
            f"no block length fits: need carryover ({carryover_periods}) < L <= "
            f"n_periods // min_blocks ({longest}); run longer or accept fewer blocks"
        )
    variances = [estimator_variance(gamma, n_periods, c, carryover_periods) for c in cands]
    best = int(np.argmin(variances))
    return BlockLengthChoice(
        block_length=cands[best],
        burn_in=carryover_periods,
        variance=variances[best],
        candidates=tuple(cands),
        variances=tuple(variances),
    )


def switchback_design(
    n_periods: int, block_length: int, *, burn_in: int = 0, seed: Seed = None
) -> SwitchbackDesign:
    """Balanced random schedule: ⌊B/2⌋ or ⌈B/2⌉ of the B blocks treated, uniformly at random.

    Blocks are consecutive runs of ``block_length`` periods (the last may be shorter); the
    schedule is a complete randomisation of block labels, the design that
    :func:`switchback_test` re-draws (Bojinov & Shephard 2019; Bojinov, Simchi-Levi & Zhao
    2023).

    >>> d = switchback_design(12, 3, seed=1)
    >>> d.n_blocks, sum(d.block_assignment)
    (4, 2)
    """
    _check_lengths(n_periods, block_length, burn_in)
    rng = np.random.default_rng(seed)
    n_blocks = math.ceil(n_periods / block_length)
    labels = np.zeros(n_blocks, dtype=np.int64)
    labels[: n_blocks // 2 + (int(rng.integers(2)) if n_blocks % 2 else 0)] = 1
    labels = rng.permutation(labels)
    per_period = labels[_blocks(n_periods, block_length)]
    return SwitchbackDesign(
        n_periods=n_periods,
        block_length=block_length,
        burn_in=burn_in,
        block_assignment=tuple(int(x) for x in labels),
        assignment=tuple(int(x) for x in per_period),
    )


def plan_switchback(
    history: ArrayLike,
    n_periods: int,
    carryover_periods: int = 0,
    *,
    min_blocks: int = 10,
    seed: Seed = None,
) -> SwitchbackDesign:
    """:func:`choose_block_length` then :func:`switchback_design` with the carryover burn-in."""
    choice = choose_block_length(history, n_periods, carryover_periods, min_blocks=min_blocks)
    return switchback_design(n_periods, choice.block_length, burn_in=choice.burn_in, seed=seed)


def _diff_in_means(
    labels: NDArray[np.float64], sums: NDArray[np.float64], counts: NDArray[np.float64]
) -> NDArray[np.float64]:
    """τ̂ for each row of block labels (R × B) from block sums and counts."""
    t_sum = labels @ sums
    t_n = labels @ counts
    c_sum = sums.sum() - t_sum
    c_n = counts.sum() - t_n
    return np.asarray(t_sum / t_n - c_sum / c_n, dtype=np.float64)


def switchback_test(
    outcome: ArrayLike,
    assignment: ArrayLike,
    block_length: int,
    *,
    burn_in: int = 0,
    n_permutations: int = 10_000,
    alpha: float = 0.05,
    seed: Seed = 0,
    interval: bool = True,
) -> SwitchbackResult:
    """Randomisation test and CI for a switchback run (Bojinov & Shephard 2019).

    ``outcome[t]`` is the metric in period t, ``assignment[t]`` the arm (constant within each
    block of ``block_length`` periods); the first ``burn_in`` periods of each block are
    dropped. Permutations redraw the block labels with the same treated count (the design's
    balanced randomisation). The CI collects the constant effects τ₀ not rejected at α
    (bisection on the inverted test; ``interval=False`` skips it and returns ±inf).
    """
    y = np.asarray(outcome, dtype=np.float64)
    w = np.asarray(assignment)
    n = y.size
    if y.ndim != 1 or w.shape != y.shape:
        raise ValueError(
            f"outcome and assignment must be 1-D of equal length, got {y.shape}, {w.shape}"
        )
    if not np.all(np.isfinite(y)):
        raise ValueError(f"outcome[{int(np.argmin(np.isfinite(y)))}] is not finite")
    _check_lengths(n, block_length, burn_in)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations!r}")
    blocks = _blocks(n, block_length)
    n_blocks = int(blocks[-1]) + 1
    labels = np.zeros(n_blocks)
    for b in range(n_blocks):
        vals = np.unique(w[blocks == b])
        if vals.size != 1 or vals[0] not in (0, 1):
            raise ValueError(
                f"assignment must be one 0/1 value per block; block {b} "
                f"(periods {b * block_length}..) has {vals.tolist()}"
            )
        labels[b] = float(vals[0])
    n_treated = int(labels.sum())
    if not 0 < n_treated < n_blocks:
        raise ValueError("need at least one treated and one control block")
    keep = _kept(n, block_length, burn_in)
    sums = np.bincount(blocks[keep], weights=y[keep], minlength=n_blocks).astype(np.float64)
    counts = np.bincount(blocks[keep], minlength=n_blocks).astype(np.float64)
    if np.any(counts == 0):
        raise ValueError("a block has no periods left after burn-in")
    rng = np.random.default_rng(seed)
    perms = rng.permuted(np.tile(labels, (n_permutations, 1)), axis=1)
    estimate = float(_diff_in_means(labels[None, :], sums, counts)[0])

    def p_at(tau0: float) -> float:
        adj = sums - tau0 * counts * labels
        obs = abs(float(_diff_in_means(labels[None, :], adj, counts)[0]))
        null = np.abs(_diff_in_means(perms, adj, counts))
        return float(
            (1 + np.count_nonzero(null >= obs - 1e-12 * max(1.0, obs))) / (1 + n_permutations)
        )

    p_value = p_at(0.0)
    spread = float(np.std(_diff_in_means(perms, sums - estimate * counts * labels, counts)))
    step = max(spread, 1e-12 * max(1.0, abs(estimate)))

    def bound(sign: float) -> float:
        inside, outside = estimate, estimate + sign * 4.0 * step
        for _ in range(60):
            if p_at(outside) < alpha:
                break
            inside, outside = outside, outside + sign * 4.0 * step
        else:
            return sign * math.inf
        while abs(outside - inside) > 1e-6 * step:
            mid = 0.5 * (inside + outside)
            if p_at(mid) < alpha:
                outside = mid
            else:
                inside = mid
        return inside

    return SwitchbackResult(
        estimate=estimate,
        p_value=p_value,
        ci_lower=bound(-1.0) if interval else -math.inf,
        ci_upper=bound(1.0) if interval else math.inf,
        n_blocks=n_blocks,
        n_treated_blocks=n_treated,
        n_kept_periods=int(keep.sum()),
        n_permutations=n_permutations,
        alpha=float(alpha),
    )
