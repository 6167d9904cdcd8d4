"""The demo step's matching of alerts to the world's planted incidents."""

from __future__ import annotations

from datetime import UTC, datetime

from tripwire.monitor.alerts import Alert
from tripwire.monitor.demo_step import matches_incident

T = datetime(2026, 11, 13, 16, 0, tzinfo=UTC)
INCIDENT = {
    "affected_metrics": ["resolution_rate", "escalation_rate"],
    "segments": [{"intent": "product_search", "service": "retrieval-shard-3"}],
}


def alert(metric: str, segment: dict[str, str]) -> Alert:
    return Alert(
        1,
        "m",
        "r",
        metric,
        "P2",
        segment,
        "firing",
        T,
        T,
        T,
        None,
        0.3,
        0.8,
        0.7,
        0.9,
        -1,
        "detector down",
        1,
        0,
        False,
    )


def test_alert_matches_the_planted_segment_or_its_parts() -> None:
    assert matches_incident(
        alert("resolution_rate", {"properties.service": "retrieval-shard-3"}), INCIDENT
    )
    assert matches_incident(alert("resolution_rate", {}), INCIDENT)
    assert matches_incident(
        alert(
            "escalation_rate",
            {"properties.intent": "product_search", "properties.service": "retrieval-shard-3"},
        ),
        INCIDENT,
    )
    assert not matches_incident(
        alert("resolution_rate", {"properties.service": "retrieval-shard-1"}), INCIDENT
    )
    assert not matches_incident(alert("orders", {}), INCIDENT)


def test_bound_text_says_whether_the_traffic_allows_detection_within_the_incident() -> None:
    from tripwire.monitor.demo_step import DelayBound, _bound_text

    incident = {"start": "2026-11-13T15:36:00Z", "end": "2026-11-13T17:36:00Z"}
    fast = _bound_text(DelayBound(21.6, "resolution_rate", "(all)", 0.6), incident)
    assert "on average, detect it earlier than ~22 min (resolution_rate on (all))" in fast
    slow = _bound_text(DelayBound(1136.0, "checkout_error_rate", "(all)", 0.01), incident)
    assert "within the incident's 120 min" in slow and "~1136 min" in slow
    assert _bound_text(None, incident) == ""
    assert "no change" in _bound_text(DelayBound(float("inf"), "m", "(all)", 0.0), incident)
