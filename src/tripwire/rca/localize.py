"""Multi-dimensional root-cause localization: which segments explain a KPI's deviation.

Input: one row per *leaf* (a full combination of dimension values, e.g. locale × device ×
intent × payment × tenure) with the observed value ``v`` and the expected value ``f`` (the
baseline or forecast). For a ratio metric (conversion = orders / sessions) the additive
quantity is the numerator and the expectation is the baseline rate times the *observed*
denominator, so a traffic-mix shift is not mistaken for a rate change
(:func:`localize_ratio`).

Method — the generalised ripple effect (Li et al., "Generic and Robust Localization of
Multi-Dimensional Root Causes", ISSRE 2019, *Squeeze*; Kalander, "RiskLoc", 2022): when a
segment ``S`` breaks, every leaf inside it deviates by roughly the same ratio
``r_S = Σ_S v / Σ_S f`` while leaves outside stay near their expectation. A candidate
explanation is scored by how much of the leaf-level error it removes:

    E0 = Σ_leaves |v − f|,   gain(S) = Σ_{leaf ∈ S} (|v − f| − |v − r_S·f|),

so a segment scores high only when it contains the deviating leaves *and* they moved
together (a parent that mixes broken and healthy children fits worse than the broken child;
a child of a broken parent explains only its share). Candidates are the cells of every
cuboid up to ``max_depth`` dimensions (HotSpot's search space, Sun et al., IEEE Access
2018), evaluated vectorised per cuboid. The search is greedy: take the best cell, preferring
a coarser ancestor that explains nearly as much (parsimony), fold its ratio into the
expectation, and repeat on the residual for several simultaneous causes.

A cell must also be *surprising*: its aggregate deviation ``z = (Σv − Σf) / sqrt(φ Σw)`` must
exceed a Bonferroni bound over all candidate cells, where ``w`` is each leaf's variance
weight (``f`` for counts: quasi-Poisson; ``n·p·(1−p)`` for a rate) and ``φ`` a robust
dispersion estimated from the leaves themselves (median of standardised squared residuals,
so noise and over-dispersion do not create causes). When the whole population moved by one
ratio (the depth-0 cell explains as much as the best segment), the verdict is "global":
no localized cause is invented.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, stats

GLOBAL = "global"
LOCALIZED = "localized"
NO_CHANGE = "no_change"
#: Candidate segments were found but none is significant given its volume (thin data).
INSUFFICIENT_DATA = "insufficient_data"


@dataclass(frozen=True)
class RootCauseElement:
    """One segment of the explanation, with its own before/after."""

    conditions: dict[str, str]
    expected: float
    observed: float
    relative_change: float
    share_of_change: float
    share_of_error_explained: float
    z_score: float
    leaves: int
    #: Fitted noise variance of the segment's total (Σσ² over its leaves; 0: unknown).
    noise_variance: float = 0.0

    @property
    def depth(self) -> int:
        return len(self.conditions)

    def label(self) -> str:
        return " × ".join(f"{k}={v}" for k, v in self.conditions.items()) or "(all)"


@dataclass(frozen=True)
class Localization:
    """The verdict and the smallest set of segments that explains the deviation."""

    verdict: str  # localized | global | no_change
    elements: tuple[RootCauseElement, ...]
    total_expected: float
    total_observed: float
    total_z: float
    explained_share: float
    dispersion: float  # noise variance relative to the Poisson/binomial variance
    candidates_scored: int

    @property
    def relative_change(self) -> float:
        if self.total_expected == 0:
            return 0.0
        return self.total_observed / self.total_expected - 1.0


def _encode(columns: Mapping[str, Sequence[str]]) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    names = list(columns)
    codes, labels = [], []
    for name in names:
        values, inverse = np.unique(
            np.asarray(columns[name], dtype=object).astype(str), return_inverse=True
        )
        codes.append(inverse.astype(np.int64))
        labels.append(values)
    return names, np.column_stack(codes) if codes else np.zeros((0, 0), np.int64), labels


def _cuboid_inverse(
    codes: np.ndarray, dims: tuple[int, ...], cards: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    key = np.zeros(codes.shape[0], dtype=np.int64)
    for d in dims:
        key = key * cards[d] + codes[:, d]
    cells, inverse = np.unique(key, return_inverse=True)
    return cells, inverse


def localize(
    columns: Mapping[str, Sequence[str]],
    observed: ArrayLike,
    expected: ArrayLike,
    *,
    variance_weight: ArrayLike | None = None,
    max_depth: int = 3,
    max_causes: int = 5,
    alpha: float = 0.001,
    min_error_share: float = 0.002,
    parsimony: float = 0.9,
) -> Localization:
    """Find the segments that explain why ``observed`` departs from ``expected``.

    ``columns`` maps each dimension to its value per leaf; ``observed``/``expected`` are the
    leaf values of an additive measure (counts, revenue). ``variance_weight`` defaults to
    ``expected`` (quasi-Poisson). See the module docstring for the method.

    >>> cols = {"locale": ["en-GB", "en-GB", "de-DE", "de-DE"],
    ...         "device": ["Echo Show", "web", "Echo Show", "web"]}
    >>> result = localize(cols, [400, 1000, 1010, 990], [1000, 1000, 1000, 1000])
    >>> result.verdict, [e.label() for e in result.elements]
    ('localized', ['locale=en-GB × device=Echo Show'])
    """
    v = np.asarray(observed, dtype=np.float64)
    f = np.asarray(expected, dtype=np.float64)
    if v.shape != f.shape or v.ndim != 1:
        raise ValueError("observed and expected must be 1-d arrays of the same length")
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(f))):
        raise ValueError("observed and expected must be finite")
    w = np.asarray(variance_weight, dtype=np.float64) if variance_weight is not None else np.abs(f)
    names, codes, labels = _encode(columns)
    if codes.shape[0] != v.shape[0]:
        raise ValueError(f"{codes.shape[0]} dimension rows for {v.shape[0]} leaves")
    cards = [len(values) for values in labels]
    w = np.maximum(w, 1e-9)

    noise = _noise_variance(v, f, w)
    dispersion = float(noise.sum() / w.sum())
    total_z = float((v.sum() - f.sum()) / np.sqrt(noise.sum()))
    cuboids = [
        dims
        for depth in range(1, min(max_depth, len(names)) + 1)
        for dims in itertools.combinations(range(len(names)), depth)
    ]
    groupings = {dims: _cuboid_inverse(codes, dims, cards) for dims in cuboids}
    candidates = sum(len(cells) for cells, _ in groupings.values())
    # Two statistics per cell (volume-weighted and ripple-score, see _cell_z): Bonferroni
    # over both as well as over the candidates.
    z_bound = float(stats.norm.isf(alpha / (4 * max(candidates, 1))))
    error0 = float(np.abs(v - f).sum())

    def summary(verdict: str, elements: list[RootCauseElement]) -> Localization:
        explained = sum(e.share_of_error_explained for e in elements)
        return Localization(
            verdict,
            tuple(elements),
            float(f.sum()),
            float(v.sum()),
            total_z,
            explained,
            dispersion,
            candidates,
        )

    if error0 == 0 or (
        abs(total_z) < z_bound and not _any_surprising(v, f, noise, groupings, z_bound)
    ):
        return summary(NO_CHANGE, [])

    # The whole population moving by one ratio is a global change, not a localized one.
    r_all = v.sum() / f.sum() if f.sum() else 1.0
    global_gain = float((np.abs(v - f) - np.abs(v - r_all * f)).sum())

    current = f.copy()
    chosen: list[RootCauseElement] = []
    for _ in range(max_causes):
        best = _best_cell(v, current, noise, groupings, z_bound, parsimony)
        if best is None:
            break
        dims, cell_index, gain, z, ratio = best
        if gain < min_error_share * error0:
            break
        _, inverse = groupings[dims]
        mask = inverse == cell_index
        conditions = {names[d]: str(labels[d][codes[mask][0, d]]) for d in dims}
        chosen.append(
            RootCauseElement(
                conditions=conditions,
                expected=float(f[mask].sum()),
                observed=float(v[mask].sum()),
                relative_change=float(v[mask].sum() / f[mask].sum() - 1.0)
                if f[mask].sum()
                else 0.0,
                share_of_change=float((v[mask].sum() - f[mask].sum()) / (v.sum() - f.sum()))
                if v.sum() != f.sum()
                else 0.0,
                share_of_error_explained=gain / error0,
                z_score=z,
                leaves=int(mask.sum()),
                noise_variance=float(noise[mask].sum()),
            )
        )
        current = np.where(mask, current * ratio, current)
    if not chosen:
        return summary(GLOBAL if abs(total_z) >= z_bound else NO_CHANGE, [])
    explained_gain = sum(e.share_of_error_explained for e in chosen) * error0
    if global_gain >= parsimony * explained_gain:
        return summary(GLOBAL, [])
    return summary(LOCALIZED, chosen)


def localize_ratio(
    columns: Mapping[str, Sequence[str]],
    numerator: ArrayLike,
    denominator: ArrayLike,
    baseline_numerator: ArrayLike,
    baseline_denominator: ArrayLike,
    **options: float,
) -> Localization:
    """Localize a change in a rate (Σ numerator / Σ denominator), e.g. conversion.

    Each leaf's expected numerator is its baseline rate times its observed denominator, so
    a segment whose traffic grew or shrank but converts as before is not blamed; the
    variance weight is binomial, ``n·p·(1−p)``. Leaves with no baseline use the overall
    baseline rate.
    """
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    base_num = np.asarray(baseline_numerator, dtype=np.float64)
    base_den = np.asarray(baseline_denominator, dtype=np.float64)
    overall = base_num.sum() / base_den.sum() if base_den.sum() else 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(base_den > 0, base_num / np.where(base_den > 0, base_den, 1.0), overall)
    # Shrink thin leaves' baseline rates toward the overall rate (a beta prior worth 20 trials).
    prior = 20.0
    rate = (rate * base_den + overall * prior) / (base_den + prior)
    expected = rate * den
    weight = np.maximum(den * rate * (1.0 - rate), 1e-9)
    return localize(columns, num, expected, variance_weight=weight, **options)  # type: ignore[arg-type]


def _noise_variance(v: np.ndarray, f: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-leaf noise variance ``σ²_i = a·w_i + b·f_i²``, fitted robustly from the leaves.

    Count noise grows like ``w`` (Poisson/binomial); forecast error grows like ``f²`` (a
    relative error). Both coefficients come from the median squared residual within
    quantile bins of ``f`` (divided by 0.455, the median of χ²₁, for consistency), fitted by
    non-negative least squares — medians, so the anomalous minority does not inflate the
    noise. ``a`` is floored at 1 so the sampling noise of counts is never understated.
    """
    squared = (v - f) ** 2
    order = np.argsort(f)
    bins = np.array_split(order, min(12, max(1, f.size // 20)))
    rows, target = [], []
    for members in bins:
        if members.size == 0:
            continue
        rows.append([float(np.median(w[members])), float(np.median(f[members]) ** 2)])
        target.append(float(np.median(squared[members])) / stats.chi2.median(1))
    coefficients, _ = optimize.nnls(np.asarray(rows), np.asarray(target))
    a = max(float(coefficients[0]), 1.0)
    b = float(coefficients[1])
    return a * w + b * f**2


def _cell_sums(inverse: np.ndarray, count: int, *arrays: np.ndarray) -> list[np.ndarray]:
    return [np.bincount(inverse, weights=a, minlength=count) for a in arrays]


def _cell_z(inverse: np.ndarray, count: int, v, f, noise) -> np.ndarray:
    """Per cell, the larger in size of two standardised deviations (signed).

    * volume-weighted: ``Σ(v − f) / sqrt(Σσ²)`` — the aggregate deviation; sees a segment
      whose expectation is ~0 (a new segment) and is the score test under count noise;
    * ripple score: ``Σ(v − f)·f/σ² / sqrt(Σf²/σ²)`` — the score test of "every leaf of the
      cell moved by the same ratio" under the fitted noise ``σ²``. Under relative
      (forecast) noise it weighs each leaf's *relative* deviation equally, so a cell of
      many small leaves that all moved together is not drowned by one big noisy leaf.

    Both are N(0, 1) without a change; the caller's bound is Bonferroni over the two.
    """
    dev = v - f
    sd, sn, score, info = _cell_sums(inverse, count, dev, noise, dev * f / noise, f * f / noise)
    with np.errstate(invalid="ignore", divide="ignore"):
        aggregate = np.where(sn > 0, sd / np.sqrt(np.where(sn > 0, sn, 1.0)), 0.0)
        ripple = np.where(info > 0, score / np.sqrt(np.where(info > 0, info, 1.0)), 0.0)
    return np.where(np.abs(ripple) > np.abs(aggregate), ripple, aggregate)


def _any_surprising(v, f, noise, groupings, z_bound) -> bool:
    for cells, inverse in groupings.values():
        if np.any(np.abs(_cell_z(inverse, len(cells), v, f, noise)) >= z_bound):
            return True
    return False


def _best_cell(v, f, noise, groupings, z_bound, parsimony):
    """The best-scoring surprising cell, preferring an ancestor that explains nearly as much.

    Returns ``(dims, cell index, gain, z, ratio)`` or None when no cell is surprising.
    """
    base_error = np.abs(v - f)
    per_cuboid: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    best: tuple[float, tuple[int, ...], int] | None = None
    for dims, (cells, inverse) in groupings.items():
        count = len(cells)
        sv, sf, se = _cell_sums(inverse, count, v, f, base_error)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(sf > 0, sv / np.where(sf > 0, sf, 1.0), 1.0)
        z = _cell_z(inverse, count, v, f, noise)
        fitted_error = np.bincount(inverse, weights=np.abs(v - ratio[inverse] * f), minlength=count)
        gain = np.where(np.abs(z) >= z_bound, se - fitted_error, -np.inf)
        per_cuboid[dims] = (gain, z, ratio)
        top = int(np.argmax(gain))
        if np.isfinite(gain[top]) and (best is None or gain[top] > best[0]):
            best = (float(gain[top]), dims, top)
    if best is None:
        return None
    best_gain, best_dims, best_index = best
    leaf = int(np.flatnonzero(groupings[best_dims][1] == best_index)[0])
    # Parsimony: the coarsest ancestor that explains nearly as much wins.
    for depth in range(1, len(best_dims)):
        options = []
        for dims in itertools.combinations(best_dims, depth):
            index = int(groupings[dims][1][leaf])
            gain = per_cuboid[dims][0][index]
            if gain >= parsimony * best_gain:
                options.append((gain, dims, index))
        if options:
            _, best_dims, best_index = max(options)
            break
    gain, z, ratio = (array[best_index] for array in per_cuboid[best_dims])
    return best_dims, best_index, float(gain), float(z), float(ratio)
