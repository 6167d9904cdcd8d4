"""Localization views: funnel steps, exact confirmation of thin segments, the choice."""

from __future__ import annotations

import numpy as np

from tripwire.rca.data import FunnelCounts, LeafTable
from tripwire.rca.localize import LOCALIZED, NO_CHANGE, Localization
from tripwire.rca.segments import SegmentFinding, choose, localize_metric, localize_steps

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
