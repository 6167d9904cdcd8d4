"""Several treatment arms against one control, with a family-wise adjustment.

Each arm is compared with the control by the same two-arm test; the p-values (and, where
the method has them, the intervals) are then adjusted for the number of arms. Holm is the
default: it controls the family-wise error rate under any dependence and is uniformly more
powerful than Bonferroni. Dunnett uses the known positive correlation between comparisons
that share a control and gives simultaneous intervals too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tripwire.stats.comparisons import welch_t_test
from tripwire.stats.multiplicity import adjust_p_values, dunnett_adjust
from tripwire.stats.relative import critical_value
from tripwire.stats.results import ComparisonResult

MultiArmAdjustment = Literal["holm", "dunnett", "bonferroni", "none"]


@dataclass(frozen=True)
class ArmComparison:
    """One treatment arm vs control after the family-wise adjustment."""

    arm: str
    result: ComparisonResult
    adjusted_p_value: float
    adjusted_ci_low: float
    adjusted_ci_high: float
    significant: bool


@dataclass(frozen=True)
class MultiArmResult:
    """All arms vs control. Adjusted intervals are NaN for Holm (a step-down method has no
    matching simultaneous intervals); Bonferroni and Dunnett provide them."""

    adjustment: str
    alpha: float
    arms: tuple[ArmComparison, ...]

    def __getitem__(self, arm: str) -> ArmComparison:
        for comparison in self.arms:
            if comparison.arm == arm:
                return comparison
        raise KeyError(f"no arm named {arm!r}; arms are {[a.arm for a in self.arms]}")


def compare_to_control(
    control: Any,
    treatments: Mapping[str, Any],
    *,
    test: Callable[..., ComparisonResult] = welch_t_test,
    adjustment: MultiArmAdjustment = "holm",
    alpha: float = 0.05,
) -> MultiArmResult:
    """Compare each treatment with the control by ``test`` and adjust for m = len(treatments).

    Holm / Bonferroni: :mod:`tripwire.stats.multiplicity` (Bonferroni intervals use
    α/m). Dunnett: :func:`~tripwire.stats.multiplicity.dunnett_adjust` on the absolute
    differences with the shared-control correlation, reference distribution normal for
    z tests and multivariate t with the smallest Welch df otherwise (conservative).

    >>> from tripwire.stats import MeanStats, two_proportion_z_test
    >>> ctl = MeanStats.from_proportion(20000, 2021)
    >>> arms = {"a": MeanStats.from_proportion(20000, 2041),
    ...         "b": MeanStats.from_proportion(20000, 1948)}
    >>> r = compare_to_control(ctl, arms, test=two_proportion_z_test, adjustment="holm")
    >>> round(r["b"].adjusted_p_value, 3)
    0.444
    """
    if not treatments:
        raise ValueError("compare_to_control needs at least one treatment arm")
    names = list(treatments)
    results = [test(control, treatments[name], alpha=alpha) for name in names]
    for name, result in zip(names, results, strict=True):
        if not np.ndim(result.absolute.estimate) == 0:
            raise ValueError(f"arm {name!r}: compare_to_control takes scalar statistics per arm")
    m = len(names)
    raw_p = np.array([float(r.absolute.p_value) for r in results])
    est = np.array([float(r.absolute.estimate) for r in results])
    se = np.array([float(r.absolute.se) for r in results])
    usable = np.isfinite(raw_p) & np.isfinite(se)
    adjusted = np.full(m, np.nan)
    low = np.full(m, np.nan)
    high = np.full(m, np.nan)
    if adjustment == "dunnett" and usable.any():
        dfs = np.array([float(r.df) for r in results])[usable]
        df = float(dfs.min()) if np.all(np.isfinite(dfs)) else np.inf
        vc = float(results[int(np.flatnonzero(usable)[0])].control.variance_of_mean)
        p_adj, crit, _ = dunnett_adjust(est[usable], se[usable], vc, df=df, alpha=alpha)
        adjusted[usable] = p_adj
        low[usable] = est[usable] - crit * se[usable]
        high[usable] = est[usable] + crit * se[usable]
    elif adjustment in ("holm", "bonferroni", "none") and usable.any():
        adjusted[usable] = adjust_p_values(raw_p[usable], adjustment)
        if adjustment != "holm":
            level = alpha / usable.sum() if adjustment == "bonferroni" else alpha
            for i in np.flatnonzero(usable):
                q = float(critical_value(level, results[i].df))
                low[i], high[i] = est[i] - q * se[i], est[i] + q * se[i]
    elif adjustment not in ("holm", "bonferroni", "none", "dunnett"):
        raise ValueError(
            f"unknown adjustment {adjustment!r}; expected holm, dunnett, bonferroni or none"
        )
    return MultiArmResult(
        adjustment=adjustment,
        alpha=alpha,
        arms=tuple(
            ArmComparison(
                arm=name,
                result=results[i],
                adjusted_p_value=float(adjusted[i]),
                adjusted_ci_low=float(low[i]),
                adjusted_ci_high=float(high[i]),
                significant=bool(adjusted[i] <= alpha),
            )
            for i, name in enumerate(names)
        ),
    )
