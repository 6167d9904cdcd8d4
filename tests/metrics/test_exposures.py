"""Exposure resolution: first exposure wins, multi-arm units excluded, mappings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tripwire.metrics.exposures import (
    ExposureConfigError,
    exposure_sources,
    resolve_exposures,
    summarize,
)
from tripwire.store.engine import connect_lake, events_table
from tripwire.store.lake import write_events

T = datetime(2026, 3, 2, 12, tzinfo=UTC)


def _exp(i: int, user: str | None, at: timedelta, arm: str, **extra: Any) -> dict[str, Any]:
    props = {"experiment": extra.pop("experiment", "exp"), "variant": arm, **extra.pop("props", {})}
    return {
        "messageId": f"x{i}",
        "type": "track",
        "event": extra.pop("event", "$exposure"),
        "userId": user,
        "anonymousId": "anon",
        "timestamp": (T + at).isoformat(),
        "properties": props,
        "context": {"locale": extra.pop("locale", "en-US"), "device": {"model": "web"}},
    }


def _resolve(tmp_path: Path, envelopes: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    write_events(tmp_path, envelopes)
    table = resolve_exposures(events_table(connect_lake(tmp_path)), "exp", **kwargs)
    return {r["unit_id"]: r for r in table.to_pyarrow().to_pylist()}


def test_first_exposure_defines_arm_start_and_cohort(tmp_path: Path) -> None:
    units = _resolve(
        tmp_path,
        [
            _exp(0, "a", timedelta(hours=5), "treatment", locale="de-DE"),
            _exp(1, "a", timedelta(hours=1), "treatment", locale="ja-JP"),
            _exp(2, "a", timedelta(hours=9), "treatment", locale="fr-FR"),
        ],
        dimensions=["locale"],
    )
    assert units["a"]["arm"] == "treatment" and units["a"]["n_arms"] == 1
    assert units["a"]["t0"] == T + timedelta(hours=1)
    assert units["a"]["d0"] == "ja-JP"


def test_ties_at_the_first_exposure_take_the_smallest_value_of_each_dimension(
    tmp_path: Path,
) -> None:
    """Cohort values come from the rows at ``t0`` only, each dimension's smallest on its
    own (not the values of one row); smaller values seen later do not count."""
    units = _resolve(
        tmp_path,
        [
            _exp(0, "a", timedelta(hours=2), "treatment", locale="fr-FR", props={"tier": "b"}),
            _exp(1, "a", timedelta(hours=2), "treatment", locale="de-DE", props={"tier": "c"}),
            _exp(2, "a", timedelta(hours=3), "treatment", locale="aa-AA", props={"tier": "a"}),
            _exp(3, "b", timedelta(hours=1), "treatment", locale="ja-JP"),
        ],
        dimensions=["locale", "properties.tier"],
    )
    assert units["a"]["t0"] == T + timedelta(hours=2) and units["a"]["n_arms"] == 1
    assert (units["a"]["d0"], units["a"]["d1"]) == ("de-DE", "b")
    assert (units["b"]["d0"], units["b"]["d1"]) == ("ja-JP", "(none)")


def test_units_in_two_arms_are_counted_and_excluded(tmp_path: Path) -> None:
    write_events(
        tmp_path,
        [
            _exp(0, "a", timedelta(0), "control"),
            _exp(1, "a", timedelta(days=1), "treatment"),
            _exp(2, "b", timedelta(0), "control"),
            _exp(3, "c", timedelta(0), "treatment"),
            _exp(4, "c", timedelta(0), "treatment"),
        ],
    )
    exposed = resolve_exposures(events_table(connect_lake(tmp_path)), "exp")
    summary = summarize(exposed, "exp")
    assert summary.units_per_arm == {"control": 1, "treatment": 1}
    assert summary.multi_arm_units == 1 and summary.analysed_units == 2
    assert summary.first_exposure == T


def test_simultaneous_exposures_to_two_arms_are_multi_arm(tmp_path: Path) -> None:
    units = _resolve(
        tmp_path, [_exp(0, "a", timedelta(0), "control"), _exp(1, "a", timedelta(0), "treatment")]
    )
    assert units["a"]["n_arms"] == 2


def test_units_in_three_arms_are_multi_arm_and_ties_across_arms_take_the_smallest_arm(
    tmp_path: Path,
) -> None:
    units = _resolve(
        tmp_path,
        [
            _exp(0, "a", timedelta(hours=1), "c"),
            _exp(1, "a", timedelta(hours=2), "a"),
            _exp(2, "a", timedelta(hours=3), "b"),
            _exp(3, "t", timedelta(hours=4), "y"),
            _exp(4, "t", timedelta(hours=4), "x"),
            _exp(5, "t", timedelta(hours=9), "a"),
        ],
    )
    assert units["a"]["n_arms"] == 2 and units["a"]["t0"] == T + timedelta(hours=1)
    assert units["t"]["n_arms"] == 2 and units["t"]["arm"] == "x"
    assert units["t"]["t0"] == T + timedelta(hours=4)


def test_unit_id_property_overrides_user_id_and_other_experiments_ignored(tmp_path: Path) -> None:
    units = _resolve(
        tmp_path,
        [
            _exp(0, "user-1", timedelta(0), "control", props={"unit_id": "household-9"}),
            _exp(1, None, timedelta(0), "control"),  # anonymous, no unit id: dropped
            _exp(2, "user-2", timedelta(0), "control", experiment="other"),
        ],
    )
    assert set(units) == {"household-9"}


def test_mapped_events_count_as_exposures(tmp_path: Path) -> None:
    viewed = _exp(0, "m", timedelta(hours=2), "ignored", event="Experiment Viewed")
    viewed["properties"] = {"experiment_id": "exp", "variation_id": "B"}
    native = _exp(1, "m", timedelta(hours=3), "B")
    sources = exposure_sources(
        [{"event": "Experiment Viewed", "experiment": "experiment_id", "variant": "variation_id"}]
    )
    units = _resolve(tmp_path, [viewed, native], sources=sources)
    assert units["m"]["arm"] == "B" and units["m"]["t0"] == T + timedelta(hours=2)


def test_mapping_whose_fields_the_lake_never_saw_finds_nothing(tmp_path: Path) -> None:
    sources = exposure_sources([{"event": "Flag Evaluated", "experiment": "flag", "variant": "v"}])
    units = _resolve(tmp_path, [_exp(0, "a", timedelta(0), "control")], sources=sources)
    assert set(units) == {"a"}


def test_empty_lake_resolves_to_no_units(tmp_path: Path) -> None:
    exposed = resolve_exposures(events_table(connect_lake(tmp_path)), "exp", dimensions=["locale"])
    summary = summarize(exposed, "exp")
    assert summary.analysed_units == 0 and summary.first_exposure is None


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"event": "E", "experiment": "e"}, r"exposure_mappings\[0\] lacks variant"),
        ({"event": "E", "experiment": "e", "variant": "v", "arm": "x"}, "unknown keys"),
        ("not a mapping", "must be a mapping"),
        ({"event": "", "experiment": "e", "variant": "v"}, "event must be an event name"),
        ({"event": "E", "experiment": 3, "variant": "v"}, "experiment must be a field name"),
    ],
)
def test_bad_mappings_are_named(mapping: Any, message: str) -> None:
    with pytest.raises(ExposureConfigError, match=message):
        exposure_sources([mapping])


def test_bare_names_mean_properties() -> None:
    source = exposure_sources(
        [{"event": "E", "experiment": "exp_id", "variant": "context.x.y", "unit": "anonymous_id"}]
    )[1]
    assert source.experiment == "properties.exp_id"
    assert source.variant == "context.x.y" and source.unit == "anonymous_id"
