"""Ground truth: the schedule of incidents and experiments, and what the events show."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from tripwire.sim import World, WorldConfig


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_default_schedule_spreads_incidents_after_the_baseline_days() -> None:
    world = World(WorldConfig(seed=7, users=200, days=14))
    truth = world.ground_truth()
    start = _at(truth.start)
    assert [i.id for i in truth.incidents] == [
        "payments-deploy",
        "telemetry-outage",
        "retrieval-shard",
    ]
    days = [(_at(i.start) - start).days for i in truth.incidents]
    assert len(set(days)) == 3 and min(days) >= 3
    assert len(truth.incident_free_days) >= 10
    for incident in truth.incidents:
        assert _at(incident.start) < _at(incident.end) <= _at(truth.end)
        assert _at(incident.change["at"]) <= _at(incident.start)
        assert _at(incident.rollback["at"]) < _at(incident.end)
        assert incident.rollback["rollback_of"] == incident.change["version"]
        assert incident.traffic_share >= 0.05, incident.id
        assert incident.category
    assert truth.incident("payments-deploy").funnel_step == "payment"
    assert truth.incident("payments-deploy").segments == ({"payment_method": "tokenized-card"},)


def test_change_log_has_routine_noise_decoys_causes_and_rollbacks() -> None:
    truth = World(WorldConfig(seed=7, users=200, days=14)).ground_truth()
    roles = [c.role for c in truth.changes]
    assert roles.count("cause") == roles.count("rollback") == roles.count("decoy") == 3
    assert roles.count("routine") >= 14 * 4
    assert roles.count("experiment") == 2
    for incident in truth.incidents:
        decoy = [
            c
            for c in truth.changes
            if c.role == "decoy"
            and _at(c.at) < _at(incident.start)
            and _at(incident.start) - _at(c.at) <= timedelta(hours=1)
        ]
        assert decoy, incident.id


def test_experiment_truth_has_the_japanese_sign_flip_and_the_csat_trade_off() -> None:
    truth = World(WorldConfig(seed=7, users=2000, days=14)).ground_truth()
    ranker = truth.experiment("ranker_v2")
    add = ranker.effects[0]
    assert add.metric == "add_to_cart_per_user"
    assert add.overall > 0
    assert add.by_cohort["locale"]["ja-JP"] < 0 < add.by_cohort["locale"]["en-US"]
    prompt = {e.metric: e for e in truth.experiment("prompt_v3").effects}
    assert prompt["turns_per_session"].overall > 0
    assert prompt["thumbs_down_rate"].overall > 0
    assert prompt["csat"].overall < 0
    for experiment in truth.experiments:
        assert experiment.arms == ("control", "treatment") and experiment.weights == (0.5, 0.5)
        assert _at(truth.start) + timedelta(days=3) <= _at(experiment.start)


def test_incidents_that_do_not_fit_a_short_range_are_left_out_and_the_rest_is_listed() -> None:
    truth = World(WorldConfig(seed=7, users=100, days=2)).ground_truth()
    assert all(
        _at(truth.start) <= _at(i.start) < _at(i.end) <= _at(truth.end) for i in truth.incidents
    )
    explicit = World(WorldConfig(seed=7, users=100, days=4, incident_days=(1, 2, 3))).ground_truth()
    assert len(explicit.incidents) == 3


def test_ending_now_ends_at_the_current_minute() -> None:
    config = WorldConfig.ending_now(users=50, days=1)
    start, end = config.window
    assert end - start == timedelta(days=1)
    assert abs((datetime.now(end.tzinfo) - end).total_seconds()) < 120
    messages = list(World(config).messages())
    assert messages and max(m["timestamp"] for m in messages) < end.isoformat().replace(
        "+00:00", "Z"
    )


def test_tokenization_failures_and_bad_version_only_in_the_segment_during_the_window(
    by_event, small_world
) -> None:
    incident = small_world.ground_truth().incident("payments-deploy")
    lo, hi = _at(incident.start), _at(incident.end)
    failures = [
        m
        for m in by_event["Checkout Error"]
        if m["properties"]["error_code"] == "TOKENIZATION_FAILED"
    ]
    bad = [
        m
        for m in by_event["Payment Authorized"]
        if m["properties"]["payment_service_version"] == "2.3.1"
    ]
    assert failures
    for message in failures + bad:
        assert lo <= _at(message["timestamp"]) < hi + timedelta(minutes=2)
        assert message["context"]["traits"]["payment_method"] == "tokenized-card"


def test_traffic_follows_the_local_diurnal_curve(by_event) -> None:
    starts = np.array(
        [
            _at(m["timestamp"]).hour
            for m in by_event["Session Started"]
            if m["context"]["locale"] == "en-GB"
        ]
    )
    by_hour = np.bincount(starts, minlength=24)
    assert by_hour[19] > 4 * by_hour[3]
