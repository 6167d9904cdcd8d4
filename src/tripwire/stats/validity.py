"""Validity checks that gate a verdict: sample-ratio mismatch and sample-size adequacy.

A sample-ratio mismatch (the arms' unit counts do not match the planned split) means the
assignment or the exposure logging is broken, and no effect estimate can be trusted
(Fabijan et al. 2019, KDD, "Diagnosing Sample Ratio Mismatch"). The conventional alarm
threshold is p < 0.001: SRM checks run on every experiment and every look, so a loose
threshold would raise false alarms weekly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from tripwire.stats.results import Status

SRM_THRESHOLD = 0.001


@dataclass(frozen=True)
class SampleRatioResult:
    """Observed vs expected units per arm and the mismatch test."""

    observed: tuple[float, ...]
    expected: tuple[float, ...]
    statistic: float
    df: int
    p_value: float
    threshold: float
    method: str
    status: Status
    message: str = ""

    @property
    def mismatch(self) -> bool:
        """True when the split is implausible under the plan (p < threshold)."""
        return self.status != Status.INSUFFICIENT_DATA and self.p_value < self.threshold


def sample_ratio_mismatch(
    observed: ArrayLike,
    planned_weights: ArrayLike,
    *,
    threshold: float = SRM_THRESHOLD,
    min_expected_count: float = 5.0,
) -> SampleRatioResult:
    r"""Pearson's chi-square goodness of fit of arm counts to the planned weights.

    .. math:: X^2 = \sum_a (O_a − E_a)^2 / E_a,\quad E_a = N w_a / \sum w,\quad
              X^2 \sim \chi^2_{k−1}

    (Pearson 1900). When an expected count is below ``min_expected_count`` the chi-square
    approximation is poor: with two arms the exact binomial test is used instead
    (method ``binomial_exact``); with more arms the result is ``insufficient_data``.
    Arms planned at weight 0 must have 0 units (any unit there is an SRM by definition).

    >>> sample_ratio_mismatch([50_000, 51_000], [0.5, 0.5]).mismatch  # p = 0.0017
    False
    >>> r = sample_ratio_mismatch([50_000, 51_500], [0.5, 0.5])
    >>> r.mismatch, round(r.p_value, 6)
    (True, 2e-06)
    >>> sample_ratio_mismatch([3, 1], [0.5, 0.5]).method
    'binomial_exact'
    """
    obs = np.asarray(observed, dtype=np.float64)
    w = np.asarray(planned_weights, dtype=np.float64)
    if obs.ndim != 1 or obs.shape != w.shape or obs.size < 2:
        raise ValueError(
            f"observed ({obs.shape}) and planned_weights ({w.shape}) must be 1-d of equal length >= 2"
        )
    for name, values in (("observed", obs), ("planned_weights", w)):
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name}[{i}] must be finite and >= 0 (got {values[i]!r})")
    if w.sum() <= 0:
        raise ValueError("planned_weights must not all be 0")
    total = obs.sum()
    expected = total * w / w.sum()
    return _srm(obs, expected, w, threshold, min_expected_count)


def _srm(
    obs: np.ndarray, expected: np.ndarray, w: np.ndarray, threshold: float, min_expected: float
) -> SampleRatioResult:
    observed_t, expected_t = tuple(obs.tolist()), tuple(expected.tolist())
    if np.any((w == 0) & (obs > 0)):
        return SampleRatioResult(
            observed_t, expected_t, float("inf"), int(obs.size - 1), 0.0, threshold,
            "planned_zero_weight", Status.OK, "units found in an arm planned at weight 0",
        )  # fmt: skip
    live = w > 0
    obs, expected = obs[live], expected[live]
    if obs.sum() == 0:
        return SampleRatioResult(
            observed_t, expected_t, float("nan"), int(obs.size - 1), float("nan"), threshold,
            "chi_square", Status.INSUFFICIENT_DATA, "no units assigned yet",
        )  # fmt: skip
    if expected.min() < min_expected:
        if obs.size == 2:
            p = float(
                stats.binomtest(
                    int(round(obs[0])), int(round(obs.sum())), float(expected[0] / obs.sum())
                ).pvalue
            )
            return SampleRatioResult(
                observed_t, expected_t, float("nan"), 1, p, threshold, "binomial_exact", Status.EXACT,
                "expected count below 5: exact binomial test",
            )  # fmt: skip
        return SampleRatioResult(
            observed_t, expected_t, float("nan"), int(obs.size - 1), float("nan"), threshold,
            "chi_square", Status.INSUFFICIENT_DATA,
            f"expected count {expected.min():.3g} below {min_expected:g}: too few units to test the split",
        )  # fmt: skip
    statistic = float(((obs - expected) ** 2 / expected).sum())
    df = int(obs.size - 1)
    return SampleRatioResult(
        observed_t, expected_t, statistic, df, float(stats.chi2.sf(statistic, df)), threshold,
        "chi_square", Status.OK,
    )  # fmt: skip


@dataclass(frozen=True)
class SampleSizeCheck:
    """Whether the large-sample approximation is adequate for a comparison."""

    adequate: bool
    reason: str


def normal_approximation_adequate(
    n: Sequence[float],
    successes: Sequence[float] | None = None,
    *,
    min_n: float = 2.0,
    min_expected: float = 5.0,
) -> SampleSizeCheck:
    """Rule of thumb the tests apply before trusting a normal approximation.

    Means: every arm needs n ≥ ``min_n`` (a variance needs two units). Proportions: every
    expected count of the arms × {success, failure} table under the pooled rate must be
    ≥ ``min_expected`` (Cochran 1954, Biometrics 10:417).

    >>> normal_approximation_adequate([100, 100], [2, 3])
    SampleSizeCheck(adequate=False, reason='smallest expected count 2.5 < 5')
    """
    ns = np.asarray(n, dtype=np.float64)
    if ns.min() < min_n:
        return SampleSizeCheck(False, f"an arm has n = {ns.min():g} < {min_n:g}")
    if successes is None:
        return SampleSizeCheck(True, "")
    k = np.asarray(successes, dtype=np.float64)
    pbar = k.sum() / ns.sum()
    smallest = float(min((ns * pbar).min(), (ns * (1 - pbar)).min()))
    if smallest < min_expected:
        return SampleSizeCheck(False, f"smallest expected count {smallest:.3g} < {min_expected:g}")
    return SampleSizeCheck(True, "")
