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

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from tripwire.rca.data import FunnelCounts, LeafTable
from tripwire.rca.localize import (
    GLOBAL,
    LOCALIZED,
    NO_CHANGE,
    Localization,
    localize,
    localize_ratio,
)


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
    trials: np.ndarray | None,
    *,
    alpha: float = 0.01,
) -> Localization:
    """Keep only elements whose deviation an exact test confirms (Bonferroni over candidates).

    The localizer's z bound uses a normal approximation, which is badly wrong for rates near
    0 or 1 in thin segments (one failure out of one trial at a 97% step is z ≈ −5.7). Each
    element is re-tested exactly: a binomial tail for a rate (``trials`` = the element's
    denominator, success probability = expected / trials), a Poisson tail for a count.
    """
    if result.verdict != LOCALIZED:
        return result
    bound = alpha / max(result.candidates_scored, 1)
    kept = []
    for element in result.elements:
        mask = np.ones(len(next(iter(columns.values()))), dtype=bool)
        for key, value in element.conditions.items():
            mask &= np.asarray(columns[key], dtype=object) == value
        observed, expected = round(element.observed), element.expected
        if trials is not None:
            n = int(round(float(trials[mask].sum())))
            p = min(max(expected / n, 1e-9), 1 - 1e-9) if n else 0.0
            tail = (
                stats.binom.cdf(observed, n, p)
                if observed < expected
                else stats.binom.sf(observed - 1, n, p)
            )
        else:
            tail = (
                stats.poisson.cdf(observed, expected)
                if observed < expected
                else stats.poisson.sf(observed - 1, expected)
            )
        if tail < bound:
            kept.append(element)
    if not kept:
        return Localization(
            NO_CHANGE if abs(result.total_z) < 3 else GLOBAL,
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


def localize_metric(
    baseline: LeafTable, current: LeafTable, *, additive: bool, max_depth: int = 3
) -> Localization:
    """Localize the metric's deviation (leaf tables over the same dimensions)."""
    base, cur = baseline.aligned(current)
    columns = {k: list(v) for k, v in cur.columns.items()}
    if cur.size == 0:
        return Localization(NO_CHANGE, (), 0.0, 0.0, 0.0, 0.0, 1.0, 0)
    if additive:
        windows = float(base.denominator[0]) if base.size and base.denominator[0] else 1.0
        # Shrink thin leaves toward their share of the total so one-off zeros are not causes.
        expected = base.numerator / windows
        return _confirmed(
            localize(columns, cur.numerator, expected, max_depth=max_depth), columns, None
        )
    result = localize_ratio(
        columns,
        cur.numerator,
        cur.denominator,
        base.numerator,
        base.denominator,
        max_depth=max_depth,
    )  # type: ignore[arg-type]
    proportion = bool(np.all(cur.numerator <= cur.denominator + 1e-9))
    return _confirmed(result, columns, cur.denominator) if proportion else result


def localize_steps(
    baseline: FunnelCounts, current: FunnelCounts, *, max_depth: int = 2
) -> list[SegmentFinding]:
    """Localize the conditional conversion of every funnel step (from step 2)."""
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
        result = _confirmed(result, columns, cur[:, k - 1])
        out.append(SegmentFinding(f"step:{current.steps[k]}", result))
    return out


def choose(metric_finding: SegmentFinding, step_findings: list[SegmentFinding]) -> SegmentResult:
    """Keep the strongest localized view; the metric's own verdict when none localizes.

    A step view is used only when the metric itself moved (its verdict is not
    ``no_change``) and the step's segments moved in the metric's direction — a step that
    localizes while the metric did not move is not the metric's problem.
    """
    candidates = [metric_finding]
    if (
        metric_finding.localization.verdict != NO_CHANGE
        or abs(metric_finding.localization.total_z) >= 1
    ):
        direction = np.sign(
            metric_finding.localization.total_observed - metric_finding.localization.total_expected
        )
        for finding in step_findings:
            top = finding.localization.elements[0] if finding.localization.elements else None
            if top is None or np.sign(top.observed - top.expected) != direction:
                continue
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
    "LOCALIZED",
    "NO_CHANGE",
    "SegmentFinding",
    "SegmentResult",
    "choose",
    "describe",
    "localize_metric",
    "localize_steps",
]
