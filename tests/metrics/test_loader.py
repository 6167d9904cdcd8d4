"""Loading metric YAML: every error at once, each with file, line and field."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tripwire.metrics.definitions import FunnelMetric, RatioMetric
from tripwire.metrics.loader import (
    LakeSchema,
    MetricDefinitionError,
    load_catalog,
    load_metrics,
)
from tripwire.store.engine import connect
from tripwire.store.lake import write_events
from tripwire.store.workspace import init_workspace


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def _errors(
    files: list[Path], root: Path, schema: LakeSchema | None = None
) -> list[tuple[str, int, str, str]]:
    with pytest.raises(MetricDefinitionError) as info:
        load_catalog(files, root=root, schema=schema)
    return [(e.file, e.line, e.field, e.message) for e in info.value.errors]


def test_three_layouts_load_with_sources(tmp_path: Path) -> None:
    a = _write(
        tmp_path,
        "a.yaml",
        """
        name: orders
        type: count
        events: Order Completed
    """,
    )
    b = _write(
        tmp_path,
        "b.yaml",
        """
        - name: conv
          type: ratio
          numerator: {events: [Order Completed]}
          denominator: {events: [Voice Utterance]}
    """,
    )
    c = _write(
        tmp_path,
        "c.yaml",
        """
        metrics:
          - name: f
            type: funnel
            steps: [A, {name: second, events: [B], where: {properties.x: 1}}]
            within: 30m
    """,
    )
    catalog = load_catalog([a, b, c], root=tmp_path)
    assert [m.name for m in catalog] == ["orders", "conv", "f"]
    assert catalog.sources["conv"].file == "b.yaml" and catalog.sources["conv"].line == 1
    assert catalog.sources["f"].line == 2
    assert isinstance(catalog["conv"], RatioMetric)
    funnel = catalog["f"]
    assert isinstance(funnel, FunnelMetric) and funnel.steps[1].label == "second"
    with pytest.raises(KeyError, match="unknown metric 'nope'"):
        catalog["nope"]


def test_all_shape_errors_reported_at_once_with_lines(tmp_path: Path) -> None:
    a = _write(
        tmp_path,
        "a.yaml",
        """
        metrics:
          - name: ok
            type: count
          - name: short_funnel
            type: funnel
            steps: [A]
          - name: backwards
            type: retention
            days: [14, 7]
          - name: typo
            type: ratio
            numerator: {events: [X]}
            denomnator: {events: [Y]}
          - name: ok
            type: count
          - name: q
            type: quantile
            value: properties.ms
            q: 1.5
          - name: no_type
          - name: bad_type
            type: median
          - name: bad_op
            type: count
            where:
              - {field: properties.x, op: in, value: 3}
    """,
    )
    b = _write(tmp_path, "b.yaml", "name: x\ntype: count\n  bad: [\n")
    errors = _errors([a, b], tmp_path)
    assert ("a.yaml", 6, "short_funnel.steps", "a funnel needs at least 2 steps, got 1") in errors
    assert (
        "a.yaml",
        9,
        "backwards.days",
        "retention window needs a < b, got days [14.0, 7.0]",
    ) in errors
    assert ("a.yaml", 10, "typo.denominator", "required field is missing") in errors
    assert ("a.yaml", 13, "typo.denomnator", "unknown field") in errors
    assert ("a.yaml", 19, "q.q", "Input should be less than 1") in errors
    assert any(e[:3] == ("a.yaml", 20, "no_type.type") and "missing" in e[3] for e in errors)
    assert any(
        e[:3] == ("a.yaml", 22, "bad_type.type") and "unknown type 'median'" in e[3] for e in errors
    )
    assert any(
        e[:3] == ("a.yaml", 26, "bad_op.where[0]") and "non-empty list" in e[3] for e in errors
    )
    assert any(
        e[:3] == ("a.yaml", 14, "ok.name")
        and "duplicate metric name 'ok'" in e[3]
        and "a.yaml:2" in e[3]
        for e in errors
    )
    assert any(e[0] == "b.yaml" and e[1] == 3 and "YAML syntax error" in e[3] for e in errors)
    assert len(errors) == 10


def test_duplicate_yaml_keys_and_names_across_files(tmp_path: Path) -> None:
    a = _write(
        tmp_path,
        "a.yaml",
        """
        name: revenue
        type: sum
        value: properties.revenue
        value: properties.price
    """,
    )
    b = _write(
        tmp_path,
        "b.yml",
        """
        - name: revenue
          type: count
    """,
    )
    errors = _errors([a, b], tmp_path)
    assert ("a.yaml", 4, "value", "duplicate key (YAML keeps only the last one)") in [
        (f, line, field, msg) for f, line, field, msg in errors
    ]
    assert any(
        e[0] == "b.yml" and e[1] == 1 and "first defined at a.yaml:1" in e[3] for e in errors
    )


def test_wrong_top_level_shape(tmp_path: Path) -> None:
    a = _write(tmp_path, "a.yaml", "just a string\n")
    b = _write(tmp_path, "b.yaml", "- 3\n")
    errors = _errors([a, b], tmp_path)
    assert errors[0][:2] == ("a.yaml", 1) and "expected a metric mapping" in errors[0][3]
    assert errors[1][:3] == ("b.yaml", 1, "[0]") and "must be a mapping, got int" in errors[1][3]


@pytest.fixture
def workspace(tmp_path: Path):
    ws = init_workspace(tmp_path / "ws")
    events = [
        {
            "messageId": f"m{i}",
            "type": "track",
            "event": name,
            "userId": "u1",
            "timestamp": datetime(2026, 11, 2, i, tzinfo=UTC).isoformat(),
            "properties": props,
            "context": {"locale": "en-US", "traits": {"tenure": "new"}},
        }
        for i, (name, props) in enumerate(
            [
                (
                    "Turn Completed",
                    {"latency_ms": 120, "intent": "returns", "resolved": True, "session_id": "s"},
                ),
                ("Order Completed", {"revenue": 12.5, "session_id": "s"}),
            ]
        )
    ]
    write_events(ws.lake_dir, events)
    return ws


def test_semantic_errors_against_the_lake(workspace) -> None:
    _write(
        workspace.metrics_dir,
        "m.yaml",
        """
        metrics:
          - name: good
            type: ratio
            numerator: {events: [Turn Completed], where: {properties.resolved: true}}
            denominator: {events: [Turn Completed]}
            dimensions: [context.locale, context.traits.tenure, properties.intent]
          - name: exposure_is_a_convention
            type: count
            events: [$exposure]
          - name: unknown_event
            type: count
            events: [Turn Complete]
          - name: unknown_property
            type: sum
            events: [Order Completed]
            value: properties.revenu
          - name: string_value
            type: quantile
            events: [Turn Completed]
            value: properties.intent
            q: 0.5
          - name: wrong_literal
            type: count
            where: {properties.resolved: "yes"}
          - name: numeric_op_on_string
            type: count
            where: [{field: properties.intent, op: gt, value: 3}]
          - name: bad_dimension
            type: count
            dimensions: [locale, lokale]
    """,
    )
    with pytest.raises(MetricDefinitionError) as info:
        load_metrics(workspace)
    errors = {(e.line, e.field): e.message for e in info.value.errors}
    assert "unknown event 'Turn Complete'" in errors[(12, "unknown_event.events[0]")]
    assert "unknown property 'properties.revenu'" in errors[(16, "unknown_property.value")]
    assert "wrong type" in errors[(20, "string_value.value")]
    assert "wrong type" in errors[(24, "wrong_literal.where[0].value")]
    assert "needs a numeric field" in errors[(27, "numeric_op_on_string.where[0].field")]
    assert "unknown field 'lokale'" in errors[(30, "bad_dimension.dimensions[1]")]
    assert len(errors) == 6
    # without the lake checks the same file loads
    assert len(load_metrics(workspace, check_lake=False)) == 8


def test_zero_only_denominator_is_a_data_error(workspace) -> None:
    _write(
        workspace.metrics_dir,
        "m.yaml",
        """
        - name: fine
          type: ratio
          numerator: {events: [Order Completed]}
          denominator: {events: [Turn Completed]}
        - name: never
          type: ratio
          numerator: {events: [Order Completed]}
          denominator: {events: [Turn Completed], where: {properties.resolved: false}}
    """,
    )
    backend = connect(workspace)
    with pytest.raises(MetricDefinitionError) as info:
        load_metrics(workspace, backend=backend)
    (error,) = info.value.errors
    assert (error.file, error.line, error.field) == ("metrics/m.yaml", 5, "never.denominator")
    assert "zero over all the data" in error.message


def test_empty_lake_skips_lake_checks(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "empty")
    _write(ws.metrics_dir, "m.yaml", "name: anything\ntype: count\nevents: [Not Yet Sent]\n")
    assert len(load_metrics(ws, backend=connect(ws))) == 1
