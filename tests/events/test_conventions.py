"""tripwire's `$exposure`, `$change` and `$latency` conventions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tripwire.events import EventValidationError, normalize_event

RECEIVED = datetime(2026, 3, 1, 12, tzinfo=UTC)


def normalize(event, properties, **ids):
    ids = ids or {"userId": "u1"}
    raw = {"type": "track", "event": event, "properties": properties, **ids}
    return normalize_event(raw, received_at=RECEIVED, source="app")


def rejection(event, properties) -> EventValidationError:
    with pytest.raises(EventValidationError) as info:
        normalize(event, properties)
    return info.value


def test_exposure_unit_defaults_to_user_then_anonymous_id():
    assert (
        normalize("$exposure", {"experiment": "e", "variant": "b"})["properties"]["unit_id"] == "u1"
    )
    anonymous = normalize("$exposure", {"experiment": "e", "variant": "b"}, anonymousId="a9")
    assert anonymous["properties"]["unit_id"] == "a9"
    explicit = normalize("$exposure", {"experiment": "e", "variant": "b", "unit_id": 77})
    assert explicit["properties"]["unit_id"] == "77"


@pytest.mark.parametrize(
    ("properties", "field", "reason"),
    [
        ({"variant": "b"}, "properties.experiment", "required"),
        ({"experiment": "e"}, "properties.variant", "required"),
        ({"experiment": "", "variant": "b"}, "properties.experiment", "non-empty string"),
        ({"experiment": "e", "variant": 1}, "properties.variant", "got int"),
        ({"experiment": "e", "variant": "b", "unit_id": [1]}, "properties.unit_id", "got list"),
    ],
)
def test_exposure_errors(properties, field, reason):
    error = rejection("$exposure", properties)
    assert (error.field, reason in error.reason) == (field, True)


def test_valid_change_passes_unchanged():
    properties = {
        "kind": "deploy",
        "service": "payments-token",
        "version": "2.3.1",
        "scope": {"locale": "en-GB", "device": ["Echo Show", "Echo Dot"]},
        "author": "deploy-bot",
        "description": "tokenizer rewrite",
        "rollback_of": "2.3.0",
    }
    assert normalize("$change", properties)["properties"] == properties


@pytest.mark.parametrize(
    ("properties", "field", "reason"),
    [
        ({"service": "s"}, "properties.kind", "required"),
        ({"kind": "release", "service": "s"}, "properties.kind", "must be one of config, deploy"),
        ({"kind": "flag"}, "properties.service", "required"),
        ({"kind": "flag", "service": "s", "version": 2.3}, "properties.version", "got float"),
        ({"kind": "ui", "service": "s", "scope": "en-GB"}, "properties.scope", "must be an object"),
        (
            {"kind": "ui", "service": "s", "scope": {"locale": []}},
            "properties.scope.locale",
            "non-empty list",
        ),
        (
            {"kind": "ui", "service": "s", "scope": {"locale": {"a": 1}}},
            "properties.scope.locale",
            "scalar",
        ),
    ],
)
def test_change_errors(properties, field, reason):
    error = rejection("$change", properties)
    assert error.field == field
    assert reason in error.reason


def test_valid_latency():
    properties = {"pipeline": "voice_checkout", "stage": "payment", "ms": 412.5, "outcome": "ok"}
    assert normalize("$latency", properties)["properties"] == properties


@pytest.mark.parametrize(
    ("update", "field", "reason"),
    [
        ({"ms": None}, "properties.ms", "required"),
        ({"ms": -1}, "properties.ms", "≥ 0"),
        ({"ms": "12"}, "properties.ms", "got str"),
        ({"ms": True}, "properties.ms", "finite number"),
        ({"ms": float("inf")}, "properties.ms", "finite number"),
        ({"outcome": "slow"}, "properties.outcome", "ok, error, timeout"),
        ({"outcome": None}, "properties.outcome", "required"),
        ({"stage": None}, "properties.stage", "required"),
    ],
)
def test_latency_errors(update, field, reason):
    properties = {"pipeline": "turn", "stage": "asr", "ms": 10, "outcome": "ok", **update}
    properties = {k: v for k, v in properties.items() if v is not None}
    error = rejection("$latency", properties)
    assert error.field == field
    assert reason in error.reason


def test_other_dollar_events_are_plain_track_events():
    assert normalize("$pageleave", {"anything": 1})["event"] == "$pageleave"
