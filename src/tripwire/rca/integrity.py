"""Step 2 — check the data before blaming the product.

For the current window against its baseline windows (same clock time on previous days):

* **volume per source and per event** — events per window; a drop is ``z ≤ −4`` under a
  quasi-Poisson with the day-to-day spread of the baseline windows as dispersion;
* **late-arriving events per source** — share received more than ``LATE_SECONDS`` after
  their (skew-corrected) timestamp;
* **schema changes** — per event, properties present in the baseline but missing now (and
  new ones), from the flattened ``prop_*`` columns' non-null shares;
* **missing events against a redundant source** — every order the order ledger records
  (``Ledger Order Recorded``, source ``order-ledger``) should have an ``Order Completed``
  from the app with the same ``order_id``; the share without one is compared with a
  two-proportion z test;
* **rejected events per source** — ingest stores one ``$rejected`` event per message it
  refused (field and reason); a source whose rejected share of submitted messages rose
  significantly (two-proportion z, p < 0.001, +1 pp) lost events before they were stored.

Volumes, lateness, schema and rejections come from one grouped scan of the windows' events
(window × source × event: count, late count, non-null count per ``prop_*`` column).

Verdict: ``measurement issue`` when telemetry lost events the redundant source still
has (the missing share rose significantly while the ledger's own volume did not drop) and
the metric reads those events; ``warning`` for other findings; ``ok`` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import ibis
import numpy as np
from ibis.backends import BaseBackend

from tripwire.events.columns import REJECTED_EVENT
from tripwire.metrics.compile import event_names_read
from tripwire.metrics.definitions import MetricBase
from tripwire.rca.data import WINDOW_COLUMN, Window, windowed_events
from tripwire.stats import MeanStats, two_proportion_z_test

LATE_SECONDS = 300
DROP_Z = -4.0
TELEMETRY_ORDER_EVENT = "Order Completed"
LEDGER_EVENT = "Ledger Order Recorded"
MEASUREMENT_ISSUE, WARNING, OK = "measurement issue", "warning", "ok"


@dataclass(frozen=True)
class VolumeCheck:
    source: str
    event: str  # "*" for the whole source
    baseline_per_window: float
    current: float
    relative_change: float
    z: float
    dropped: bool


@dataclass(frozen=True)
class LatenessCheck:
    source: str
    baseline_late_share: float
    current_late_share: float
    p_value: float
    worse: bool


@dataclass(frozen=True)
class RejectedCheck:
    """``$rejected`` share of a source's submitted messages, baseline vs current."""

    source: str
    baseline_share: float
    current_share: float
    current_rejected: float
    p_value: float
    spike: bool


@dataclass(frozen=True)
class SchemaCheck:
    event: str
    property: str
    baseline_share: float
    current_share: float
    change: str  # missing | new


@dataclass(frozen=True)
class Reconciliation:
    """Ledger orders without a telemetry order, baseline vs current."""

    baseline_ledger: float
    current_ledger: float
    baseline_missing_share: float
    current_missing_share: float
    ledger_relative_change: float
    ledger_z: float
    p_value: float
    telemetry_lost: bool


@dataclass(frozen=True)
class IntegrityReport:
    verdict: str
    evidence: tuple[str, ...]
    volumes: tuple[VolumeCheck, ...]
    lateness: tuple[LatenessCheck, ...]
    schema: tuple[SchemaCheck, ...]
    reconciliation: Reconciliation | None
    rejected: tuple[RejectedCheck, ...]

    @property
    def rejected_events(self) -> str:
        """One line on rejected events for the report."""
        spikes = [r for r in self.rejected if r.spike]
        if spikes:
            return "; ".join(
                f"source {r.source}: {r.current_share:.1%} of submitted messages rejected "
                f"(baseline {r.baseline_share:.1%}, p = {r.p_value:.1e})"
                for r in spikes
            )
        if not self.rejected:
            return "none in the current or baseline windows"
        worst = max(self.rejected, key=lambda r: r.current_share)
        return f"no spike (highest: source {worst.source} {worst.current_share:.1%}, baseline {worst.baseline_share:.1%})"

    @property
    def measurement_issue(self) -> bool:
        return self.verdict == MEASUREMENT_ISSUE


@dataclass(frozen=True)
class WindowCounts:
    """Per (window, source, event): events, late events and non-null ``prop_*`` values."""

    rows: tuple[dict[str, object], ...]
    properties: tuple[str, ...]


def window_counts(
    backend: BaseBackend, current: Window, baselines: Sequence[Window]
) -> WindowCounts:
    """The one scan every volume/lateness/schema/rejection check reads (see the module)."""
    table = windowed_events(backend, {"current": [current], "baseline": baselines})
    props = tuple(c for c in table.columns if c.startswith("prop_"))
    lag = table.received_at.epoch_seconds() - table.timestamp.epoch_seconds()
    aggregates = {
        "n": table.count(),
        "late": (lag > LATE_SECONDS).cast("int64").sum(),
        **{c: table[c].count() for c in props},
    }
    grouped = table.group_by([WINDOW_COLUMN, "source", "event"]).aggregate(**aggregates)
    return WindowCounts(tuple(backend.to_pyarrow(grouped).to_pylist()), props)


def _volumes(counts: WindowCounts, k: int) -> list[VolumeCheck]:
    per: dict[tuple[str, str], list[float]] = {}
    for row in counts.rows:
        if row["event"] == REJECTED_EVENT:
            continue
        slot = per.setdefault((str(row["source"]), str(row["event"])), [0.0, 0.0])
        slot[0 if row[WINDOW_COLUMN] == "baseline" else 1] += float(row["n"])  # type: ignore[arg-type]
    by_source: dict[tuple[str, str], list[float]] = {}
    for (source, _event), (b, c) in per.items():
        slot = by_source.setdefault((source, "*"), [0.0, 0.0])
        slot[0] += b
        slot[1] += c
    out = []
    for (source, event), (b, c) in [*by_source.items(), *per.items()]:
        expected = b / k
        if expected < 5 and c < 5:
            continue
        z = (c - expected) / np.sqrt(max(expected, 1.0) * (1 + 1 / k))
        rel = c / expected - 1 if expected else float("inf")
        out.append(
            VolumeCheck(source, event, expected, c, rel, float(z), bool(z <= DROP_Z and rel < -0.2))
        )
    return sorted(out, key=lambda v: (v.z, v.source, v.event))  # ties: a stable order


def _share_rise(bn: float, bx: float, cn: float, cx: float) -> tuple[float, bool]:
    """p-value of a rise of the share ``x / n`` from baseline to current, and whether it
    counts as one (p < 0.001 and at least one percentage point)."""
    test = two_proportion_z_test(
        MeanStats.from_proportion(bn, bx), MeanStats.from_proportion(cn, cx)
    )
    p = float(test.absolute.p_value)
    return p, bool(p < 1e-3 and cx / cn > bx / bn + 0.01)


def _per_source(counts: WindowCounts, column: str) -> dict[str, dict[str, list[float]]]:
    """Per source and window: [events, Σ column] (``column`` "rejected": $rejected count)."""
    per: dict[str, dict[str, list[float]]] = {}
    for row in counts.rows:
        slot = per.setdefault(str(row["source"]), {}).setdefault(
            str(row[WINDOW_COLUMN]), [0.0, 0.0]
        )
        rejected = row["event"] == REJECTED_EVENT
        if column == "rejected":
            slot[0] += float(row["n"])  # type: ignore[arg-type]
            slot[1] += float(row["n"]) if rejected else 0.0  # type: ignore[arg-type]
        elif not rejected:
            slot[0] += float(row["n"])  # type: ignore[arg-type]
            slot[1] += float(row[column] or 0)  # type: ignore[arg-type]
    return per


def _lateness(counts: WindowCounts) -> list[LatenessCheck]:
    out = []
    for source, parts in sorted(_per_source(counts, "late").items()):
        bn, bl = parts.get("baseline", (0.0, 0.0))
        cn, cl = parts.get("current", (0.0, 0.0))
        if bn < 1 or cn < 1:
            continue
        p, worse = _share_rise(bn, bl, cn, cl)
        out.append(LatenessCheck(source, bl / bn, cl / cn, p, worse))
    return out


def _rejections(counts: WindowCounts) -> list[RejectedCheck]:
    out = []
    for source, parts in sorted(_per_source(counts, "rejected").items()):
        bn, br = parts.get("baseline", (0.0, 0.0))
        cn, cr = parts.get("current", (0.0, 0.0))
        if bn < 1 or cn < 1 or br + cr == 0:
            continue
        p, spike = _share_rise(bn, br, cn, cr)
        out.append(RejectedCheck(source, br / bn, cr / cn, cr, p, spike))
    return out


def _schema(counts: WindowCounts) -> list[SchemaCheck]:
    if not counts.properties:
        return []
    per: dict[str, dict[str, dict[str, float]]] = {}
    for row in counts.rows:
        if row["event"] == REJECTED_EVENT:
            continue
        slot = per.setdefault(str(row["event"]), {}).setdefault(str(row[WINDOW_COLUMN]), {})
        for column in ("n", *counts.properties):
            slot[column] = slot.get(column, 0.0) + float(row[column] or 0)  # type: ignore[arg-type]
    out = []
    for event, parts in sorted(per.items()):
        base, cur = parts.get("baseline"), parts.get("current")
        if not base or not cur or base["n"] < 20 or cur["n"] < 20:
            continue
        for column in counts.properties:
            b, c = base[column] / base["n"], cur[column] / cur["n"]
            name = "properties." + column[len("prop_") :]
            if b >= 0.5 and c == 0:
                out.append(SchemaCheck(event, name, b, c, "missing"))
            elif b == 0 and c >= 0.05:
                out.append(SchemaCheck(event, name, b, c, "new"))
    return out


def _reconcile(
    backend: BaseBackend, current: Window, baselines: Sequence[Window]
) -> Reconciliation | None:
    table = windowed_events(backend, {"current": [current], "baseline": baselines})
    if "prop_order_id" not in table.columns:
        return None
    ledger = table.filter(table.event == LEDGER_EVENT).select(
        WINDOW_COLUMN, order=table.prop_order_id
    )
    events_all = events_table_orders(backend)
    joined = ledger.left_join(events_all, ledger.order == events_all.telemetry_order)
    grouped = joined.group_by(WINDOW_COLUMN).aggregate(
        n=joined.count(), missing=joined.telemetry_order.isnull().cast("int64").sum()
    )
    rows = {r[WINDOW_COLUMN]: r for r in backend.to_pyarrow(grouped).to_pylist()}
    if "baseline" not in rows or "current" not in rows:
        return None
    k = max(len(baselines), 1)
    bn, bm = float(rows["baseline"]["n"]), float(rows["baseline"]["missing"] or 0)
    cn, cm = float(rows["current"]["n"]), float(rows["current"]["missing"] or 0)
    test = two_proportion_z_test(
        MeanStats.from_proportion(bn, bm), MeanStats.from_proportion(cn, cm)
    )
    p = float(test.absolute.p_value)
    expected = bn / k
    ledger_z = float((cn - expected) / np.sqrt(max(expected, 1.0) * (1 + 1 / k)))
    lost = bool(p < 0.05 and cm >= 2 and cm / cn > bm / bn + 0.02 and ledger_z > DROP_Z)
    return Reconciliation(
        expected, cn, bm / bn, cm / cn, cn / expected - 1 if expected else 0.0, ledger_z, p, lost
    )


def missing_order_series(
    backend: BaseBackend, window: Window, bucket: timedelta
) -> tuple[np.ndarray, np.ndarray]:
    """Per bucket of ``window``: ledger orders, and those without an app order (the gap)."""
    table = windowed_events(backend, {"w": [window]})
    if "prop_order_id" not in table.columns:
        count = int(np.ceil(window.duration / bucket))
        return np.zeros(count), np.zeros(count)
    ledger = table.filter(table.event == LEDGER_EVENT).select(
        "timestamp", order=table.prop_order_id
    )
    app = events_table_orders(backend)
    joined = ledger.left_join(app, ledger.order == app.telemetry_order)
    rows = backend.to_pyarrow(
        joined.select("timestamp", missing=joined.telemetry_order.isnull())
    ).to_pylist()
    count = int(np.ceil(window.duration / bucket))
    total, missing = np.zeros(count), np.zeros(count)
    for row in rows:
        index = int((row["timestamp"] - window.start) / bucket)
        if 0 <= index < count:
            total[index] += 1
            missing[index] += 1 if row["missing"] else 0
    return missing, total


def events_table_orders(backend: BaseBackend) -> ibis.Table:
    """Distinct order ids the app reported (``Order Completed``), for the reconciliation."""
    from tripwire.store.engine import events_table

    table = events_table(backend)
    return (
        table.filter((table.event == TELEMETRY_ORDER_EVENT) & table.prop_order_id.notnull())
        .select(telemetry_order=table.prop_order_id)
        .distinct()
    )


def telemetry_loss(
    backend: BaseBackend, metric: MetricBase, current: Window, baselines: Sequence[Window]
) -> Reconciliation | None:
    """Only the ledger reconciliation, when it says the metric's telemetry was lost.

    The cheap early check of an investigation (one query instead of four): the verdict
    "measurement issue" of :func:`check_integrity` rests on exactly this condition.
    """
    reconciliation = _reconcile(backend, current, baselines)
    read = event_names_read(metric) or set()
    if reconciliation is None or not reconciliation.telemetry_lost:
        return None
    return reconciliation if (not read or TELEMETRY_ORDER_EVENT in read) else None


def check_integrity(
    backend: BaseBackend, metric: MetricBase, current: Window, baselines: Sequence[Window]
) -> IntegrityReport:
    """All checks and the verdict (see the module docstring)."""
    counts = window_counts(backend, current, baselines)
    volumes = _volumes(counts, max(len(baselines), 1))
    lateness = _lateness(counts)
    schema = _schema(counts)
    rejected = _rejections(counts)
    reconciliation = _reconcile(backend, current, baselines)
    read = event_names_read(metric) or set()
    evidence: list[str] = []
    verdict = OK
    if reconciliation is not None and reconciliation.telemetry_lost:
        reads_orders = not read or TELEMETRY_ORDER_EVENT in read
        evidence.append(
            f"{reconciliation.current_missing_share:.0%} of the {reconciliation.current_ledger:,.0f} orders the "
            f"order ledger recorded have no app '{TELEMETRY_ORDER_EVENT}' (baseline "
            f"{reconciliation.baseline_missing_share:.1%}, p = {reconciliation.p_value:.1e}); the ledger's own "
            f"volume changed {reconciliation.ledger_relative_change:+.0%} (z = {reconciliation.ledger_z:.1f})"
        )
        verdict = MEASUREMENT_ISSUE if reads_orders else WARNING
        if not reads_orders:
            evidence.append(
                f"{metric.name} does not read '{TELEMETRY_ORDER_EVENT}': the loss does not bias it"
            )
    for v in volumes:
        if v.dropped and (v.event == "*" or not read or v.event in read):
            evidence.append(
                f"source {v.source}{'' if v.event == '*' else ' event ' + repr(v.event)}: "
                f"{v.current:,.0f} vs {v.baseline_per_window:,.1f} per window ({v.relative_change:+.0%}, z = {v.z:.1f})"
            )
            verdict = verdict if verdict == MEASUREMENT_ISSUE else WARNING
    for late in lateness:
        if late.worse:
            evidence.append(
                f"source {late.source}: {late.current_late_share:.1%} of events arrived > {LATE_SECONDS}s late (baseline {late.baseline_late_share:.1%})"
            )
            verdict = verdict if verdict == MEASUREMENT_ISSUE else WARNING
    for r in rejected:
        if r.spike:
            evidence.append(
                f"source {r.source}: {r.current_rejected:,.0f} messages rejected at ingest "
                f"({r.current_share:.1%} of submitted, baseline {r.baseline_share:.1%}, p = {r.p_value:.1e})"
            )
            verdict = verdict if verdict == MEASUREMENT_ISSUE else WARNING
    for item in schema:
        if not read or item.event in read:
            evidence.append(
                f"{item.event}: property {item.property} {item.change} ({item.baseline_share:.0%} → {item.current_share:.0%})"
            )
            verdict = verdict if verdict == MEASUREMENT_ISSUE else WARNING
    if not evidence:
        evidence.append(
            "volumes, lateness, rejections, schema and the ledger reconciliation are consistent with the baseline"
        )
    return IntegrityReport(
        verdict,
        tuple(evidence),
        tuple(volumes),
        tuple(lateness),
        tuple(schema),
        reconciliation,
        tuple(rejected),
    )
