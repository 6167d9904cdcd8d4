"""``tripwire monitor run`` and ``tripwire alerts …`` on a tiny hand-made lake."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tripwire.cli.main import app
from tripwire.store.lake import write_events
from tripwire.store.workspace import Workspace, init_workspace

START = datetime(2026, 11, 2, tzinfo=UTC)
METRICS = """\
metrics:
  - name: signups
    type: count
    events: [Signed Up]
    dimensions: [locale]
"""
MONITORS = """\
monitors:
  - name: signups
    metric: signups
    segments: {dimensions: [locale], depth: 1}
    detector: {calibration: 1d, warmup: 6h, threshold: 8}
    rules:
      - {name: signup_burst, severity: P2, above: 5, for: 3m, resolve_after: 10m}
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """Two days of one signup a minute (alternating locales), and a 10-minute burst of 8 a
    minute in en-GB on day 2 at 12:00."""
    ws = init_workspace(tmp_path / "ws")
    (ws.metrics_dir / "m.yaml").write_text(METRICS)
    (ws.monitors_dir / "m.yaml").write_text(MONITORS)
    events = []
    for minute in range(2 * 1440):
        at = START + timedelta(minutes=minute, seconds=5)
        burst = 1440 + 720 <= minute < 1440 + 730
        for i in range(8 if burst else 1):
            events.append(
                {
                    "messageId": f"m{minute}-{i}",
                    "type": "track",
                    "event": "Signed Up",
                    "userId": f"u{minute}-{i}",
                    "timestamp": at.isoformat(),
                    "receivedAt": at.isoformat(),
                    "source": "app",
                    "context": {"locale": "en-GB" if burst or minute % 2 else "de-DE"},
                    "properties": {},
                }
            )
    write_events(ws.lake_dir, events)
    return ws


def test_monitor_run_and_alert_actions(workspace: Workspace) -> None:
    runner = CliRunner()
    root = str(workspace.root)
    dry = runner.invoke(app, ["monitor", "run", "--since", "2d", "-w", root])
    assert dry.exit_code == 0, dry.output
    assert "2 alert(s) from 1 monitor(s) (dry run: not recorded)" in dry.output
    assert (
        json.loads(
            runner.invoke(app, ["alerts", "list", "--status", "all", "--json", "-w", root]).output
        )
        == []
    )

    recorded = runner.invoke(app, ["monitor", "run", "--since", "2d", "--record", "-w", root])
    assert recorded.exit_code == 0, recorded.output
    alerts = json.loads(
        runner.invoke(app, ["alerts", "list", "--status", "all", "--json", "-w", root]).output
    )
    by_segment = {json.dumps(a["segment"]): a for a in alerts}
    # the burst pages on the aggregate and on en-GB (grouped under the first), not on de-DE
    assert set(by_segment) == {"{}", '{"locale": "en-GB"}'}
    first = by_segment["{}"]
    assert first["opened_at"] == "2026-11-03T12:03:00Z"  # 3 minutes held, known at the bucket's end
    assert first["onset_at"] == "2026-11-03T12:00:00Z"
    assert first["status"] == "resolved" and first["resolved_by"] == "auto"
    assert by_segment['{"locale": "en-GB"}']["group_id"] == first["id"]

    again = runner.invoke(app, ["alerts", "ack", str(first["id"]), "-w", root])
    assert again.exit_code == 1 and "nothing to acknowledge" in again.output
    hush = runner.invoke(
        app, ["alerts", "silence", "--monitor", "signups", "--for", "2h", "-w", root]
    )
    assert hush.exit_code == 0 and "until" in hush.output
    refused = runner.invoke(app, ["alerts", "silence", "-w", root])
    assert refused.exit_code == 2 and "a silence needs a monitor" in refused.output
    unknown = runner.invoke(app, ["monitor", "run", "--monitor", "nope", "-w", root])
    assert unknown.exit_code == 2 and "unknown monitor(s): nope" in unknown.output


def test_ack_and_resolve_an_open_alert(workspace: Workspace) -> None:
    from tripwire.monitor.alerts import AlertDraft, AlertStore

    now = datetime.now(UTC)
    with AlertStore.for_workspace(workspace) as store:
        alert_id = store.fire(
            AlertDraft(
                "signups", "signup_burst", "signups", "P2", {}, now, now, 9, 1, 0, 2, 1, "> 5"
            )
        ).alert_id
    runner = CliRunner()
    root = str(workspace.root)
    acked = runner.invoke(app, ["alerts", "ack", str(alert_id), "--by", "me", "-w", root])
    assert acked.exit_code == 0 and "acknowledged" in acked.output
    listed = json.loads(runner.invoke(app, ["alerts", "list", "--json", "-w", root]).output)
    assert [(a["id"], a["status"], a["acked_by"]) for a in listed] == [
        (alert_id, "acknowledged", "me")
    ]
    done = runner.invoke(app, ["alerts", "resolve", str(alert_id), "--note", "fixed", "-w", root])
    assert done.exit_code == 0 and "resolved" in done.output
    assert json.loads(runner.invoke(app, ["alerts", "list", "--json", "-w", root]).output) == []
