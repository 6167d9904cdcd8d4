"""`tripwire sql`, `status`, `archive`, `consumers list|rewind` through the real Typer app."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tripwire.cli.main import app
from tripwire.store.buffer import Buffer
from tripwire.store.workspace import init_workspace

runner = CliRunner()


def envelope(i: int) -> dict:
    return {
        "messageId": f"m{i}",
        "type": "track",
        "event": "Order Completed" if i % 2 else "Turn Completed",
        "userId": f"u{i % 3}",
        "timestamp": f"2026-11-0{1 + i % 2}T10:00:00Z",
        "properties": {"revenue": float(i)},
        "context": {"locale": "en-GB"},
    }


@pytest.fixture
def workspace(tmp_path):
    ws = init_workspace(tmp_path / "ws")
    with Buffer.for_workspace(ws) as buffer:
        buffer.append([envelope(i) for i in range(10)])
    return ws


def invoke(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return result


def test_archive_then_sql_in_every_format(workspace, tmp_path):
    w = ["--workspace", str(workspace.root)]
    archived = invoke("archive", "--compact", *w)
    assert archived.exit_code == 0, archived.output
    assert "archived 10 events" in archived.output

    table = invoke("sql", "SELECT event, count(*) AS n FROM events GROUP BY 1 ORDER BY 1", *w)
    assert (
        table.exit_code == 0
        and "Order Completed" in table.output
        and "Turn Completed" in table.output
    )

    as_json = invoke(
        "sql", "SELECT message_id, prop_revenue FROM events ORDER BY prop_revenue", "-f", "json", *w
    )
    rows = json.loads(as_json.stdout)
    assert [r["message_id"] for r in rows] == [f"m{i}" for i in range(10)]

    as_csv = invoke("sql", "SELECT locale, count(*) AS n FROM events GROUP BY 1", "-f", "csv", *w)
    assert as_csv.stdout.splitlines() == ['"locale","n"', '"en-GB",10']

    target = tmp_path / "out.parquet"
    as_parquet = invoke("sql", "SELECT * FROM events", "-f", "parquet", "-o", str(target), *w)
    assert as_parquet.exit_code == 0 and pq.read_table(target).num_rows == 10


def test_sql_errors_are_reported_not_raised(workspace):
    bad = invoke("sql", "SELECT nope FROM events", "--workspace", str(workspace.root))
    assert bad.exit_code == 1 and "query failed" in bad.output
    missing = invoke("sql", "SELECT 1", "-f", "parquet", "--workspace", str(workspace.root))
    assert missing.exit_code == 2 and "--output" in missing.output


def test_status_shows_depth_lag_lake_and_days(workspace):
    w = ["--workspace", str(workspace.root)]
    before = invoke("status", *w)
    assert before.exit_code == 0, before.output
    assert "depth (not archived)" in before.output and "archiver" in before.output
    invoke("archive", *w)
    after = invoke("status", *w)
    assert "Events per day" in after.output
    assert "2026-11-01" in after.output and "2026-11-02" in after.output


def test_consumers_list_and_rewind(workspace):
    w = ["--workspace", str(workspace.root)]
    with Buffer.for_workspace(workspace) as buffer:
        buffer.commit("monitor", 8)
    listed = invoke("consumers", "list", *w)
    assert "monitor" in listed.output and "archiver" in listed.output
    rewound = invoke("consumers", "rewind", "monitor", "--offset", "3", *w)
    assert rewound.exit_code == 0 and "from offset 3" in rewound.output
    with Buffer.for_workspace(workspace) as buffer:
        assert buffer.committed("monitor") == 2
    refused = invoke("consumers", "rewind", "monitor", "--offset", "99", *w)
    assert refused.exit_code == 1 and "offsets run from 1 to 10" in refused.output
    both = invoke("consumers", "rewind", "monitor", *w)
    assert both.exit_code == 2

    invoke("archive", "--chunk-rows", "5", *w)
    inside = invoke("consumers", "rewind", "archiver", "--offset", "3", *w)
    assert inside.exit_code == 1 and "falls inside" in inside.output
    boundary = invoke("consumers", "rewind", "archiver", "--offset", "6", *w)
    assert boundary.exit_code == 0
    assert "archived 5 events" in invoke("archive", *w).output
    count = invoke("sql", "SELECT count(*) AS n FROM events", "-f", "csv", *w)
    assert count.stdout.splitlines()[1] == "10"
