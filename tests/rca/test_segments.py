"""Localization views: funnel steps, exact confirmation of thin segments, the choice."""

from __future__ import annotations

import numpy as np

from tripwire.rca.data import FunnelCounts, LeafTable
from tripwire.rca.localize import INSUFFICIENT_DATA, LOCALIZED, NO_CHANGE, Localization
from tripwire.rca.segments import (
    SegmentFinding,
    choose,
    localize_metric,
    localize_steps,
    metric_moved_in,
)

STEPS = ("start", "auth", "payment", "order")
LOCALES = ["en-GB", "en-US", "de-DE", "fr-FR"]
DEVICES = ["Echo Show", "Echo Dot", "web", "mobile app"]


def _funnel(
    rng: np.random.Generator, n: int, payment_ok: dict[tuple[str, str], float]
) -> FunnelCounts:
    keys = [(loc, dev) for loc in LOCALES for dev in DEVICES]
    rows = []
    for key in keys:
        start = n
        auth = rng.binomial(start, 0.9)
        paid = rng.binomial(auth, payment_ok.get(key, 0.97))
        order = rng.binomial(paid, 0.99)
        rows.append([start, auth, paid, order])
    columns = {
        "locale": np.array([k[0] for k in keys], dtype=object),
        "device": np.array([k[1] for k in keys], dtype=object),
    }
    return FunnelCounts(STEPS, ("locale", "device"), columns, np.array(rows, dtype=float))


def test_a_step_break_in_one_segment_is_localized_on_that_step():
    rng = np.random.default_rng(1)
    baseline = _funnel(rng, 2000, {})
    current = _funnel(rng, 300, {("en-GB", "Echo Show"): 0.6})
    findings = {f.measure: f for f in localize_steps(baseline, current)}
    payment = findings["step:payment"].localization
    assert payment.verdict == LOCALIZED
    assert [e.conditions for e in payment.elements] == [{"locale": "en-GB", "device": "Echo Show"}]
    assert findings["step:auth"].localization.verdict == NO_CHANGE


def test_a_single_failed_trial_at_a_97pct_step_is_not_a_cause():
    rng = np.random.default_rng(2)
    baseline = _funnel(rng, 2000, {})
    current = _funnel(rng, 1, {})
    # one leaf with one trial that failed: z ≈ −5.7 under the normal approximation
    current.entered[0] = [1, 1, 0, 0]
    findings = {f.measure: f for f in localize_steps(baseline, current)}
    assert findings["step:payment"].localization.verdict != LOCALIZED


def test_metric_view_for_counts_uses_the_per_window_baseline():
    cols = {"locale": np.array(LOCALES, dtype=object)}
    baseline = LeafTable(("locale",), cols, np.array([700.0, 7000, 7000, 7000]), np.full(4, 7.0))
    current = LeafTable(("locale",), cols, np.array([20.0, 1010, 990, 1000]), np.ones(4))
    result = localize_metric(baseline, current, additive=True)
    assert result.verdict == LOCALIZED
    assert result.elements[0].conditions == {"locale": "en-GB"}


def _finding(
    measure: str, verdict: str, z: float, observed: float, expected: float
) -> SegmentFinding:
    from tripwire.rca.localize import RootCauseElement

    elements = (
        (
            RootCauseElement(
                {"locale": "en-GB"}, expected, observed, observed / expected - 1, 1.0, 0.9, z, 1
            ),
        )
        if verdict == LOCALIZED
        else ()
    )
    return SegmentFinding(
        measure, Localization(verdict, elements, expected, observed, z, 0.9, 1.0, 10)
    )


def test_choose_ignores_step_views_when_the_metric_did_not_move():
    metric = _finding("metric", NO_CHANGE, 0.2, 100, 100)
    step = _finding("step:payment", LOCALIZED, -8.0, 5, 10)
    assert choose(metric, [step]).verdict == NO_CHANGE


def test_choose_prefers_the_stronger_localized_view_in_the_metric_direction():
    metric = Localization(NO_CHANGE, (), 100.0, 90.0, -1.8, 0.0, 1.0, 10)
    step_down = _finding("step:payment", LOCALIZED, -8.0, 5, 10)
    step_up = _finding("step:cart", LOCALIZED, 12.0, 20, 10)
    result = choose(SegmentFinding("metric", metric), [step_up, step_down])
    assert result.verdict == LOCALIZED and result.chosen.measure == "step:payment"


def _step_tables(
    segment_baseline: tuple[int, int], segment_current: tuple[int, int]
) -> tuple[LeafTable, LeafTable]:
    """A 97% step over 4 × 4 leaves; the en-GB × Echo Show leaf gets the given (ok, trials)."""
    rng = np.random.default_rng(9)
    keys = [(loc, dev) for loc in LOCALES for dev in DEVICES]
    cols = {
        "locale": np.array([k[0] for k in keys], dtype=object),
        "device": np.array([k[1] for k in keys], dtype=object),
    }
    base_den = np.full(len(keys), 3000.0)
    cur_den = np.full(len(keys), 400.0)
    base_num = rng.binomial(3000, 0.97, len(keys)).astype(float)
    cur_num = rng.binomial(400, 0.97, len(keys)).astype(float)
    base_num[0], base_den[0] = segment_baseline
    cur_num[0], cur_den[0] = segment_current
    return (
        LeafTable(("locale", "device"), cols, base_num, base_den),
        LeafTable(("locale", "device"), cols, cur_num, cur_den),
    )


def test_thin_data_guard_needs_significance_against_the_segments_own_baseline():
    # 2 of 6 now vs 8 of 8 before: z ≈ −9 against the (shrunk) baseline rate, and even a
    # known-p binomial tail is 1e-5 — but the segment's own baseline is 8 trials: Fisher's
    # exact p = 0.015, not significant over the candidates. No cause is invented.
    thin = localize_metric(*_step_tables((8, 8), (2, 6)), additive=False)
    assert thin.verdict == INSUFFICIENT_DATA and thin.elements == ()
    # The same drop with a real baseline and more current trials is confirmed.
    dense = localize_metric(*_step_tables((291, 300), (20, 60)), additive=False)
    assert dense.verdict == LOCALIZED
    assert dense.elements[0].conditions == {"locale": "en-GB", "device": "Echo Show"}


def test_thin_data_guard_on_counts_uses_the_baseline_windows():
    cols = {"locale": np.array(LOCALES, dtype=object)}
    # en-GB: 7 events over 7 baseline windows, 0 now: Poisson-unremarkable (p ≈ 0.35)
    baseline = LeafTable(("locale",), cols, np.array([7.0, 7000, 7000, 7000]), np.full(4, 7.0))
    current = LeafTable(("locale",), cols, np.array([0.0, 1010, 990, 1000]), np.ones(4))
    assert localize_metric(baseline, current, additive=True).elements == ()


def test_a_step_break_too_small_to_move_the_metric_counts_when_the_metric_moved_in_its_segment():
    metric = _finding("metric", NO_CHANGE, 0.2, 1000, 1002)
    step = _finding("step:payment", LOCALIZED, -9.0, 41, 63)  # segment: locale=en-GB
    cols = {"locale": np.array(LOCALES, dtype=object)}
    baseline = LeafTable(("locale",), cols, np.array([300.0, 3000, 3000, 3000]), np.full(4, 1e4))
    moved_now = LeafTable(("locale",), cols, np.array([10.0, 300, 300, 300]), np.full(4, 1e3))
    flat_now = LeafTable(("locale",), cols, np.array([30.0, 300, 300, 300]), np.full(4, 1e3))
    moved = metric_moved_in(baseline, moved_now, additive=False)
    assert choose(metric, [step], moved).chosen.measure == "step:payment"
    flat = metric_moved_in(baseline, flat_now, additive=False)
    assert choose(metric, [step], flat).verdict == NO_CHANGE
