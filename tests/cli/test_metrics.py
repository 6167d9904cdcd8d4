"""`tripwire metrics list|show|query|validate` through the real Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tripwire.cli.main import app
from tripwire.store.lake import write_events
from tripwire.store.workspace import init_workspace

runner = CliRunner()

METRICS = """
metrics:
  - name: orders
    type: count
    description: Orders.
    events: [Order Completed]
  - name: resolution_rate
    type: ratio
    numerator: {events: [Turn Completed], where: {properties.resolved: true}}
    denominator: {events: [Turn Completed]}
  - name: steps
    type: funnel
    steps: [Turn Completed, Order Completed]
"""


def _event(i: int) -> dict:
    return {
        "messageId": f"m{i}",
        "type": "track",
        "event": "Order Completed" if i % 3 == 2 else "Turn Completed",
        "userId": f"u{i % 4}",
        "timestamp": f"2026-11-0{2 + i % 2}T1{i % 3}:00:00Z",
        "properties": {"resolved": i % 2 == 0, "session_id": f"s{i % 5}"},
        "context": {"locale": "en-GB" if i % 2 else "de-DE"},
    }


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = init_workspace(tmp_path / "ws")
    (ws.metrics_dir / "core.yaml").write_text(METRICS)
    write_events(ws.lake_dir, [_event(i) for i in range(30)])
    return ws.root


def test_list_and_show(workspace: Path) -> None:
    result = runner.invoke(app, ["metrics", "list", "-w", str(workspace)])
    assert result.exit_code == 0, result.output
    assert (
        "orders" in result.output
        and "resolution_rate" in result.output
        and "funnel" in result.output
    )
    shown = runner.invoke(
        app, ["metrics", "show", "resolution_rate", "--by", "locale", "-w", str(workspace)]
    )
    assert shown.exit_code == 0, shown.output
    assert (
        "numerator" in shown.output and "SELECT" in shown.output and "prop_resolved" in shown.output
    )
    missing = runner.invoke(app, ["metrics", "show", "nope", "-w", str(workspace)])
    assert missing.exit_code == 2 and "unknown metric" in missing.output


def test_query_formats(workspace: Path, tmp_path: Path) -> None:
    table = runner.invoke(
        app,
        [
            "metrics",
            "query",
            "resolution_rate",
            "--by",
            "locale",
            "--grain",
            "day",
            "-w",
            str(workspace),
        ],
    )
    assert table.exit_code == 0, table.output
    assert "en-GB" in table.output and "de-DE" in table.output
    as_json = runner.invoke(
        app,
        ["metrics", "query", "orders", "--grain", "day", "--format", "json", "-w", str(workspace)],
    )
    rows = json.loads(as_json.stdout)
    assert [r["bucket"][:10] for r in rows] == ["2026-11-02", "2026-11-03"]
    assert sum(r["numerator"] for r in rows) == 10
    as_csv = runner.invoke(
        app,
        [
            "metrics",
            "query",
            "orders",
            "--grain",
            "none",
            "--where",
            "locale=en-GB",
            "--format",
            "csv",
            "-w",
            str(workspace),
        ],
    )
    lines = as_csv.stdout.strip().splitlines()
    assert lines[0] == '"numerator","denominator","value"'
    assert lines[1].startswith("5")  # i % 3 == 2 and i odd: 5 of 30
    target = tmp_path / "out.parquet"
    parquet = runner.invoke(
        app,
        [
            "metrics",
            "query",
            "steps",
            "--grain",
            "none",
            "--format",
            "parquet",
            "-o",
            str(target),
            "-w",
            str(workspace),
        ],
    )
    assert parquet.exit_code == 0, parquet.output
    assert pq.read_table(target).column("step").to_pylist() == [1, 2]


def test_query_empty_period_and_bad_input(workspace: Path) -> None:
    empty = runner.invoke(
        app,
        [
            "metrics",
            "query",
            "orders",
            "--since",
            "2030-01-01",
            "--until",
            "2030-01-02",
            "-w",
            str(workspace),
        ],
    )
    assert empty.exit_code == 0 and "no data" in empty.output
    relative = runner.invoke(
        app,
        [
            "metrics",
            "query",
            "orders",
            "--since",
            "1d",
            "--relative-to",
            "data",
            "--grain",
            "none",
            "--format",
            "json",
            "-w",
            str(workspace),
        ],
    )
    assert (
        json.loads(relative.stdout)[0]["numerator"] == 5
    )  # only 2026-11-03 is within a day of the end
    unknown = runner.invoke(app, ["metrics", "query", "nope", "-w", str(workspace)])
    assert unknown.exit_code == 2 and "unknown metric" in unknown.output
    bad_where = runner.invoke(
        app, ["metrics", "query", "orders", "--where", "locale", "-w", str(workspace)]
    )
    assert bad_where.exit_code == 2 and "FIELD=VALUE" in bad_where.output
    no_output = runner.invoke(
        app, ["metrics", "query", "orders", "--format", "parquet", "-w", str(workspace)]
    )
    assert no_output.exit_code == 2 and "--output" in no_output.output


def test_validate_reports_every_error(workspace: Path) -> None:
    ok = runner.invoke(app, ["metrics", "validate", "-w", str(workspace)])
    assert ok.exit_code == 0 and "3 metric(s) valid" in ok.output
    (workspace / "metrics" / "bad.yaml").write_text(
        "- name: orders\n  type: count\n- name: x\n  type: count\n  events: [Nope]\n"
    )
    bad = runner.invoke(app, ["metrics", "validate", "-w", str(workspace)])
    assert bad.exit_code == 1
    assert (
        "metrics/core.yaml:3: orders.name: duplicate metric name 'orders' "
        "(first defined at metrics/bad.yaml:1)" in bad.output
    )
    assert "metrics/bad.yaml:5: x.events[0]: unknown event 'Nope'" in bad.output
    listed = runner.invoke(app, ["metrics", "list", "-w", str(workspace)])
    assert listed.exit_code == 1 and "2 error(s)" in listed.output


def test_query_approximate_opts_in_to_sketches(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--approximate` reaches the query; counts stay exact and, at a handful of units, the
    HyperLogLog distinct count equals the exact one."""
    from tripwire.metrics.query import Metrics

    extra = "\n  - name: users\n    type: distinct\n    events: [Turn Completed, Order Completed]\n"
    core = workspace / "metrics" / "core.yaml"
    core.write_text(core.read_text() + extra)
    seen: list[bool] = []
    build_query = Metrics.build_query

    def recording(self: Metrics, **query: object) -> object:
        seen.append(bool(query.get("approximate")))
        return build_query(self, **query)  # type: ignore[arg-type]

    monkeypatch.setattr(Metrics, "build_query", recording)
    outputs = []
    for flags in ([], ["--approximate"]):
        result = runner.invoke(
            app,
            ["metrics", "query", "orders,users", "--grain", "day", "--format", "json"]
            + flags
            + ["-w", str(workspace)],
        )
        assert result.exit_code == 0, result.output
        outputs.append(result.stdout)
    assert seen == [False, True]
    exact, approximate = (_json_documents(o) for o in outputs)
    assert approximate == exact
    users = [row["value"] for row in exact[1]]
    assert [row["metric"] for row in exact[1]] == ["users", "users"] and users == [2.0, 2.0]


def _json_documents(text: str) -> list[list[dict]]:
    """The JSON documents printed one after another (one per metric)."""
    decoder, documents, at = json.JSONDecoder(), [], 0
    while at < len(text.rstrip()):
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
        while at < len(text) and text[at].isspace():
            at += 1
    return documents
