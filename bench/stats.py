"""Benchmark of the stats engine on sufficient statistics (no I/O, no query engine).

Measured (median of several runs, wall clock, one process):

* ``scorecard``: 20 metrics × 3 arms × 50 cohort slices, already aggregated: SRM per
  slice, CUPED per (metric, arm, slice) and per (metric, arm) aggregate, relative effects,
  Holm across the two treatment arms, heterogeneity and partial pooling per (metric, arm),
  a 4-look O'Brien–Fleming-type plan at the observed information fractions and the
  boundary check of every aggregate. Target ≤ 0.5 s.
* ``boundaries_k{4,10}``: a Lan–DeMets OBF-type design for K equally spaced looks
  (``tripwire.stats.sequential``). Target ≤ 50 ms.

Usage: ``python -m bench.stats [--quick]``. Machine: 2 cores shared with other work, so
numbers are noisy; the scorecard is bound by numpy call overhead on 1,000-element arrays
and the per-(metric, arm) pooling loop, the boundaries by the numerical integration grid.
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tripwire.stats import (
    CupedMeanStats,
    analyze_cohorts,
    cuped_mean_test,
    holm_adjust,
    sample_ratio_mismatch,
)

METRICS, ARMS, COHORTS, LOOKS = 20, 3, 50, 4
RESULTS = Path(__file__).parent / "results" / "stats.json"


def _arm_stats(
    profile_seed: int, rng: np.random.Generator, n: np.ndarray, lift: float
) -> CupedMeanStats:
    """Valid per-slice sums built from chosen means, variances and correlations; the slice
    profile (covariate moments, correlation) is shared by the arms, as randomisation makes it."""
    profile = np.random.default_rng(profile_seed)
    mean_c = profile.uniform(5, 50, n.shape)
    var_c = (mean_c * profile.uniform(0.5, 2.0, n.shape)) ** 2
    rho = profile.uniform(0.2, 0.7, n.shape)
    var_y = var_c * profile.uniform(0.8, 1.2, n.shape)
    se_y = np.sqrt(var_y * (1 - rho**2) / n)  # sampling noise of the adjusted arm mean
    mean_y = mean_c * (1 + lift) + rng.normal(0, 1, n.shape) * se_y
    cov = rho * np.sqrt(var_c * var_y)
    return CupedMeanStats(
        n=n,
        sum=n * mean_y,
        sum_sq=(n - 1) * var_y + n * mean_y**2,
        sum_cov=n * mean_c,
        sum_cov_sq=(n - 1) * var_c + n * mean_c**2,
        sum_cross=(n - 1) * cov + n * mean_y * mean_c,
    )


def make_inputs(seed: int = 0) -> list[CupedMeanStats]:
    """Per arm: statistics shaped (METRICS, COHORTS)."""
    rng = np.random.default_rng(seed)
    units = rng.integers(1_500, 120_000, COHORTS)
    per_arm = np.stack([rng.multinomial(u, [1 / 3] * 3) for u in units])  # (COHORTS, ARMS)
    n = np.broadcast_to(per_arm.T[:, None, :], (ARMS, METRICS, COHORTS)).astype(np.float64)
    return [
        _arm_stats(seed + 1, rng, n[a].copy(), lift) for a, lift in enumerate((0.0, 0.02, -0.01))
    ]


def _sequential_design(fractions: list[float]) -> Any:
    from tripwire.stats.sequential import sequential_boundaries

    return sequential_boundaries(fractions, alpha=0.05, spending="obf")


def analyse(arms: list[CupedMeanStats]) -> dict[str, Any]:
    """The whole scorecard computation; returns a few numbers so nothing is optimised away."""
    control, treatments = arms[0], arms[1:]
    # SRM per (metric, slice) on the three arms' unit counts; units are shared across metrics,
    # so one metric's counts per slice are what an analysis checks.
    n_by_arm = np.stack([np.asarray(a.n)[0] for a in arms], axis=1)
    srm = [sample_ratio_mismatch(row, [1, 1, 1]).mismatch for row in n_by_arm]
    aggregate = [
        CupedMeanStats(
            *(np.asarray(getattr(a, f)).sum(axis=1) for f in CupedMeanStats.__dataclass_fields__)
        )
        for a in arms
    ]
    per_slice = [cuped_mean_test(control, t) for t in treatments]
    overall = [cuped_mean_test(aggregate[0], t) for t in aggregate[1:]]
    holm = np.array(
        [holm_adjust([float(o.relative.p_value[m]) for o in overall]) for m in range(METRICS)]
    )
    z = np.stack([np.asarray(o.absolute.estimate) / np.asarray(o.absolute.se) for o in overall])
    try:
        design = _sequential_design([0.25, 0.5, 0.75, 1.0])
    except ImportError:  # the sequential module is optional for this benchmark
        crossed = np.zeros_like(z, dtype=bool)
    else:
        crossed = np.abs(z) >= design.efficacy[LOOKS - 1]
    pooled = []
    names = [f"c{i}" for i in range(COHORTS)]
    for arm_result, arm_overall in zip(per_slice, overall, strict=True):
        for m in range(METRICS):
            per_metric = _select(arm_result, m)
            aggregate_metric = _select(arm_overall, m)
            pooled.append(analyze_cohorts(names, per_metric, aggregate_metric, relative=True))
    return {
        "srm_flags": int(sum(srm)),
        "significant_after_holm": int((holm <= 0.05).sum()),
        "crossed_final_boundary": int(crossed.sum()),
        "heterogeneous": int(sum(p.heterogeneity.p_value < 0.05 for p in pooled)),
    }


def _select(result: Any, index: int) -> Any:
    """One metric's slice of a vectorised ComparisonResult (a view, no recomputation)."""
    from dataclasses import replace

    from tripwire.stats import ArmSummary, Effect

    def pick(x: Any) -> Any:
        return np.asarray(x)[index]

    def effect(e: Effect) -> Effect:
        return Effect(
            pick(e.estimate), pick(e.se), pick(e.ci_low), pick(e.ci_high), pick(e.p_value)
        )

    def arm(a: ArmSummary) -> ArmSummary:
        return ArmSummary(pick(a.mean), pick(a.variance_of_mean), pick(a.n))

    return replace(
        result,
        absolute=effect(result.absolute),
        relative=effect(result.relative),
        control=arm(result.control),
        treatment=arm(result.treatment),
        df=pick(result.df),
        status=pick(result.status),
    )


def _median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict[str, float]:
    argv = list(sys.argv[1:] if argv is None else argv)
    quick = "--quick" in argv
    repeats = 3 if quick else 7
    arms = make_inputs()
    summary = analyse(arms)  # warm-up (imports, caches)
    medians = {"scorecard_20x3x50_s": _median_seconds(lambda: analyse(arms), repeats)}
    try:
        from tripwire.stats.sequential import sequential_boundaries
    except ImportError:
        print("   tripwire.stats.sequential not available: boundary timings skipped")
    else:
        for k in (4, 10):
            fractions = [(i + 1) / k for i in range(k)]
            sequential_boundaries(fractions)
            medians[f"boundaries_k{k}_s"] = _median_seconds(
                functools.partial(sequential_boundaries, fractions), repeats
            )
    for name, value in medians.items():
        print(f"   {name:28s} {value * 1000:8.1f} ms (median of {repeats})")
    print(f"   checks: {summary}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"medians_s": medians, "repeats": repeats, "checks": summary}, indent=2)
    )
    return medians


if __name__ == "__main__":
    main()
