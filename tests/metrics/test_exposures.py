"""Exposure resolution: first exposure wins, multi-arm units excluded, mappings."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ibis
import pyarrow as pa
import pytest

from tripwire.metrics import exposures
from tripwire.metrics.exposures import (
    ARM,
    TS,
    UNIT,
    ExposureConfigError,
    exposure_sources,
    first_exposures,
    first_per_unit_arm,
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


# ---------------------------------------------------------------- the two plans, exactly


def _reference(rows: list[dict[str, Any]], n_dimensions: int) -> dict[str, dict[str, Any]]:
    """first_exposures in plain Python: t0 the earliest row; arm and each cohort value the
    smallest among the rows at t0, each on its own; n_arms 1 or 2."""
    by_unit: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_unit[row[UNIT]].append(row)
    out = {}
    for unit, mine in by_unit.items():
        t0 = min(r[TS] for r in mine)
        at_t0 = [r for r in mine if r[TS] == t0]
        out[unit] = {
            UNIT: unit,
            "arm": min(r[ARM] for r in at_t0),
            "t0": t0,
            "n_arms": 1 if len({r[ARM] for r in mine}) == 1 else 2,
            **{f"d{i}": min(r[f"d{i}"] for r in at_t0) for i in range(n_dimensions)},
        }
    return out


def _random_rows(seed: int, n: int, values: int = 4) -> list[dict[str, Any]]:
    """Few units, few instants (many ties at t0), several arms, some instants before 1970."""
    rng = random.Random(seed)
    base = datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC) if seed % 2 else T
    return [
        {
            UNIT: f"u{rng.randrange(n // 4 + 1)}",
            ARM: rng.choice(["b", "a", "c"] if rng.random() < 0.3 else ["a"]),
            TS: base + timedelta(microseconds=rng.randrange(4)),
            "d0": rng.choice(["fr-FR", "de-DE", "ja-JP", "é", "(none)"][:values]),
            "d1": f"v{rng.randrange(values)}",
        }
        for _ in range(n)
    ]


def _table(con: Any, name: str, rows: list[dict[str, Any]]) -> Any:
    schema = pa.schema(
        [(UNIT, pa.string()), (ARM, pa.string()), (TS, pa.timestamp("us", "UTC"))]
        + [(d, pa.string()) for d in ("d0", "d1")]
    )
    return con.create_table(name, pa.Table.from_pylist(rows, schema=schema), overwrite=True)


def _resolved(table: Any) -> dict[str, dict[str, Any]]:
    return {r[UNIT]: r for r in table.to_pyarrow().to_pylist()}


@pytest.mark.parametrize("seed", range(6))
def test_coded_plan_equals_the_reference_and_merges_partials(seed: int) -> None:
    con = ibis.duckdb.connect()
    rows = _random_rows(seed, 400)
    table = _table(con, "rows", rows)
    coded = exposures._coded_first_exposures(table, 2)
    assert coded is not None  # small dictionaries: the coded plan runs
    expected = _reference(rows, 2)
    assert _resolved(coded) == expected
    assert _resolved(exposures._first_exposures_by_instant(table, 2)) == expected
    # partials (per unit and arm minima of disjoint slices) merge to the same units
    half = len(rows) // 2
    parts = [
        first_per_unit_arm(_table(con, f"part{i}", chunk), 2)
        for i, chunk in enumerate([rows[:half], rows[half:]])
    ]
    merged = con.create_table("merged", ibis.union(*parts, distinct=False).to_pyarrow())
    assert _resolved(first_exposures(merged, 2, coded=True)) == expected
    assert _resolved(first_exposures(merged, 2)) == expected


def test_columns_with_many_values_use_the_two_step_plan() -> None:
    con = ibis.duckdb.connect()
    rows = _random_rows(7, 2000, values=exposures.CODED_MAX_VALUES + 1)
    table = _table(con, "rows", rows)
    assert len({r["d1"] for r in rows}) > exposures.CODED_MAX_VALUES
    assert exposures._coded_first_exposures(table, 2) is None
    assert _resolved(first_exposures(table, 2, coded=True)) == _reference(rows, 2)


def test_null_values_use_the_two_step_plan() -> None:
    con = ibis.duckdb.connect()
    rows = [{UNIT: "u", ARM: "a", TS: T, "d0": None, "d1": "x"}]
    table = _table(con, "rows", rows)
    assert exposures._coded_first_exposures(table, 2) is None
    assert _resolved(first_exposures(table, 2, coded=True))["u"]["d0"] is None


def test_no_exposure_rows_resolve_to_no_units() -> None:
    con = ibis.duckdb.connect()
    assert _resolved(first_exposures(_table(con, "rows", []), 2, coded=True)) == {}


def test_values_written_between_the_two_queries_fail_loudly(tmp_path: Path) -> None:
    """The coded plan reads the values first: a value that appears only afterwards must
    not be resolved with a wrong code."""
    write_events(tmp_path, [_exp(0, "a", timedelta(0), "control", locale="de-DE")])
    events = events_table(connect_lake(tmp_path))
    rows = exposures.exposure_rows(events, "exp", dimensions=["locale"])
    plan = exposures.first_exposures(rows, 1, coded=True)
    write_events(tmp_path, [_exp(1, "b", timedelta(0), "control", locale="aa-AA")])
    with pytest.raises(Exception, match=exposures.ROWS_CHANGED):
        plan.to_pyarrow()


def test_resolve_exposures_resolves_again_when_the_lake_changes_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file landing between the coded plan's two queries (a live lake) costs a second
    resolution by the two-step plan, not a failed analysis, and nothing is mis-coded."""
    write_events(tmp_path, [_exp(0, "a", timedelta(0), "control", locale="de-DE")])
    original = exposures._coded_first_exposures
    calls: list[int] = []

    def values_read_then_a_file_lands(rows: Any, n_dimensions: int) -> Any:
        plan = original(rows, n_dimensions)
        calls.append(1)
        write_events(tmp_path, [_exp(1, "b", timedelta(0), "treatment", locale="aa-AA")])
        return plan

    monkeypatch.setattr(exposures, "_coded_first_exposures", values_read_then_a_file_lands)
    resolved = resolve_exposures(events_table(connect_lake(tmp_path)), "exp", dimensions=["locale"])
    units = {r["unit_id"]: (r["arm"], r["d0"]) for r in resolved.to_pyarrow().to_pylist()}
    assert calls == [1]
    assert units == {"a": ("control", "de-DE"), "b": ("treatment", "aa-AA")}
