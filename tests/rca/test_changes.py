"""Change ranking, the category and what is ruled out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from tripwire.monitor.changes import Change
from tripwire.rca.changes import MEASUREMENT, UNDETERMINED, categorize, mix_share, rank_changes

ONSET = datetime(2026, 11, 7, 18, 20, tzinfo=UTC)
SEGMENT = [{"locale": "en-GB", "device": "Echo Show"}]


def _change(minutes_before: float, kind: str, service: str, scope: dict) -> Change:
    return Change(
        at=ONSET - timedelta(minutes=minutes_before),
        kind=kind,
        service=service,
        version="1",
        scope=scope,
    )


def test_the_matching_change_beats_the_decoy_and_global_routine():
    ranked = rank_changes(
        [
            _change(1, "deploy", "payments-token", {"locale": "en-GB", "device": "Echo Show"}),
            _change(30, "deploy", "voice-ux", {"locale": "en-GB", "device": "Echo Dot"}),
            _change(10, "config", "cdn-cache-ttl", {}),
        ],
        ONSET,
        SEGMENT,
    )
    assert ranked[0].change["service"] == "payments-token" and ranked[0].score > 0.9
    decoy = next(r for r in ranked if r.change["service"] == "voice-ux")
    assert decoy.overlap == 0.0


def test_a_global_deviation_does_not_blame_a_scoped_change():
    ranked = rank_changes([_change(2, "deploy", "payments-token", {"locale": "en-GB"})], ONSET, [])
    assert ranked[0].score < 0.25


def test_changes_far_from_the_onset_are_not_candidates():
    assert rank_changes([_change(60 * 8, "deploy", "x", {})], ONSET, SEGMENT) == ()


def test_categories_name_one_and_rule_out_the_rest():
    ranked = rank_changes(
        [_change(1, "model", "retrieval", {"intent": "product_search"})],
        ONSET,
        [{"intent": "product_search"}],
    )
    category, evidence, ruled = categorize(
        ranked[0], measurement_issue=False, mix_share=0.1, localized=True
    )
    assert category == "model version" and "retrieval" in evidence
    assert "model version" not in ruled and len(ruled) == 9
    assert (
        categorize(ranked[0], measurement_issue=True, mix_share=0.0, localized=True)[0]
        == MEASUREMENT
    )
    assert (
        categorize(None, measurement_issue=False, mix_share=0.0, localized=False)[0] == UNDETERMINED
    )


def test_mix_share_separates_mix_from_rate_changes():
    rates = np.array([0.1, 0.5])
    assert mix_share(rates, np.array([500.0, 500]), rates, np.array([900.0, 100])) > 0.99
    assert mix_share(rates, np.array([500.0, 500]), rates * 0.5, np.array([500.0, 500])) < 0.01
