"""Monitor definitions and their loader: shapes, defaults and file/line/field errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tripwire.metrics.catalog import catalog_files
from tripwire.metrics.loader import load_catalog
from tripwire.monitor.defaults import default_monitor_files, install_default_monitors
from tripwire.monitor.definitions import parse_monitor
from tripwire.monitor.loader import MonitorDefinitionError, load_monitor_files, load_monitors
from tripwire.store.workspace import init_workspace


def test_rule_needs_exactly_one_condition() -> None:
    base = {"name": "m", "metric": "x"}
    with pytest.raises(ValidationError, match="exactly one condition"):
        parse_monitor({**base, "rules": [{"name": "r", "severity": "P1"}]})
    with pytest.raises(ValidationError, match="exactly one condition"):
        parse_monitor(
            {**base, "rules": [{"name": "r", "severity": "P1", "above": 1, "detector": "up"}]}
        )
    m = parse_monitor(
        {**base, "rules": [{"name": "r", "severity": "P2", "above": 3000, "for": "10m"}]}
    )
    assert m.rules[0].condition == "> 3000 for 10m"
    assert m.rules[0].for_.total_seconds() == 600


def test_errors_name_file_line_and_field(tmp_path: Path) -> None:
    good = tmp_path / "a.yaml"
    good.write_text(
        "monitors:\n  - name: ok\n    metric: orders\n    rules:\n      - {name: r, severity: P1, detector: down}\n"
    )
    bad = tmp_path / "b.yaml"
    bad.write_text(
        "monitors:\n"
        "  - name: broken\n"
        "    metric: orders\n"
        "    segments: {dimensions: [locale], depth: 7}\n"
        "    rules:\n"
        "      - {name: r, severity: P9, above: 1}\n"
        "  - name: ok\n"
        "    metric: no_such_metric\n"
        "    colour: red\n"
        "    rules: []\n"
    )
    catalog = load_catalog(catalog_files())
    with pytest.raises(MonitorDefinitionError) as caught:
        load_monitor_files([good, bad], catalog=catalog, root=tmp_path)
    text = [str(e) for e in caught.value.errors]
    assert any(t.startswith("b.yaml:4: broken.segments.depth:") for t in text), text
    assert any(t.startswith("b.yaml:6: broken.rules[0].severity:") for t in text), text
    assert any(t.startswith("b.yaml:9: ok.colour: unknown field") for t in text), text
    assert any(t.startswith("b.yaml:10: ok.rules:") for t in text), text


def test_unknown_metric_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "- name: a\n  metric: nope\n  rules: [{name: r, severity: P1, detector: any}]\n"
        "- name: b\n  metric: voice_checkout_funnel\n  rules: [{name: r, severity: P1, detector: any}]\n"
    )
    with pytest.raises(MonitorDefinitionError) as caught:
        load_monitor_files([path], catalog=load_catalog(catalog_files()), root=tmp_path)
    text = "\n".join(map(str, caught.value.errors))
    assert "m.yaml:2: a.metric: unknown metric 'nope'" in text
    assert "m.yaml:5: b.metric: 'voice_checkout_funnel' is a funnel metric" in text


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("monitors:\n  - name: a\n    metric: [unclosed\n")
    with pytest.raises(MonitorDefinitionError, match=r"x.yaml:\d+: YAML syntax error"):
        load_monitor_files([path], root=tmp_path)


def test_defaults_load_against_the_day1_catalog(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    from tripwire.metrics.catalog import install_catalog

    install_catalog(ws)
    written = install_default_monitors(ws)
    assert [p.name for p in written] == default_monitor_files()
    assert install_default_monitors(ws) == []  # idempotent: user edits are kept
    monitors = load_monitors(ws, load_catalog(sorted(ws.metrics_dir.glob("*.yaml"))))
    severities = {r.severity for m in monitors for r in m.rules}
    assert severities == {"P1", "P2", "P3", "P4"}
    p99 = monitors["turn_latency_p99"].rules[0]
    assert (p99.severity, p99.above, p99.for_.total_seconds()) == ("P1", 10000, 300)
    kinds = {r.kind for m in monitors for r in m.rules}
    assert kinds == {"threshold", "detector", "trend", "growth"}
    assert any(r.scope == "segments" for m in monitors for r in m.rules)
