"""Step 1 — define the problem precisely.

What moved (the metric's definition: numerator, denominator, unit), by how much (baseline
vs current with intervals, absolute and relative change), since when (onset from
change-point analysis), how (a step or a gradual trend), and where (a heatmap-ready table
of the change by every value of every investigated dimension).

* Baseline: the same clock-time window on the previous days (:func:`baseline_windows`).
* Intervals: proportions (numerator ≤ denominator, e.g. sessions converting) use the
  two-proportion z test of :mod:`tripwire.stats`; counts and other ratios compare the
  per-bucket values of the current window with those of the baseline windows (Welch).
* Onset: per-bucket standardised residuals ``z_b = (num_b − p̂·den_b) / √(den_b·p̂(1−p̂))``
  (rates; ``(num_b − e_b)/√e_b`` scaled by a robust dispersion for counts), split once by
  :func:`tripwire.monitor.onset.locate_onset` before the reference time and once after
  the onset to find where the regime ended (recovery) when later data exists.
* Shape: a step (two levels) against a ramp (flat, then linear from the onset), compared
  by residual sum of squares over the regime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from ibis.backends import BaseBackend

from tripwire.metrics.definitions import MetricBase
from tripwire.monitor.onset import locate_onset
from tripwire.rca.data import (
    BUCKET,
    LeafTable,
    Series,
    Window,
    metric_series,
    segment_where,
)
from tripwire.stats import MeanStats, two_proportion_z_test, welch_t_test

#: How far before the reference time the onset is searched.
ONSET_LOOKBACK = timedelta(hours=12)
#: How far after the reference time later data is used to find the end of the regime.
REGIME_LOOKAHEAD = timedelta(hours=12)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a two-sided 95% interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class DimensionChange:
    """One cell of the heatmap: a dimension value's baseline vs current."""

    dimension: str
    value: str
    baseline: float
    current: float
    absolute: float
    relative: float
    baseline_volume: float
    current_volume: float
    contribution: float  # share of the overall change attributable to this value


@dataclass(frozen=True)
class Regime:
    """When the change started and ended, and whether it was a step or a trend."""

    onset: datetime
    end: datetime
    recovered_in_data: bool
    shape: str  # step | gradual
    shift: float  # mean z during the regime
    shape_evidence: str


@dataclass(frozen=True)
class ProblemDefinition:
    """The precise problem statement."""

    metric: str
    description: str
    metric_type: str
    numerator: str
    denominator: str
    unit: str
    current: Window
    baselines: tuple[Window, ...]
    baseline_value: Estimate
    current_value: Estimate
    absolute_change: Estimate
    relative_change: Estimate
    p_value: float
    regime: Regime
    series_starts: tuple[datetime, ...]
    series_observed: tuple[float, ...]
    series_expected: tuple[float, ...]
    by_dimension: tuple[DimensionChange, ...]

    def headline(self) -> str:
        b, c = self.baseline_value.value, self.current_value.value
        if self.metric_type in ("ratio", "proportion"):
            return (
                f"{self.metric}: {b:.1%} → {c:.1%} ({self.absolute_change.value * 100:+.1f} pp, "
                f"{self.relative_change.value:+.0%}) since {self.regime.onset:%Y-%m-%d %H:%M} UTC"
            )
        return (
            f"{self.metric}: {b:,.1f} → {c:,.1f} per window ({self.relative_change.value:+.0%}) "
            f"since {self.regime.onset:%Y-%m-%d %H:%M} UTC"
        )


def describe_measure(metric: MetricBase) -> tuple[str, str, str]:
    """(numerator, denominator, unit) in words, from the metric definition."""

    def part(measure: object) -> str:
        events = ", ".join(getattr(measure, "events", None) or []) or "all events"
        agg = getattr(measure, "agg", None) or "count"
        value = getattr(measure, "value", None)
        where = getattr(measure, "where", None) or []
        text = f"{agg}({value})" if value else "count"
        text += f" of [{events}]"
        if where:
            text += " where " + " and ".join(f"{p.field} {p.op} {p.value}" for p in where)
        return text

    numerator = getattr(metric, "numerator", None)
    denominator = getattr(metric, "denominator", None)
    if numerator is not None and denominator is not None:
        unit = "rate" if metric.type == "ratio" else metric.type
        return part(numerator), part(denominator), unit
    return part(metric), "per window", metric.type


def is_proportion(num: float, den: float) -> bool:
    return den > 0 and 0 <= num <= den


def compare(
    base_num: float,
    base_den: float,
    cur_num: float,
    cur_den: float,
    base_buckets: np.ndarray | None = None,
    cur_buckets: np.ndarray | None = None,
) -> tuple[Estimate, Estimate, Estimate, Estimate, float]:
    """Baseline, current, absolute and relative change with 95% intervals, and the p-value."""
    if (
        is_proportion(base_num, base_den)
        and is_proportion(cur_num, cur_den)
        and base_den >= 1 <= cur_den
    ):
        result = two_proportion_z_test(
            MeanStats.from_proportion(base_den, base_num),
            MeanStats.from_proportion(cur_den, cur_num),
        )
    else:
        base = MeanStats.from_values(
            base_buckets if base_buckets is not None else [base_num / max(base_den, 1e-12)]
        )
        cur = MeanStats.from_values(
            cur_buckets if cur_buckets is not None else [cur_num / max(cur_den, 1e-12)]
        )
        result = welch_t_test(base, cur)
    b, c = float(result.control.mean), float(result.treatment.mean)
    vb, vc = float(result.control.variance_of_mean), float(result.treatment.variance_of_mean)
    a, r = result.absolute, result.relative
    return (
        Estimate(b, b - 1.96 * np.sqrt(vb), b + 1.96 * np.sqrt(vb)),
        Estimate(c, c - 1.96 * np.sqrt(vc), c + 1.96 * np.sqrt(vc)),
        Estimate(float(a.estimate), float(a.ci_low), float(a.ci_high)),
        Estimate(float(r.estimate), float(r.ci_low), float(r.ci_high)),
        float(a.p_value),
    )


def residual_z(series: Series, expected_rate: np.ndarray | float, *, additive: bool) -> np.ndarray:
    """Standardised residual per bucket (see module docstring); 0 where nothing happened."""
    num, den = series.numerator, series.denominator
    if additive:
        e = np.asarray(expected_rate, dtype=float) * den
        raw = (num - e) / np.sqrt(np.maximum(e, 1.0))
        dispersion = max(float(np.median(raw**2)) / 0.455, 1.0)
        return raw / np.sqrt(dispersion)
    p = np.clip(np.asarray(expected_rate, dtype=float), 1e-4, 1 - 1e-4)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (num - p * den) / np.sqrt(den * p * (1 - p))
    return np.where(den > 0, np.clip(z, -25, 25), 0.0)


def locate_regime(
    starts: Sequence[datetime], z: np.ndarray, at: datetime, *, bucket: timedelta = BUCKET
) -> Regime:
    """Onset (last change before ``at``), end (recovery after it, if seen) and shape.

    The recovery is the change after ``at`` past which the residuals fall to under half
    their level inside the regime. When the strongest change after the onset is instead a
    *later, different* episode (another drop within the look-ahead), the search repeats
    before it, so that two incidents hours apart are not merged into one regime.
    """
    ts = np.array([int(s.timestamp()) for s in starts], dtype=np.int64)
    at_index = int(np.searchsorted(ts, at.timestamp(), side="right"))
    at_index = min(max(at_index, 5), ts.size)
    onset = locate_onset(ts[:at_index], z[:at_index])
    onset_index = int(np.searchsorted(ts, onset.timestamp))
    during = z[onset_index:at_index]
    level = float(during.mean()) if during.size else 0.0
    end_index = ts.size
    recovered = False
    stop = ts.size
    while stop - onset_index >= 6:
        tail = locate_onset(ts[onset_index:stop], z[onset_index:stop])
        split = int(np.searchsorted(ts, tail.timestamp))
        inside, after = z[onset_index:split], z[split:stop]
        if split < at_index - 1 or after.size < 3 or inside.size < 1:
            break
        if abs(after.mean()) < abs(inside.mean()) / 2:
            end_index, recovered = split, True
            level = float(inside.mean())
            break
        stop = split  # what follows the split is another episode: look before it
    regime = z[max(onset_index - 12, 0) : end_index]
    shape, evidence = _shape(regime, min(12, onset_index))
    end = starts[end_index - 1] + bucket if end_index else starts[-1] + bucket
    return Regime(
        datetime.fromtimestamp(int(ts[onset_index]), UTC), end, recovered, shape, level, evidence
    )


def _shape(z: np.ndarray, onset_offset: int) -> tuple[str, str]:
    """Step (two levels) vs ramp (flat, then linear from the onset): residual sums of squares."""
    n = z.size
    if n - onset_offset < 3:
        return "step", "too few points after the onset to tell a trend from a step"
    x = np.arange(n, dtype=float)
    step = np.where(x >= onset_offset, 1.0, 0.0)
    ramp = np.maximum(x - onset_offset + 1, 0.0)

    def sse(column: np.ndarray) -> float:
        design = np.column_stack([np.ones(n), column])
        coef, *_ = np.linalg.lstsq(design, z, rcond=None)
        return float(((z - design @ coef) ** 2).sum())

    s_step, s_ramp = sse(step), sse(ramp)
    shape = "gradual" if s_ramp < 0.8 * s_step else "step"
    return shape, f"residual sum of squares: step {s_step:.1f}, linear trend {s_ramp:.1f}"


def heatmap_table(
    baseline: LeafTable, current: LeafTable, *, additive: bool
) -> tuple[DimensionChange, ...]:
    """The change by every value of every dimension (one row per dimension value)."""
    base_total_num, cur_total_num = baseline.numerator.sum(), current.numerator.sum()
    base_total_den = (
        baseline.denominator.sum()
        if not additive
        else float(baseline.denominator[0])
        if baseline.size
        else 1.0
    )
    cur_total_den = (
        current.denominator.sum()
        if not additive
        else float(current.denominator[0])
        if current.size
        else 1.0
    )
    overall_base = base_total_num / base_total_den if base_total_den else 0.0
    overall_cur = cur_total_num / cur_total_den if cur_total_den else 0.0
    rows = []
    for name in current.columns:
        base_m, cur_m = baseline.marginal(name), current.marginal(name)
        for value in sorted(set(base_m) | set(cur_m)):
            bn, bd = base_m.get(value, (0.0, 0.0))
            cn, cd = cur_m.get(value, (0.0, 0.0))
            if additive:
                b, c = bn / base_total_den, cn / cur_total_den
                contribution = (
                    (c - b) / (overall_cur - overall_base) if overall_cur != overall_base else 0.0
                )
                volume_b, volume_c = b, c
            else:
                b = bn / bd if bd else float("nan")
                c = cn / cd if cd else float("nan")
                # Rate effect of this value at current weights (mix-neutral decomposition).
                weight = cd / cur_total_den if cur_total_den else 0.0
                effect = weight * ((c if cd else 0.0) - (b if bd else overall_base))
                total = overall_cur - overall_base
                contribution = effect / total if total else 0.0
                volume_b, volume_c = bd, cd
            rows.append(
                DimensionChange(
                    name,
                    value,
                    float(b),
                    float(c),
                    float(c - b),
                    float(c / b - 1) if b and np.isfinite(b) and np.isfinite(c) else float("nan"),
                    float(volume_b),
                    float(volume_c),
                    float(contribution),
                )
            )
    return tuple(rows)


def define_problem(
    backend: BaseBackend,
    metric: MetricBase,
    current: Window,
    baselines: Sequence[Window],
    baseline_leaves: LeafTable,
    current_leaves: LeafTable,
    regime: Regime,
    *,
    segment: Mapping[str, str] | None = None,
) -> ProblemDefinition:
    """The problem statement for ``metric`` in ``current`` (leaf tables from :mod:`data`)."""
    additive = metric.type in ("count", "sum", "distinct")
    where = segment_where(segment or {}, baseline_leaves.dimensions)
    span = Window(min(b.start for b in baselines) if baselines else current.start, current.end)
    series = metric_series(backend, metric, span, where)
    starts = np.array([s.timestamp() for s in series.starts])
    in_current = (starts >= current.start.timestamp()) & (starts < current.end.timestamp())
    in_base = np.zeros(starts.size, dtype=bool)
    for b in baselines:
        in_base |= (starts >= b.start.timestamp()) & (starts < b.end.timestamp())
    bn, bd = baseline_leaves.numerator.sum(), baseline_leaves.denominator.sum()
    cn, cd = current_leaves.numerator.sum(), current_leaves.denominator.sum()
    if additive:
        bd, cd = float(len(baselines) or 1), 1.0
        per_bucket = series.numerator
        base_buckets, cur_buckets = per_bucket[in_base], per_bucket[in_current]
        scale = float(in_current.sum())
        b_est, c_est, a_est, r_est, p = compare(
            bn, bd, cn, cd, base_buckets * scale, cur_buckets * scale
        )
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            rates = series.numerator / series.denominator
        b_est, c_est, a_est, r_est, p = compare(
            bn,
            bd,
            cn,
            cd,
            rates[in_base & (series.denominator > 0)],
            rates[in_current & (series.denominator > 0)],
        )
    # Observed vs expected around the regime, for the report's plot.
    window = (starts >= (regime.onset - ONSET_LOOKBACK).timestamp()) & (
        starts < (regime.end + timedelta(hours=3)).timestamp()
    )
    expected = np.full(starts.size, bn / bd if bd else 0.0)
    observed = np.where(
        series.denominator > 0, series.numerator / np.maximum(series.denominator, 1e-12), np.nan
    )
    numerator, denominator, unit = describe_measure(metric)
    return ProblemDefinition(
        metric=metric.name,
        description=metric.description or "",
        metric_type=metric.type,
        numerator=numerator,
        denominator=denominator,
        unit=unit,
        current=current,
        baselines=tuple(baselines),
        baseline_value=b_est,
        current_value=c_est,
        absolute_change=a_est,
        relative_change=r_est,
        p_value=p,
        regime=regime,
        series_starts=tuple(s for s, keep in zip(series.starts, window, strict=True) if keep),
        series_observed=tuple(float(x) for x in observed[window]),
        series_expected=tuple(float(x) for x in expected[window]),
        by_dimension=heatmap_table(baseline_leaves, current_leaves, additive=additive),
    )
