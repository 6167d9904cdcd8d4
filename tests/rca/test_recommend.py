"""Mitigations and the counterfactual check."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from tripwire.monitor.changes import Change
from tripwire.rca.recommend import holdback_check, recommend, switchback_check

AT = datetime(2026, 11, 7, 18, 17, tzinfo=UTC)


def test_rollback_targets_the_previous_version_and_the_scope():
    history = [
        Change(
            at=datetime(2026, 11, 1, tzinfo=UTC),
            kind="deploy",
            service="payments-token",
            version="2.3.0",
        ),
        Change(
            at=AT,
            kind="deploy",
            service="payments-token",
            version="2.3.1",
            scope={"locale": "en-GB"},
        ),
    ]
    rec = recommend(
        category="code deploy",
        implicated=history[1].to_json(),
        history=history,
        segments_text="locale=en-GB",
        breakpoint="payment",
        metric="voice_checkout_conversion",
        baseline_rate=0.97,
        current_rate=0.6,
        units_per_hour=40,
        series_history=np.zeros(10),
    )
    assert "roll back payments-token 2.3.1 to 2.3.0 for locale=en-GB" in rec.actions[0].action
    assert rec.check.design == "holdback" and rec.check.units_needed and rec.check.hours_needed


def test_holdback_needs_more_units_for_a_smaller_drop():
    big = holdback_check(0.97, 0.6, 100, "s")
    small = holdback_check(0.97, 0.9, 100, "s")
    assert small.units_needed > big.units_needed  # type: ignore[operator]


def test_switchback_schedule_is_balanced():
    check = switchback_check(np.random.default_rng(0).normal(size=200))
    assert check.design == "switchback" and check.block_minutes
    assert abs(sum(check.schedule) - len(check.schedule) / 2) <= 0.5


def test_measurement_issue_recommends_no_product_rollback():
    rec = recommend(
        category="measurement issue",
        implicated=None,
        history=[],
        segments_text="device=mobile app",
        breakpoint=None,
        metric="orders",
        baseline_rate=1.0,
        current_rate=0.9,
        units_per_hour=10,
        series_history=np.zeros(3),
    )
    assert any("do not roll back" in a.action for a in rec.actions) and rec.check.design == "none"
