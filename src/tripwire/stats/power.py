"""Power, sample size and minimum detectable effect (MDE) for experiment planning.

Two-arm comparison of a control (n_c units) with a treatment (n_t = r·n_c), effect δ,
per-unit variances σ²_c, σ²_t, level α per comparison with s sides, power 1 − β:

    n_c = (z_{1−α/s} + z_{1−β})² (σ²_c + σ²_t / r) / δ²      (normal approximation)

* **means** use the exact two-sample t test instead (non-central t, df = n_c + n_t − 2,
  as statsmodels' ``TTestIndPower``): mean 0.183, σ = 0.142, 3% relative MDE → 10,503 per arm.
* **proportions** use the pooled variance under H₀ and unpooled under H₁ (Fleiss, Levin &
  Paik 2003, eq. 4.14): n_c = (z_{1−α/s}√(p̄q̄(1 + 1/r)) + z_{1−β}√(p_c q_c + p_t q_t/r))² / δ²,
  p̄ = (p_c + r p_t)/(1 + r): 5.0% → 5.5% → 31,234 per arm.
* **ratios** (Σy/Σx per unit, e.g. clicks per session) take the delta-method per-unit
  variance of the linearised metric, Var((y − R x)/x̄) (Deng, Knoblich & Lu 2018), and use
  the normal formula.

Adjustments: CUPED with pre-period correlation ρ multiplies every variance by (1 − ρ²)
(Deng et al. 2013); m treatment arms against one control split α by Bonferroni; a
sequential plan multiplies n by its inflation factor R = (θ_seq/θ_fixed)², computed from
its actual boundaries (:func:`tripwire.stats.sequential.inflation_factor`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from scipy import optimize, stats

from tripwire.stats import _normal
from tripwire.stats.sequential import SequentialDesign, inflation_factor

MetricKind = Literal["mean", "proportion", "ratio"]
Multiplicity = Literal["bonferroni", "none"]


@dataclass(frozen=True)
class SampleSizePlan:
    """Units needed per arm (control first, then each treatment arm).

    ``fixed_n_control`` is the unrounded fixed-design control size before the sequential
    inflation; ``variance_factor`` is 1 − ρ² (1.0 without CUPED).
    """

    metric: MetricKind
    n_per_arm: tuple[int, ...]
    absolute_effect: float
    relative_effect: float | None
    alpha: float
    alpha_per_comparison: float
    power: float
    sides: int
    allocation_ratio: float
    variance_factor: float
    sequential_inflation: float
    fixed_n_control: float

    @property
    def n_total(self) -> int:
        """Units across all arms."""
        return sum(self.n_per_arm)


@dataclass(frozen=True)
class MDEResult:
    """Smallest effect detectable with the given power at the given sizes."""

    metric: MetricKind
    absolute: float
    relative: float | None
    n_control: float
    n_treatment: float
    alpha_per_comparison: float
    power: float
    sides: int


@dataclass(frozen=True)
class RuntimeEstimate:
    """Days until every arm reaches its planned size at the given daily traffic."""

    days: int
    daily_units_per_arm: tuple[float, ...]
    limiting_arm: int


def _check_common(alpha: float, power: float, sides: int, ratio: float, arms: int) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power!r}")
    if sides not in (1, 2):
        raise ValueError(f"sides must be 1 or 2, got {sides!r}")
    if not (math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"allocation ratio (n_treatment / n_control) must be > 0, got {ratio!r}")
    if arms < 1:
        raise ValueError(f"n_treatment_arms must be >= 1, got {arms!r}")


def _alpha_per_comparison(alpha: float, arms: int, multiplicity: Multiplicity) -> float:
    if multiplicity == "bonferroni":
        return alpha / arms
    if multiplicity == "none":
        return alpha
    raise ValueError(f"multiplicity must be 'bonferroni' or 'none', got {multiplicity!r}")


def _variance_factor(cuped_correlation: float) -> float:
    if not -1.0 < cuped_correlation < 1.0:
        raise ValueError(f"cuped_correlation must be in (-1, 1), got {cuped_correlation!r}")
    return 1.0 - cuped_correlation**2


def _inflation(design: SequentialDesign | None, alpha: float, sides: int, power: float) -> float:
    if design is None:
        return 1.0
    if abs(design.alpha - alpha) > 1e-12 or design.sides != sides:
        raise ValueError(
            f"sequential design is for alpha={design.alpha}, sides={design.sides} but the "
            f"comparison uses alpha={alpha}, sides={sides}; build the design at the "
            "per-comparison level"
        )
    return inflation_factor(design, power)


def _effect(mde: float, baseline: float | None, relative: bool) -> float:
    if not (math.isfinite(mde) and mde != 0):
        raise ValueError(f"mde must be finite and non-zero, got {mde!r}")
    if relative:
        if baseline is None or baseline == 0:
            raise ValueError("a relative mde needs a non-zero baseline")
        return abs(mde * baseline)
    return abs(mde)


def _z_n_control(
    var_c: float, var_t: float, delta: float, alpha: float, power: float, sides: int, ratio: float
) -> float:
    """n_c = (z_{1−α/s} + z_{1−β})² (σ²_c + σ²_t/r) / δ²."""
    z = _normal.z_upper(alpha / sides) + _normal.z_upper(1.0 - power)
    return z * z * (var_c + var_t / ratio) / (delta * delta)


def _t_power(n_c: float, sd: float, delta: float, alpha: float, sides: int, ratio: float) -> float:
    """Power of the pooled two-sample t test (non-central t), as statsmodels TTestIndPower."""
    n_t = ratio * n_c
    df = n_c + n_t - 2.0
    nc = delta / (sd * math.sqrt(1.0 / n_c + 1.0 / n_t))
    crit = float(stats.t.isf(alpha / sides, df))
    upper = float(stats.nct.sf(crit, df, nc))
    if not math.isfinite(upper):  # scipy's nct loses accuracy for huge nc: power ~ 1
        upper = float(_normal.sf(crit - nc))
    lower = float(stats.nct.cdf(-crit, df, nc)) if sides == 2 else 0.0
    return upper + (lower if math.isfinite(lower) else 0.0)


def _plan(
    metric: MetricKind,
    n_c: float,
    delta: float,
    baseline: float | None,
    alpha: float,
    alpha_c: float,
    power: float,
    sides: int,
    ratio: float,
    arms: int,
    vf: float,
    design: SequentialDesign | None,
) -> SampleSizePlan:
    infl = _inflation(design, alpha_c, sides, power)
    n_control = math.ceil(n_c * infl - 1e-9)
    n_treat = math.ceil(n_c * ratio * infl - 1e-9)
    return SampleSizePlan(
        metric=metric,
        n_per_arm=(n_control,) + (n_treat,) * arms,
        absolute_effect=delta,
        relative_effect=None if not baseline else delta / abs(baseline),
        alpha=alpha,
        alpha_per_comparison=alpha_c,
        power=power,
        sides=sides,
        allocation_ratio=ratio,
        variance_factor=vf,
        sequential_inflation=infl,
        fixed_n_control=n_c,
    )


def sample_size_means(
    sd: float,
    mde: float,
    *,
    mean: float | None = None,
    relative: bool = False,
    alpha: float = 0.05,
    power: float = 0.8,
    sides: int = 2,
    ratio: float = 1.0,
    n_treatment_arms: int = 1,
    multiplicity: Multiplicity = "bonferroni",
    cuped_correlation: float = 0.0,
    design: SequentialDesign | None = None,
) -> SampleSizePlan:
    """Units per arm for a difference in means (two-sample t test, common σ).

    Solves power_t(n_c) = 1 − β with the non-central t (df = n_c(1 + r) − 2,
    ncp = δ / (σ√(1/n_c + 1/n_t))), starting from the normal formula. ``mde`` is absolute,
    or relative to ``mean`` when ``relative``. σ² is multiplied by 1 − ρ² for CUPED.

    >>> sample_size_means(0.142, 0.03, mean=0.183, relative=True).n_per_arm
    (10503, 10503)
    """
    _check_common(alpha, power, sides, ratio, n_treatment_arms)
    if not (math.isfinite(sd) and sd > 0):
        raise ValueError(f"sd must be > 0, got {sd!r}")
    delta = _effect(mde, mean, relative)
    alpha_c = _alpha_per_comparison(alpha, n_treatment_arms, multiplicity)
    vf = _variance_factor(cuped_correlation)
    sd_adj = sd * math.sqrt(vf)
    start = _z_n_control(sd_adj**2, sd_adj**2, delta, alpha_c, power, sides, ratio)
    smallest = max(2.0, 2.0 / ratio)  # two units per arm: a variance in each

    def shortfall(n: float) -> float:
        return _t_power(n, sd_adj, delta, alpha_c, sides, ratio) - power

    lo = max(start, smallest)
    hi = max(start * 2.0, smallest * 2.0)
    while shortfall(hi) < 0:
        hi *= 2.0
    if shortfall(lo) >= 0:
        lo = smallest
    n_c = lo if shortfall(lo) >= 0 else float(optimize.brentq(shortfall, lo, hi, xtol=1e-9))
    return _plan(
        "mean", n_c, delta, mean, alpha, alpha_c, power, sides, ratio, n_treatment_arms, vf, design
    )


def _prop_n_control(
    p_c: float, p_t: float, alpha: float, power: float, sides: int, ratio: float
) -> float:
    """Pooled-null / unpooled-alternative n_c for two proportions (Fleiss et al. 2003)."""
    p_bar = (p_c + ratio * p_t) / (1.0 + ratio)
    za = _normal.z_upper(alpha / sides)
    zb = _normal.z_upper(1.0 - power)
    num = za * math.sqrt(p_bar * (1 - p_bar) * (1 + 1 / ratio)) + zb * math.sqrt(
        p_c * (1 - p_c) + p_t * (1 - p_t) / ratio
    )
    return num * num / (p_t - p_c) ** 2


def sample_size_proportions(
    p_control: float,
    mde: float,
    *,
    relative: bool = False,
    alpha: float = 0.05,
    power: float = 0.8,
    sides: int = 2,
    ratio: float = 1.0,
    n_treatment_arms: int = 1,
    multiplicity: Multiplicity = "bonferroni",
    cuped_correlation: float = 0.0,
    design: SequentialDesign | None = None,
) -> SampleSizePlan:
    """Units per arm to detect p_control → p_control + mde (or × (1 + mde) if relative).

    Pooled variance under H₀ and unpooled under H₁ (Fleiss, Levin & Paik 2003), the same
    as statsmodels ``samplesize_proportions_2indep_onetail``. CUPED scales the required n
    by 1 − ρ² (the variance of the adjusted outcome).

    >>> sample_size_proportions(0.05, 0.10, relative=True).n_per_arm
    (31234, 31234)
    """
    _check_common(alpha, power, sides, ratio, n_treatment_arms)
    if not 0.0 < p_control < 1.0:
        raise ValueError(f"p_control must be in (0, 1), got {p_control!r}")
    signed = mde * p_control if relative else mde
    p_t = p_control + signed
    if not 0.0 < p_t < 1.0 or signed == 0:
        raise ValueError(f"treatment proportion {p_t!r} must be in (0, 1) and differ from control")
    alpha_c = _alpha_per_comparison(alpha, n_treatment_arms, multiplicity)
    vf = _variance_factor(cuped_correlation)
    n_c = _prop_n_control(p_control, p_t, alpha_c, power, sides, ratio) * vf
    return _plan(
        "proportion",
        n_c,
        abs(signed),
        p_control,
        alpha,
        alpha_c,
        power,
        sides,
        ratio,
        n_treatment_arms,
        vf,
        design,
    )


def sample_size_ratio(
    unit_variance: float,
    mde: float,
    *,
    ratio_value: float | None = None,
    relative: bool = False,
    alpha: float = 0.05,
    power: float = 0.8,
    sides: int = 2,
    ratio: float = 1.0,
    n_treatment_arms: int = 1,
    multiplicity: Multiplicity = "bonferroni",
    cuped_correlation: float = 0.0,
    design: SequentialDesign | None = None,
) -> SampleSizePlan:
    """Units per arm for a ratio metric R = Σy/Σx given its delta-method unit variance.

    ``unit_variance`` is n · Var(R̂) = Var(y − R x)/x̄² (Deng, Knoblich & Lu 2018); then the
    normal formula n_c = (z_{1−α/s} + z_{1−β})² σ²(1 + 1/r)/δ² applies.

    >>> sample_size_ratio(4.0, 0.1).n_per_arm
    (6280, 6280)
    """
    _check_common(alpha, power, sides, ratio, n_treatment_arms)
    if not (math.isfinite(unit_variance) and unit_variance > 0):
        raise ValueError(f"unit_variance must be > 0, got {unit_variance!r}")
    delta = _effect(mde, ratio_value, relative)
    alpha_c = _alpha_per_comparison(alpha, n_treatment_arms, multiplicity)
    vf = _variance_factor(cuped_correlation)
    v = unit_variance * vf
    n_c = _z_n_control(v, v, delta, alpha_c, power, sides, ratio)
    return _plan(
        "ratio",
        n_c,
        delta,
        ratio_value,
        alpha,
        alpha_c,
        power,
        sides,
        ratio,
        n_treatment_arms,
        vf,
        design,
    )


def mde_from_variance(
    n_control: float,
    unit_variance: float,
    *,
    baseline: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    sides: int = 2,
    ratio: float = 1.0,
    n_treatment_arms: int = 1,
    multiplicity: Multiplicity = "bonferroni",
    cuped_correlation: float = 0.0,
    design: SequentialDesign | None = None,
    metric: MetricKind = "mean",
) -> MDEResult:
    """MDE = (z_{1−α/s} + z_{1−β}) √(σ²(1 − ρ²)(1/n_c + 1/n_t) · R) (normal approximation).

    ``unit_variance`` is the per-unit variance of the metric (p(1 − p) for a proportion, the
    delta-method variance for a ratio); R is the sequential inflation of ``design`` (a plan
    whose maximum size is n_c detects R^{1/2} times the fixed-design MDE).

    >>> round(mde_from_variance(10_000, 1.0).absolute, 5)
    0.03962
    """
    _check_common(alpha, power, sides, ratio, n_treatment_arms)
    if not (n_control > 0 and unit_variance > 0):
        raise ValueError(
            f"n_control and unit_variance must be > 0, got {n_control!r}, {unit_variance!r}"
        )
    alpha_c = _alpha_per_comparison(alpha, n_treatment_arms, multiplicity)
    vf = _variance_factor(cuped_correlation)
    infl = _inflation(design, alpha_c, sides, power)
    z = _normal.z_upper(alpha_c / sides) + _normal.z_upper(1.0 - power)
    n_t = ratio * n_control
    delta = z * math.sqrt(unit_variance * vf * (1.0 / n_control + 1.0 / n_t) * infl)
    return MDEResult(
        metric=metric,
        absolute=delta,
        relative=None if not baseline else delta / abs(baseline),
        n_control=float(n_control),
        n_treatment=float(n_t),
        alpha_per_comparison=alpha_c,
        power=power,
        sides=sides,
    )


def mde_proportions(
    n_control: float,
    p_control: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    sides: int = 2,
    ratio: float = 1.0,
    n_treatment_arms: int = 1,
    multiplicity: Multiplicity = "bonferroni",
    cuped_correlation: float = 0.0,
    design: SequentialDesign | None = None,
) -> MDEResult:
    """Smallest upward change p_c → p_t detectable at n_control (inverse of
    :func:`sample_size_proportions`, solved by root-finding on δ).

    >>> round(mde_proportions(31234, 0.05).absolute, 5)
    0.005
    """
    _check_common(alpha, power, sides, ratio, n_treatment_arms)
    if not 0.0 < p_control < 1.0 or not n_control > 0:
        raise ValueError(
            f"need p_control in (0, 1) and n_control > 0, got {p_control!r}, {n_control!r}"
        )
    alpha_c = _alpha_per_comparison(alpha, n_treatment_arms, multiplicity)
    vf = _variance_factor(cuped_correlation)
    infl = _inflation(design, alpha_c, sides, power)
    eff_n = n_control / (vf * infl)

    def excess(delta: float) -> float:
        return _prop_n_control(p_control, p_control + delta, alpha_c, power, sides, ratio) - eff_n

    hi = 1.0 - p_control - 1e-12
    if excess(hi) > 0:
        raise ValueError(
            f"n_control={n_control} is too small to detect any change from "
            f"p={p_control} with power {power}"
        )
    delta = float(optimize.brentq(excess, 1e-12, hi, xtol=1e-14))
    return MDEResult(
        metric="proportion",
        absolute=delta,
        relative=delta / p_control,
        n_control=float(n_control),
        n_treatment=float(ratio * n_control),
        alpha_per_comparison=alpha_c,
        power=power,
        sides=sides,
    )


def cohort_mde(
    n_control: float,
    cohort_share: float,
    unit_variance: float,
    *,
    baseline: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    sides: int = 2,
    ratio: float = 1.0,
    cuped_correlation: float = 0.0,
    design: SequentialDesign | None = None,
    metric: MetricKind = "mean",
) -> MDEResult:
    """MDE for a cohort holding ``cohort_share`` of the experiment's traffic.

    Conditional on the planned size: the cohort gets n_c·share control units and the MDE
    formula of :func:`mde_from_variance` applies with the cohort's own unit variance, e.g.
    a 10% cohort detects √10 ≈ 3.2 times the overall MDE.
    """
    if not 0.0 < cohort_share <= 1.0:
        raise ValueError(f"cohort_share must be in (0, 1], got {cohort_share!r}")
    return mde_from_variance(
        n_control * cohort_share,
        unit_variance,
        baseline=baseline,
        alpha=alpha,
        power=power,
        sides=sides,
        ratio=ratio,
        cuped_correlation=cuped_correlation,
        design=design,
        metric=metric,
    )


def runtime_days(
    n_per_arm: Sequence[int],
    daily_eligible_units: float,
    *,
    traffic_fraction: float = 1.0,
    weights: Sequence[float] | None = None,
) -> RuntimeEstimate:
    """Days until each arm reaches its size: ⌈max_i n_i / (daily · fraction · w_i/Σw)⌉.

    ``daily_eligible_units`` are new eligible units per day; ``traffic_fraction`` the share
    of them entering the experiment; ``weights`` the arm allocation (default: proportional
    to ``n_per_arm``, i.e. the plan's own allocation).

    >>> runtime_days((10503, 10503), 3000, traffic_fraction=0.5).days
    15
    """
    n = [float(x) for x in n_per_arm]
    if not n or any(not (x > 0) for x in n):
        raise ValueError(f"n_per_arm must be non-empty and positive, got {list(n_per_arm)!r}")
    if not daily_eligible_units > 0:
        raise ValueError(f"daily_eligible_units must be > 0, got {daily_eligible_units!r}")
    if not 0.0 < traffic_fraction <= 1.0:
        raise ValueError(f"traffic_fraction must be in (0, 1], got {traffic_fraction!r}")
    w = n if weights is None else [float(x) for x in weights]
    if len(w) != len(n) or any(not (x > 0) for x in w):
        raise ValueError(f"weights must be {len(n)} positive numbers, got {weights!r}")
    total_w = sum(w)
    daily = [daily_eligible_units * traffic_fraction * x / total_w for x in w]
    days_per_arm = [ni / di for ni, di in zip(n, daily, strict=True)]
    limiting = max(range(len(n)), key=lambda i: days_per_arm[i])
    return RuntimeEstimate(
        days=math.ceil(days_per_arm[limiting] - 1e-9),
        daily_units_per_arm=tuple(daily),
        limiting_arm=limiting,
    )
