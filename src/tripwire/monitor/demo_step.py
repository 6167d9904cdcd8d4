"""The demo's monitor step: install the default monitors, backfill the simulated days, and
print the alerts with their onset and the changes that preceded them.

It records the alerts in the workspace's state database (so ``tripwire alerts list`` and
the dashboard show them) without notifying, and, when the world's ground truth is there,
prints for each planted incident the first alert that named its segment or metric and the
detection delay after the planted onset.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from rich.console import Console

from tripwire.metrics.catalog import install_catalog
from tripwire.monitor.alerts import Alert, AlertStore
from tripwire.monitor.changes import dimension_key
from tripwire.monitor.defaults import install_default_monitors
from tripwire.monitor.runner import apply_events, lake_range, load_definitions, run_backfill
from tripwire.monitor.tables import alerts_table
from tripwire.store.engine import connect
from tripwire.store.workspace import Workspace


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def matches_incident(alert: Alert, incident: dict[str, Any]) -> bool:
    """The alert is on an affected metric and its segment does not contradict the planted one
    (the aggregate, or any part of the planted segment, counts)."""
    if alert.metric not in incident["affected_metrics"]:
        return False
    planted = {k: str(v) for seg in incident["segments"] for k, v in seg.items()}
    return all(planted.get(dimension_key(k), v) == v for k, v in alert.segment.items())


def run_monitor_step(
    workspace: Workspace, console: Console, *, only: Sequence[str] | None = None
) -> list[Alert]:
    """Install default monitors, backfill the lake's range, record and print the alerts.

    ``only`` restricts the backfill to these monitors. All 13 default monitors over the
    default demo's 14 days cost ~30 s of CPU (half of it the five minute-grain threshold
    monitors, whose detectors still run for the expected values alerts carry).
    """
    install_catalog(workspace)
    install_default_monitors(workspace)
    monitors, catalog = load_definitions(workspace)
    chosen = [m for m in monitors if only is None or m.name in only]
    backend = connect(workspace)
    span = lake_range(backend)
    if span is None:
        console.print("[yellow]the lake is empty: no monitors to run[/yellow]")
        return []
    start, end = span
    # A monitor needs its calibration window plus at least one grain of data to evaluate;
    # on a short lake (a quick demo) the others are skipped with a note, not an error.
    fits = [
        m
        for m in chosen
        if start + m.detector.calibration + timedelta(seconds=2 * m.step_seconds) < end
    ]
    skipped = sorted(m.name for m in chosen if m not in fits)
    if skipped:
        console.print(
            f"[yellow]skipped {len(skipped)} monitor(s) whose calibration window is longer than"
            f" the lake's {end - start} of data:[/yellow] {', '.join(skipped)}"
        )
    if not fits:
        return []
    result = run_backfill(backend, fits, catalog, start=start, end=end)
    with AlertStore.for_workspace(workspace) as store:
        store.changes.sync_lake(backend, start=start, end=end)
        applied = apply_events(store, result.events)
        ids = sorted({i for _, i in applied if i is not None})
        alerts = [store.get(i) for i in ids]
    console.print(
        alerts_table(
            alerts, f"alerts over {start:%m-%d} → {end:%m-%d} (calibrated on the first days)"
        )
    )
    truth_path = workspace.data_dir / "sim" / "ground_truth.json"
    if truth_path.exists():
        truth = json.loads(truth_path.read_text())
        for incident in truth.get("incidents", []):
            onset = _parse(incident["start"])
            hits = sorted(
                (
                    a
                    for a in alerts
                    if matches_incident(a, incident)
                    # an hourly bucket holding the incident's end is evaluated when it closes
                    and onset - timedelta(minutes=30)
                    <= a.opened_at
                    <= _parse(incident["end"]) + timedelta(hours=1)
                ),
                key=lambda a: a.opened_at,
            )
            if hits:
                first = hits[0]
                delay = (first.opened_at - onset).total_seconds() / 60
                cause = incident["change"]
                named = any(
                    c["service"] == cause["service"] and c["version"] == cause["version"]
                    for a in hits
                    for c in a.changes
                )
                console.print(
                    f"[green]caught[/green] {incident['id']}: {first.severity} {first.monitor} on"
                    f" {first.segment_text} {delay:.0f} min after onset (began ~{first.onset_at:%H:%M});"
                    f" cause {cause['service']} {cause['version']} {'listed' if named else 'not listed'} among the changes"
                )
            else:
                console.print(f"[red]missed[/red] {incident['id']} ({incident['metric']})")
    pages = [a for a in alerts if a.severity in ("P1", "P2") and a.is_group_head]
    console.print(
        f"{len(alerts)} alert(s), {len(pages)} P1/P2 page(s); see `tripwire alerts list -w {workspace.root} --status all`"
    )
    return alerts
