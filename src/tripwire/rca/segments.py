"""Step 3 — localize: which dimension-value combinations explain the change.

Two views of the same deviation are localized with :mod:`tripwire.rca.localize`:

* **the metric itself** — its numerator per leaf against the baseline (counts: the
  baseline per-window average; ratios: the baseline rate times the current denominator,
  :func:`~tripwire.rca.localize.localize_ratio`);
* **each step of the related funnel** — ``P(step k | step k−1)`` per leaf. A break deep in
  a funnel (97% → 60% at payment in a 4% segment) is a weak signal in end-to-end
  conversion but a strong one in the step's own conditional conversion, whose baseline
  variance is small. This is how thin segments are still found.

The verdict keeps the strongest localized view (largest |z| of its top element); a global
or no-change verdict of the metric is kept when no view localizes (no invented cause).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from tripwire.rca.data import FunnelCounts, LeafTable, dimension_label
from tripwire.rca.localize import (
    GLOBAL,
    INSUFFICIENT_DATA,
    LOCALIZED,
    NO_CHANGE,
    Localization,
    RootCauseElement,
    localize,
    localize_ratio,
)
from tripwire.stats.exact import poisson_ratio_exact_tail, two_proportion_exact_tail

#: Family-wise false-cause rate of one investigation's views (metric + funnel steps):
#: each view's elements are confirmed at this level divided by its candidates.
CONFIRM_ALPHA = 0.01


@dataclass(frozen=True)
class SegmentFinding:
    """One localization: what was localized (the metric or a funnel step) and the result."""

    measure: str  # "metric" or "step:<name>"
    localization: Localization

    @property
    def strength(self) -> float:
        if self.localization.verdict != LOCALIZED:
            return 0.0
        return max(abs(e.z_score) for e in self.localization.elements)

    @property
    def segments(self) -> tuple[dict[str, str], ...]:
        return tuple(dict(e.conditions) for e in self.localization.elements)


@dataclass(frozen=True)
class SegmentResult:
    """The chosen localization and every view that was tried."""

    verdict: str
    chosen: SegmentFinding
    findings: tuple[SegmentFinding, ...]

    @property
    def segments(self) -> tuple[dict[str, str], ...]:
        return self.chosen.segments if self.verdict == LOCALIZED else ()


def _confirmed(
    result: Localization,
    columns: Mapping[str, list[str]],
    current: tuple[np.ndarray, np.ndarray],
    baseline: tuple[np.ndarray, np.ndarray],
    *,
    proportion: bool,
    alpha: float = CONFIRM_ALPHA,
) -> Localization:
    """The thin-data guard: keep only elements whose deviation is significant given their volume.

    The localizer's z bound uses a normal approximation and treats the baseline as known;
    both fail for thin segments (one failure out of one trial at a 97% step is z ≈ −5.7,
    and a segment with 10 baseline sessions has a noisy baseline rate). Each element is
    re-tested *exactly against its own baseline sample*, one-sided in the direction it
    moved, at a Bonferroni level over every candidate cell the localizer scored:

    * a proportion (numerator ≤ denominator): Fisher's exact test of the segment's current
      vs baseline successes/trials (:func:`tripwire.stats.exact.two_proportion_exact_tail`);
    * a count: the conditional binomial test of the current count vs the baseline count
      over its windows (:func:`tripwire.stats.exact.poisson_ratio_exact_tail`).

    Counts are deflated by the segment's dispersion under the localizer's fitted noise
    model (:func:`_segment_dispersion`), so over-dispersed data needs proportionally more
    evidence. ``current``/``baseline`` are per-leaf
    (numerator, denominator) arrays aligned with ``columns`` (for counts the denominator
    is the number of windows). No element left → no localized cause: ``global`` when the
    whole population moved (|z| ≥ 3), else ``insufficient_data``.
    """
    if result.verdict != LOCALIZED:
        return result
    bound = alpha / max(result.candidates_scored, 1)
    arrays = {k: np.asarray(v, dtype=object) for k, v in columns.items()}
    size = len(current[0])
    kept = []
    for element in result.elements:
        mask = np.ones(size, dtype=bool)
        for key, value in element.conditions.items():
            mask &= arrays[key] == value
        num, den = float(current[0][mask].sum()), float(current[1][mask].sum())
        base_num, base_den = float(baseline[0][mask].sum()), float(baseline[1][mask].sum())
        if proportion:
            phi = _segment_dispersion(element, den, den / base_den if base_den else 1.0)
            tail = two_proportion_exact_tail(num, den, base_num, base_den, dispersion=phi)
        else:
            windows = float(baseline[1][mask].max()) if mask.any() else 1.0
            phi = _segment_dispersion(element, None, 1.0 / max(windows, 1.0))
            tail = poisson_ratio_exact_tail(num, 1.0, base_num, windows, dispersion=phi)
        if float(tail) < bound:
            kept.append(element)
    if not kept:
        # A deviation of the whole population is global; otherwise the candidates were
        # simply too thin to support a cause ("no localized cause / insufficient data").
        return Localization(
            GLOBAL if abs(result.total_z) >= 3 else INSUFFICIENT_DATA,
            (),
            result.total_expected,
            result.total_observed,
            result.total_z,
            0.0,
            result.dispersion,
            result.candidates_scored,
        )
    return replace(
        result, elements=tuple(kept), explained_share=sum(e.share_of_error_explained for e in kept)
    )


def _segment_dispersion(element: RootCauseElement, trials: float | None, share: float) -> float:
    """Over-dispersion of a segment beyond the sampling noise of both of its samples.

    The localizer reports the segment's fitted noise variance (``a·w + b·f²`` summed over
    its leaves). The exact two-sample tests already account for the
    sampling noise of the current sample *and* of the baseline the expectation came from:
    ``E·(1 − E/n)·(1 + n/n₀)`` for a proportion, ``E·(1 + t/t₀)`` for a count, where
    ``share`` is ``n/n₀`` (``t/t₀``). The ratio of the two, floored at 1, is the extra
    dispersion (correlated units, day-to-day variation) the test must still absorb.
    """
    if element.expected <= 0:
        return 1.0
    noise = element.noise_variance
    if noise <= 0:
        if element.z_score == 0:
            return 1.0
        noise = ((element.observed - element.expected) / element.z_score) ** 2
    sampling = element.expected * (1.0 + share)
    if trials is not None and trials > 0:
        sampling *= max(1.0 - element.expected / trials, 1e-9)
    return max(noise / sampling, 1.0)


def localize_metric(
    baseline: LeafTable,
    current: LeafTable,
    *,
    additive: bool,
    max_depth: int = 3,
    alpha: float = CONFIRM_ALPHA,
) -> Localization:
    """Localize the metric's deviation (leaf tables over the same dimensions).

    Elements are kept only when the thin-data guard (:func:`_confirmed`) confirms them at
    family-wise level ``alpha``; a ratio that is not a proportion (e.g. revenue per
    session) has no exact test and keeps the localizer's own surprise bound.
    """
    base, cur = baseline.aligned(current)
    columns = {k: list(v) for k, v in cur.columns.items()}
    if cur.size == 0:
        return Localization(NO_CHANGE, (), 0.0, 0.0, 0.0, 0.0, 1.0, 0)
    if additive:
        # Leaves absent from the baseline have a zero denominator after alignment.
        windows = float(base.denominator.max()) if base.size and base.denominator.max() else 1.0
        expected = base.numerator / windows
        result = localize(columns, cur.numerator, expected, max_depth=max_depth)
        return _confirmed(
            result,
            columns,
            (cur.numerator, np.ones(cur.size)),
            (base.numerator, np.full(base.size, windows)),
            proportion=False,
            alpha=alpha,
        )
    result = localize_ratio(
        columns,
        cur.numerator,
        cur.denominator,
        base.numerator,
        base.denominator,
        max_depth=max_depth,
    )  # type: ignore[arg-type]
    proportion = bool(
        np.all(cur.numerator <= cur.denominator + 1e-9)
        and np.all(base.numerator <= base.denominator + 1e-9)
    )
    if not proportion:
        return result
    return _confirmed(
        result,
        columns,
        (cur.numerator, cur.denominator),
        (base.numerator, base.denominator),
        proportion=True,
        alpha=alpha,
    )


def localize_steps(
    baseline: FunnelCounts,
    current: FunnelCounts,
    *,
    max_depth: int = 2,
    alpha: float = CONFIRM_ALPHA,
) -> list[SegmentFinding]:
    """Localize the conditional conversion of every funnel step (from step 2).

    The steps share the family-wise level ``alpha`` (Bonferroni over steps), so looking at
    six steps does not multiply the chance of an invented cause.
    """
    base_keys = list(zip(*baseline.columns.values(), strict=True)) if baseline.columns else []
    cur_keys = list(zip(*current.columns.values(), strict=True)) if current.columns else []
    union = sorted(set(base_keys) | set(cur_keys))
    if not union:
        return []
    index = {k: i for i, k in enumerate(union)}
    steps = len(current.steps)
    base = np.zeros((len(union), steps))
    cur = np.zeros((len(union), steps))
    np.add.at(base, [index[k] for k in base_keys], baseline.entered)
    np.add.at(cur, [index[k] for k in cur_keys], current.entered)
    columns = {name: [k[j] for k in union] for j, name in enumerate(current.columns)}
    out = []
    for k in range(1, steps):
        if cur[:, k - 1].sum() == 0 or base[:, k - 1].sum() == 0:
            continue
        result = localize_ratio(
            columns, cur[:, k], cur[:, k - 1], base[:, k], base[:, k - 1], max_depth=max_depth
        )  # type: ignore[arg-type]
        result = _confirmed(
            result,
            columns,
            (cur[:, k], cur[:, k - 1]),
            (base[:, k], base[:, k - 1]),
            proportion=True,
            alpha=alpha / max(steps - 1, 1),
        )
        out.append(SegmentFinding(f"step:{current.steps[k]}", result))
    return out


#: One-sided level at which the metric must have moved inside a step view's segment (the
#: step view itself already passed the thin-data guard; this only asks that the break shows
#: in the metric too).
SEGMENT_MOVED_ALPHA = 0.05


def metric_moved_in(
    baseline: LeafTable, current: LeafTable, *, additive: bool
) -> Callable[[Mapping[str, str], float], bool]:
    """A check that the metric itself moved, in a direction, inside a given segment.

    Used by :func:`choose` for a funnel-step view whose segment is too small to move the
    metric overall: the step's break must still show in the metric *within that segment*
    (exact one-sided test against the segment's own baseline at ``SEGMENT_MOVED_ALPHA``;
    the segment was picked by the step view, so one test is made per view). Conditions on
    dimensions the metric does not have make the check fail.
    """
    base, cur = baseline.aligned(current)
    windows = float(base.denominator.max()) if base.size and base.denominator.max() else 1.0

    def moved(segment: Mapping[str, str], direction: float) -> bool:
        if cur.size == 0 or any(dimension_label(k) not in cur.columns for k in segment):
            return False
        mask = cur.select(segment)
        num, den = float(cur.numerator[mask].sum()), float(cur.denominator[mask].sum())
        base_num, base_den = float(base.numerator[mask].sum()), float(base.denominator[mask].sum())
        if additive:
            expected = base_num / windows
            tail = poisson_ratio_exact_tail(num, 1.0, base_num, windows)
        else:
            if den <= 0 or base_den <= 0 or num > den or base_num > base_den:
                return False
            expected = den * base_num / base_den
            tail = two_proportion_exact_tail(num, den, base_num, base_den)
        return bool(np.sign(num - expected) == direction and float(tail) < SEGMENT_MOVED_ALPHA)

    return moved


def choose(
    metric_finding: SegmentFinding,
    step_findings: list[SegmentFinding],
    segment_moved: Callable[[Mapping[str, str], float], bool] | None = None,
) -> SegmentResult:
    """Keep the strongest localized view; the metric's own verdict when none localizes.

    A step view is used only when its segments moved in the metric's direction and the
    metric moved too: overall (verdict localized/global, or |z| ≥ 1), or — for a break in
    a segment too small to move the total — inside the step's top segment
    (``segment_moved``, see :func:`metric_moved_in`). A step that localizes while the
    metric did not move is not the metric's problem.
    """
    candidates = [metric_finding]
    overall = metric_finding.localization
    moved_overall = overall.verdict in (LOCALIZED, GLOBAL) or abs(overall.total_z) >= 1
    direction = np.sign(overall.total_observed - overall.total_expected)
    for finding in step_findings:
        top = finding.localization.elements[0] if finding.localization.elements else None
        if top is None:
            continue
        step_direction = float(np.sign(top.observed - top.expected))
        if (
            moved_overall
            and step_direction == direction
            or segment_moved is not None
            and segment_moved(top.conditions, step_direction)
        ):
            candidates.append(finding)
    best = max(candidates, key=lambda f: f.strength)
    if best.strength == 0.0:
        verdict = metric_finding.localization.verdict
        return SegmentResult(verdict, metric_finding, (metric_finding, *step_findings))
    return SegmentResult(LOCALIZED, best, (metric_finding, *step_findings))


def describe(segment: Mapping[str, str]) -> str:
    return " × ".join(f"{k}={v}" for k, v in segment.items()) or "(all)"


__all__ = [
    "GLOBAL",
    "INSUFFICIENT_DATA",
    "LOCALIZED",
    "NO_CHANGE",
    "SegmentFinding",
    "SegmentResult",
    "choose",
    "describe",
    "localize_metric",
    "localize_steps",
    "metric_moved_in",
]
