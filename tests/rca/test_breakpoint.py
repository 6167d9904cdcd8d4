"""Funnel breakpoint: step-wise tests and the named step."""

from __future__ import annotations

import numpy as np

from tripwire.rca.breakpoint import name_breakpoint, step_changes

STEPS = ("utterance", "auth", "payment", "order")


def test_the_step_whose_conditional_conversion_fell_is_named():
    baseline = np.array([10000.0, 9000, 8730, 8600])
    current = np.array([1000.0, 900, 540, 530])
    steps = step_changes(baseline, current, STEPS)
    assert [s.step for s in steps] == ["auth", "payment", "order"]
    payment = steps[1]
    assert (
        round(payment.baseline_conversion, 2) == 0.97
        and round(payment.current_conversion, 2) == 0.6
    )
    assert payment.ci_low < payment.absolute < payment.ci_high < 0
    assert name_breakpoint(steps) == "payment"


def test_no_step_is_named_when_the_funnel_is_flat():
    baseline = np.array([10000.0, 9000, 8730, 8600])
    assert name_breakpoint(step_changes(baseline, baseline / 10, STEPS)) is None
