"""The demo's monitor step: install the default monitors, backfill the simulated days, and
print the alerts with their onset and the changes that preceded them.

It records the alerts in the workspace's state database (so ``tripwire alerts list`` and
the dashboard show them) without notifying, and, when the world's ground truth is there,
prints for each planted incident the first alert that named its segment or metric and the
detection delay after the planted onset.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ibis.backends import BaseBackend
from rich.console import Console

from tripwire.metrics.catalog import install_catalog
from tripwire.monitor.alerts import Alert, AlertStore
from tripwire.monitor.changes import dimension_key
from tripwire.monitor.defaults import install_default_monitors
from tripwire.monitor.llr import binomial_information as llr_binomial_information
from tripwire.monitor.llr import detection_delay_bound, poisson_information
from tripwire.monitor.runner import (
    MonitorEvaluator,
    apply_events,
    floor_to,
    lake_range,
    load_definitions,
    run_backfill,
)
from tripwire.monitor.series import counts_numerator, fetch_ticks, segment_label
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


@dataclass(frozen=True)
class Detection:
    """The first alert that caught a planted incident, and how long after its onset."""

    incident: str
    alert: Alert
    delay_minutes: float
    cause_listed: bool  # some matching alert lists the incident's cause among its changes


def _caught(alert: Alert, incident: dict[str, Any]) -> bool:
    """On the incident (:func:`matches_incident`) and opened from 30 minutes before onset to
    an hour after its end (an hourly bucket holding the end is evaluated when it closes)."""
    onset, end = _parse(incident["start"]), _parse(incident["end"])
    return matches_incident(alert, incident) and (
        onset - timedelta(minutes=30) <= alert.opened_at <= end + timedelta(hours=1)
    )


def first_detection(alerts: Sequence[Alert], incident: dict[str, Any]) -> Detection | None:
    """The earliest alert that caught the incident, or None when none did."""
    hits = sorted((a for a in alerts if _caught(a, incident)), key=lambda a: a.opened_at)
    if not hits:
        return None
    cause = incident["change"]
    listed = any(
        c["service"] == cause["service"] and c["version"] == cause["version"]
        for a in hits
        for c in a.changes
    )
    delay = (hits[0].opened_at - _parse(incident["start"])).total_seconds() / 60
    return Detection(incident["id"], hits[0], delay, listed)


def false_pages_on_quiet_days(alerts: Sequence[Alert], truth: dict[str, Any]) -> list[Alert]:
    """P1/P2 pages (group heads) opened on the world's incident-free days that no planted
    incident explains (an hourly alert on an incident ending late may open after midnight)."""
    quiet = set(truth.get("incident_free_days", []))
    incidents = truth.get("incidents", [])
    return [
        a
        for a in alerts
        if a.severity in ("P1", "P2")
        and a.is_group_head
        and a.opened_at.date().isoformat() in quiet
        and not any(_caught(a, i) for i in incidents)
    ]


@dataclass(frozen=True)
class DelayBound:
    """The earliest a change detector could flag an incident on one watched series."""

    minutes: float
    monitor: str
    segment: str
    information: float  # nats per tick (KL of the incident's data against the normal)


def information_bound(
    backend: BaseBackend, evaluators: Sequence[MonitorEvaluator], incident: dict[str, Any]
) -> DelayBound | None:
    """Lorden's bound ``log γ / I`` for the incident on the best-placed watched series.

    For each detector monitor of an affected metric, the deepest watched segment consistent
    with the planted one is measured at the monitor's grain: its traffic and share (or
    count) during the incident against the same clock times of up to three days before.
    ``I`` is the Kullback–Leibler information per tick of that change (binomial for shares,
    Poisson for counts) and ``γ`` the series' share of the monitor's false-alarm budget in
    ticks, so no detector with that false-alarm rate can, on average, flag it sooner than
    ``log γ / I`` ticks (to first order; :func:`tripwire.monitor.llr.detection_delay_bound`).
    A ratio of counts whose numerator stays within its denominator counts as a share of
    the denominator's units; other metrics are skipped (their noise is not a count's).
    """
    onset, end = _parse(incident["start"]), _parse(incident["end"])
    planted = {k: str(v) for seg in incident["segments"] for k, v in seg.items()}
    best: DelayBound | None = None
    for ev in evaluators:
        monitor, metric = ev.monitor, ev.metric
        detects = any(r.kind == "detector" for r in monitor.rules)
        kind = ev.bank.config.kind
        count = kind == "value" and metric.type == "count"
        if not detects or metric.name not in incident["affected_metrics"]:
            continue
        if kind not in ("proportion", "ratio") and not count:
            continue
        fits = [
            s
            for s in ev.segments
            if all(planted.get(dimension_key(k), v) == v for k, v in s.items())
        ]
        segment = max(fits, key=len)
        step = monitor.step_seconds
        first = floor_to(onset - timedelta(days=3), step)
        stop = floor_to(end, step) + timedelta(seconds=step)
        ticks = fetch_ticks(backend, monitor, metric, [segment], first, stop)
        ts = ticks.timestamps
        during = (ts >= floor_to(onset, step).timestamp()) & (ts < end.timestamp())
        clock = ts % 86_400
        lo, hi = onset.timestamp() % 86_400, end.timestamp() % 86_400
        same = (clock >= lo) & (clock < hi) if lo < hi else (clock >= lo) | (clock < hi)
        before = same & (ts < onset.timestamp() - 3600)
        num, den = ticks.numerators[:, 0], ticks.denominators[:, 0]
        if not during.any() or not before.any():
            continue
        if count:
            info = poisson_information(float(num[during].mean()), float(num[before].mean()))
        else:
            if den[during].sum() <= 0 or den[before].sum() <= 0:
                continue
            # a ratio of counts is judged as a share of its denominator's units (telemetry
            # orders of ledger orders) when its numerator does not outgrow the denominator
            if kind == "ratio" and (
                not counts_numerator(metric) or num[before].sum() > 1.01 * den[before].sum()
            ):
                continue
            p1 = float(num[during].sum() / den[during].sum())
            p0 = float(num[before].sum() / den[before].sum())
            info = float(den[during].mean()) * llr_binomial_information(p1, p0)
        budget = monitor.detector.false_alarms_per_30_days / len(ev.segments)
        gamma = 30 * 86_400 / step / budget
        minutes = detection_delay_bound(info, gamma) * step / 60
        if best is None or minutes < best.minutes:
            best = DelayBound(minutes, monitor.name, segment_label(segment), info)
    return best


def _bound_text(bound: DelayBound | None, incident: dict[str, Any]) -> str:
    if bound is None:
        return ""
    lasted = (_parse(incident["end"]) - _parse(incident["start"])).total_seconds() / 60
    if not math.isfinite(bound.minutes):
        return "; the watched series show no change at this traffic"
    where = f"{bound.monitor} on {bound.segment}"
    if bound.minutes > lasted:
        return (
            f"; at this traffic no test with this false-alarm rate can, on average, detect it"
            f" within the incident's {lasted:.0f} min (it needs ~{bound.minutes:.0f} min;"
            f" best series: {where})"
        )
    return (
        f"; at this traffic no test with this false-alarm rate can, on average, detect it"
        f" earlier than ~{bound.minutes:.0f} min ({where})"
    )


def run_monitor_step(
    workspace: Workspace, console: Console, *, only: Sequence[str] | None = None
) -> list[Alert]:
    """Install default monitors, backfill the lake's range, record and print the alerts.

    ``only`` restricts the backfill to these monitors. The 14 default monitors over the
    default demo's 14 days cost ~35 s of CPU (over half of it the six minute-grain
    monitors: five static thresholds, whose detectors still run for the expected values
    alerts carry, and the resolution detector).
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
            found = first_detection(alerts, incident)
            bound = information_bound(backend, result.evaluators, incident)
            if found is not None:
                first = found.alert
                cause = incident["change"]
                console.print(
                    f"[green]caught[/green] {incident['id']}: {first.severity} {first.monitor} on"
                    f" {first.segment_text} {found.delay_minutes:.0f} min after onset (began ~{first.onset_at:%H:%M});"
                    f" cause {cause['service']} {cause['version']} {'listed' if found.cause_listed else 'not listed'} among the changes"
                    + _bound_text(bound, incident)
                )
            else:
                console.print(
                    f"[red]missed[/red] {incident['id']} ({incident['metric']})"
                    + _bound_text(bound, incident)
                )
        false_pages = false_pages_on_quiet_days(alerts, truth)
        console.print(
            f"false P1/P2 pages on the {len(truth.get('incident_free_days', []))} incident-free"
            f" days: {len(false_pages)}"
        )
    pages = [a for a in alerts if a.severity in ("P1", "P2") and a.is_group_head]
    console.print(
        f"{len(alerts)} alert(s), {len(pages)} P1/P2 page(s); see `tripwire alerts list -w {workspace.root} --status all`"
    )
    return alerts
