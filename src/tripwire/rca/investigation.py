"""Run the whole investigation: one call from "this metric looks wrong at TIME" to a result.

1. A provisional window (the two hours before ``at``) is localized against its baseline,
   on the metric and on each step of the related funnel (:mod:`tripwire.rca.segments`).
2. The strongest localized signal's time series gives the regime: onset and, when later
   data exists, the recovery (:func:`tripwire.rca.problem.locate_regime`).
3. On the regime's window: problem definition, data integrity, final localization, funnel
   breakpoint, changes and category, impact, recommendations.

The result is a frozen :class:`Investigation`, stored as an incident in the state
database (:mod:`tripwire.rca.incidents`) together with the alert it started from.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from ibis.backends import BaseBackend

from tripwire.metrics.catalog import catalog_files
from tripwire.metrics.definitions import FunnelMetric, MetricBase, events_read
from tripwire.metrics.loader import MetricCatalog, load_catalog, metric_files
from tripwire.monitor.changes import Change, ChangeLog
from tripwire.rca import data
from tripwire.rca.breakpoint import BreakpointReport, find_breakpoint, related_funnel
from tripwire.rca.changes import ChangeAnalysis, analyze_changes, mix_share
from tripwire.rca.data import InvestigationError, Window
from tripwire.rca.impact import Impact, estimate_impact
from tripwire.rca.integrity import (
    IntegrityReport,
    Reconciliation,
    check_integrity,
    missing_order_series,
    telemetry_loss,
)
from tripwire.rca.localize import LOCALIZED
from tripwire.rca.problem import (
    ONSET_LOOKBACK,
    REGIME_LOOKAHEAD,
    ProblemDefinition,
    Regime,
    define_problem,
    locate_regime,
    residual_z,
)
from tripwire.rca.recommend import Recommendation, recommend
from tripwire.rca.segments import (
    CONFIRM_ALPHA,
    SegmentFinding,
    SegmentResult,
    choose,
    describe,
    localize_metric,
    localize_steps,
    metric_moved_in,
)
from tripwire.store.engine import connect
from tripwire.store.workspace import Workspace

PROVISIONAL = timedelta(hours=2)
#: Without a localized segment, the metric's own change must be this significant for a
#: change-log entry to be blamed.
MOVED_P = 0.01
#: What the summary says when no segment is named, by localization verdict.
NO_SEGMENT_TEXT = {
    "global": "no localized segment (global change)",
    "no_change": "no localized segment (no significant change in any segment)",
    "insufficient_data": "no localized cause (insufficient data: the candidate segments are "
    "not significant given their volume)",
}
#: Provisional windows ending at ``at``, tried in turn until one localizes.
PROVISIONAL_LENGTHS = (PROVISIONAL, timedelta(hours=1), timedelta(minutes=30))


@dataclass(frozen=True)
class Investigation:
    """Everything one investigation found (frozen; stored with the incident)."""

    id: str
    metric: str
    at: datetime
    alert_id: int | None
    problem: ProblemDefinition
    integrity: IntegrityReport
    segments: SegmentResult
    breakpoint: BreakpointReport
    changes: ChangeAnalysis
    impact: Impact
    recommendation: Recommendation
    started_at: datetime
    seconds: float

    @property
    def root_segments(self) -> tuple[dict[str, str], ...]:
        return self.segments.segments

    @property
    def category(self) -> str:
        return self.changes.category

    def summary(self) -> str:
        """The executive summary in two or three sentences."""
        p = self.problem
        parts = [p.headline() + "."]
        if self.integrity.measurement_issue:
            parts.append("Measurement issue: " + self.integrity.evidence[0] + ".")
        where = "; ".join(describe(s) for s in self.root_segments) or NO_SEGMENT_TEXT.get(
            self.segments.verdict, "no localized segment"
        )
        parts.append(f"Where: {where}.")
        if self.breakpoint.breakpoint:
            parts.append(f"Funnel breakpoint: {self.breakpoint.breakpoint}.")
        top = self.changes.implicated
        if top is not None:
            c = top.change
            parts.append(
                f"Cause: {c['kind']} {c['service']} {c.get('version', '')} ({self.category})."
            )
        else:
            parts.append(f"Category: {self.category}.")
        if self.impact.loss_per_day is not None and not self.integrity.measurement_issue:
            parts.append(f"Impact ≈ {self.impact.loss_per_day:,.0f} per day in revenue.")
        return " ".join(parts)


def metric_catalog(workspace: Workspace) -> MetricCatalog:
    """The workspace's metrics, falling back to the shipped day-1 catalog for missing names."""
    own = load_catalog(metric_files(workspace), root=workspace.root)
    shipped = load_catalog(catalog_files())
    merged = {**shipped.metrics, **own.metrics}
    return MetricCatalog(merged, {**shipped.sources, **own.sources})


def incident_id(metric: str, onset: datetime) -> str:
    text = f"{metric}|{onset.isoformat()}"
    return "inc_" + hashlib.blake2b(text.encode(), digest_size=5).hexdigest()


def _localize(
    backend: BaseBackend,
    metric: MetricBase,
    funnel: FunnelMetric | None,
    current: Window,
    baselines: tuple[Window, ...],
    *,
    alpha: float = CONFIRM_ALPHA,
) -> tuple[SegmentResult, dict[str, data.LeafTable], dict[str, data.FunnelCounts] | None]:
    """Read the leaf tables of ``current`` and its baselines (one scan each) and localize."""
    dims = data.investigation_dimensions(metric)
    windows = {"baseline": baselines, "current": (current,)}
    leaves = data.metric_leaves(backend, metric, dims, windows)
    counts = None
    if funnel is not None:
        counts = data.funnel_counts(backend, funnel, data.investigation_dimensions(funnel), windows)
    return _localized(metric, leaves, counts, alpha=alpha), leaves, counts


def _localized(
    metric: MetricBase,
    leaves: dict[str, data.LeafTable],
    counts: dict[str, data.FunnelCounts] | None,
    *,
    alpha: float,
) -> SegmentResult:
    """Localize the metric and every funnel step on read leaf tables; keep the strongest."""
    additive = metric.type in ("count", "sum", "distinct")
    finding = SegmentFinding(
        "metric",
        localize_metric(leaves["baseline"], leaves["current"], additive=additive, alpha=alpha),
    )
    steps: list[SegmentFinding] = []
    if counts is not None:
        steps = localize_steps(counts["baseline"], counts["current"], alpha=alpha)
    # A sum (revenue) has no exact count test: its step views need the metric to move overall.
    moved = (
        metric_moved_in(leaves["baseline"], leaves["current"], additive=additive)
        if metric.type != "sum"
        else None
    )
    return choose(finding, steps, moved)


def _regime(
    backend: BaseBackend,
    metric: MetricBase,
    funnel: FunnelMetric | None,
    result: SegmentResult,
    leaves: dict[str, data.LeafTable],
    counts: dict[str, data.FunnelCounts] | None,
    at: datetime,
    bounds: tuple[datetime, datetime],
    provisional: Window,
) -> Regime:
    span = Window(max(at - ONSET_LOOKBACK, bounds[0]), min(at + REGIME_LOOKAHEAD, bounds[1]))
    segment = result.segments[0] if result.segments else {}
    measure = result.chosen.measure
    if measure.startswith("step:") and funnel is not None and counts is not None:
        names = [s.label for s in funnel.steps]
        k = names.index(measure[len("step:") :])
        fdims = data.investigation_dimensions(funnel)
        where = data.segment_where(segment, fdims)
        entered = data.funnel_series(backend, funnel, span, where)
        base = counts["baseline"].total(counts["baseline"].select(segment))
        rate = base[k] / base[k - 1] if base[k - 1] else 0.5
        series = data.Series(
            tuple(span.start + i * data.BUCKET for i in range(entered.shape[0])),
            entered[:, k],
            entered[:, k - 1],
        )
        z = residual_z(series, rate, additive=False)
    else:
        dims = leaves["baseline"].dimensions
        where = data.segment_where(segment, dims)
        series = data.metric_series(backend, metric, span, where)
        base_leaves = leaves["baseline"]
        mask = base_leaves.select(segment) if segment else np.ones(base_leaves.size, dtype=bool)
        additive = metric.type in ("count", "sum", "distinct")
        if additive:
            # Same clock-time buckets of the previous days are the expectation (seasonality).
            history = data.metric_series(
                backend, metric, Window(span.start - timedelta(days=7), span.end), where
            )
            per_day = int(timedelta(days=1) / data.BUCKET)
            values = history.numerator
            n = series.numerator.size
            offset = values.size - n
            lagged = [
                values[offset - d * per_day : offset - d * per_day + n]
                for d in range(1, 8)
                if offset - d * per_day >= 0
            ]
            expected = np.mean(lagged, axis=0) if lagged else np.full(n, values.mean())
            z = residual_z(series, expected, additive=True)
        else:
            den = float(base_leaves.denominator[mask].sum())
            z = residual_z(
                series,
                float(base_leaves.numerator[mask].sum()) / den if den else 0.5,
                additive=False,
            )
    regime = locate_regime(series.starts, z, at)
    inside = (np.array([t.timestamp() for t in series.starts]) >= regime.onset.timestamp()) & (
        np.array([t.timestamp() for t in series.starts]) < regime.end.timestamp()
    )
    strength = abs(float(z[inside].sum())) / np.sqrt(max(int(inside.sum()), 1))
    if not result.segments and strength < 4.0 or strength < 3.0:
        # No clear regime in the signal: keep the provisional window rather than invent one.
        return Regime(
            provisional.start,
            provisional.end,
            False,
            "step",
            regime.shift,
            f"no significant change point (|Σz|/√n = {strength:.1f}); the provisional window is used",
        )
    return regime


def _measurement_regime(
    backend: BaseBackend, lost: Reconciliation, at: datetime, bounds: tuple[datetime, datetime]
) -> Regime:
    """The regime of lost telemetry: change points of the share of ledger orders the app missed."""
    span = Window(max(at - ONSET_LOOKBACK, bounds[0]), min(at + REGIME_LOOKAHEAD, bounds[1]))
    missing, total = missing_order_series(backend, span, data.BUCKET)
    series = data.Series(
        tuple(span.start + i * data.BUCKET for i in range(total.size)), missing, total
    )
    z = residual_z(series, max(lost.baseline_missing_share, 0.002), additive=False)
    return locate_regime(series.starts, z, at)


def _provisional(
    backend: BaseBackend,
    metric: MetricBase,
    funnel: FunnelMetric | None,
    at: datetime,
    bounds: tuple[datetime, datetime],
) -> tuple[Window, SegmentResult, dict[str, data.LeafTable], dict[str, data.FunnelCounts] | None]:
    """Localize the windows ending at ``at`` (2 h, then 1 h, then 30 min) until one localizes.

    A page an hour into an incident puts half of a two-hour window before the onset,
    which halves the signal of a thin segment; the shorter windows are tried only when
    the longer one finds nothing. Each window's confirmation runs at a third of the
    family-wise level, so the fallbacks do not add invented causes.

    One scan serves all three: the two hours are read as disjoint pieces (and the same
    pieces on the baseline days) and each window's leaf table is a sum of pieces. For
    distinct counts a unit spanning two pieces is counted in both — an approximation
    that only steers the onset search; the final localization reads its window exactly.
    """
    edges = [max(at - length, bounds[0]) for length in PROVISIONAL_LENGTHS] + [min(at, bounds[1])]
    pieces: dict[str, tuple[Window, ...]] = {}
    days = None  # every piece gets as many baseline days as the earliest one has
    for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
        if hi > lo:
            piece = Window(lo, hi)
            if days is None:
                days = len(data.baseline_windows(piece, data_start=bounds[0]))
            pieces[f"current{i}"] = (piece,)
            pieces[f"baseline{i}"] = data.baseline_windows(piece, days=days)
    dims = data.investigation_dimensions(metric)
    windows = {name: group for name, group in pieces.items() if group}
    leaves = data.metric_leaves(backend, metric, dims, windows)
    counts = (
        data.funnel_counts(backend, funnel, data.investigation_dimensions(funnel), windows)
        if funnel is not None
        else None
    )
    additive = metric.type in ("count", "sum", "distinct")
    tried = None
    for i in range(len(PROVISIONAL_LENGTHS)):
        names = [
            f"current{j}" for j in range(i, len(PROVISIONAL_LENGTHS)) if f"current{j}" in windows
        ]
        if not names:
            continue
        window = Window(
            edges[i] if f"current{i}" in windows else pieces[names[0]][0].start, edges[-1]
        )
        has_baseline = all(f"baseline{n[len('current') :]}" in windows for n in names)
        if not has_baseline:
            continue
        window_leaves = {
            "current": _sum_pieces([leaves[n] for n in names], not additive),
            "baseline": _sum_pieces(
                [leaves["baseline" + n[len("current") :]] for n in names], not additive
            ),
        }
        window_counts = (
            {
                "current": _sum_funnels([counts[n] for n in names]),
                "baseline": _sum_funnels([counts["baseline" + n[len("current") :]] for n in names]),
            }
            if counts is not None
            else None
        )
        result = _localized(
            metric,
            window_leaves,
            window_counts,
            alpha=CONFIRM_ALPHA / len(PROVISIONAL_LENGTHS),
        )
        if tried is None or result.verdict == LOCALIZED:
            tried = (window, result, window_leaves, window_counts)
        if result.verdict == LOCALIZED:
            break
    if tried is None:
        window = Window(edges[0], edges[-1])
        return (window, *_localize(backend, metric, funnel, window, ()))
    return tried


def _sum_pieces(tables: list[data.LeafTable], add_denominators: bool) -> data.LeafTable:
    out = tables[0]
    for table in tables[1:]:
        out = out.plus(table, add_denominators=add_denominators)
    return out


def _sum_funnels(tables: list[data.FunnelCounts]) -> data.FunnelCounts:
    out = tables[0]
    for table in tables[1:]:
        out = out.plus(table)
    return out


def _hot_events(metric: MetricBase, funnel: FunnelMetric | None) -> frozenset[str] | None:
    """The events the investigation scans again and again (None: any event)."""
    names = events_read(metric)
    if names is None or funnel is None:
        return names
    steps = events_read(funnel)
    return None if steps is None else names | steps


def investigate(
    workspace: Workspace,
    metric_name: str,
    at: datetime,
    *,
    alert_id: int | None = None,
    backend: BaseBackend | None = None,
    onset_hint: datetime | None = None,
) -> Investigation:
    """Run every step for ``metric_name`` around ``at`` (UTC) and return the result."""
    started, clock = datetime.now(UTC), time.perf_counter()
    if at.tzinfo is None:
        raise InvestigationError(f"--at {at}: give a timezone (UTC)")
    catalog = metric_catalog(workspace)
    if metric_name not in catalog:
        raise InvestigationError(
            f"unknown metric {metric_name!r} (known: {', '.join(sorted(catalog.metrics))})"
        )
    metric = catalog[metric_name]
    funnels = [m for m in catalog if isinstance(m, FunnelMetric)]
    funnel = related_funnel(metric, funnels)
    if backend is None:
        backend = connect(workspace)
        days = data.lake_days(workspace.lake_dir)
        if not days:
            raise InvestigationError(
                f"the lake {workspace.lake_dir} is empty: nothing to investigate"
            )
        # Seven baseline days before the onset search span (regime history, baselines).
        first_day = (at - ONSET_LOOKBACK - timedelta(days=7)).date()
        data.focus_lake(
            backend,
            workspace.lake_dir,
            max(first_day, days[0]),
            (at + REGIME_LOOKAHEAD).date(),
            events=_hot_events(metric, funnel),
        )
    bounds = data.data_bounds(backend)
    if not bounds[0] < at <= bounds[1] + timedelta(hours=1):
        raise InvestigationError(
            f"--at {at:%Y-%m-%d %H:%M} UTC is outside the data ({bounds[0]:%Y-%m-%d %H:%M} – {bounds[1]:%Y-%m-%d %H:%M})"
        )
    provisional, first, leaves, counts = _provisional(backend, metric, funnel, at, bounds)
    provisional_baselines = data.baseline_windows(provisional, data_start=bounds[0])
    lost = (
        telemetry_loss(backend, metric, provisional, provisional_baselines)
        if provisional_baselines
        else None
    )
    if lost is not None:
        regime = _measurement_regime(backend, lost, at, bounds)
    else:
        regime = _regime(backend, metric, funnel, first, leaves, counts, at, bounds, provisional)
    if onset_hint is not None and abs((regime.onset - onset_hint).total_seconds()) > 3 * 3600:
        regime = Regime(
            onset_hint,
            max(regime.end, at),
            False,
            regime.shape,
            regime.shift,
            regime.shape_evidence + "; onset from the alert",
        )
    current = Window(regime.onset, max(regime.end, regime.onset + data.BUCKET))
    baselines = data.baseline_windows(current, data_start=bounds[0])
    if not baselines:
        raise InvestigationError(
            f"no baseline: the data starts {bounds[0]:%Y-%m-%d}, less than a day before the onset"
        )
    result, leaves, counts = _localize(backend, metric, funnel, current, baselines)
    problem = define_problem(
        backend, metric, current, baselines, leaves["baseline"], leaves["current"], regime
    )
    integrity = check_integrity(backend, metric, current, baselines)
    dims = data.investigation_dimensions(metric)
    breakpoint = find_breakpoint(
        backend,
        funnel,
        counts["baseline"] if counts else None,
        counts["current"] if counts else None,
        result.segments,
        current,
        baselines,
        dims,
        measurement_issue=integrity.measurement_issue,
    )
    history = load_changes(workspace, backend, regime.onset - timedelta(days=30), bounds[1])
    base, cur = leaves["baseline"].aligned(leaves["current"])
    mix = 0.0
    if metric.type in ("ratio", "proportion") and not result.segments:
        with np.errstate(invalid="ignore", divide="ignore"):
            mix = mix_share(
                base.numerator / base.denominator,
                base.denominator,
                cur.numerator / cur.denominator,
                cur.denominator,
            )
    # Nothing to explain — no segment and no significant change of the metric — blames no
    # change (a routine deploy near a noise "onset" is not a cause).
    moved = bool(result.segments) or integrity.measurement_issue or problem.p_value < MOVED_P
    changes = analyze_changes(
        backend,
        metric,
        [c for c in history if c.at <= regime.onset + timedelta(hours=1)] if moved else [],
        regime.onset,
        current.end,
        result.segments,
        measurement_issue=integrity.measurement_issue,
        mix=mix,
    )
    impact = estimate_impact(
        backend,
        metric,
        leaves["baseline"],
        leaves["current"],
        result.segments,
        current,
        baselines,
        measurement_issue=integrity.measurement_issue,
    )
    segments_text = "; ".join(describe(s) for s in result.segments) or "all traffic"
    hours = max(current.duration.total_seconds() / 3600, 1e-9)
    rate_step = _rate_pair(breakpoint)
    recommendation = recommend(
        category=changes.category,
        implicated=changes.implicated.change if changes.implicated else None,
        history=history,
        segments_text=segments_text,
        breakpoint=breakpoint.breakpoint,
        metric=metric.name,
        baseline_rate=rate_step[0] if rate_step else problem.baseline_value.value,
        current_rate=rate_step[1] if rate_step else problem.current_value.value,
        units_per_hour=(rate_step[2] if rate_step else impact.affected_units) / hours,
        series_history=np.asarray(problem.series_observed, dtype=float),
    )
    return Investigation(
        id=incident_id(metric.name, regime.onset),
        metric=metric.name,
        at=at,
        alert_id=alert_id,
        problem=problem,
        integrity=integrity,
        segments=result,
        breakpoint=breakpoint,
        changes=changes,
        impact=impact,
        recommendation=recommendation,
        started_at=started,
        seconds=time.perf_counter() - clock,
    )


def load_changes(
    workspace: Workspace, backend: BaseBackend, since: datetime, until: datetime
) -> list[Change]:
    """The change log in ``[since, until)``, after recording the lake's ``$change`` events."""
    with ChangeLog.for_workspace(workspace) as log:
        log.sync_lake(backend, start=since, end=until)
        return log.query(since=since, until=until)


def _rate_pair(report: BreakpointReport) -> tuple[float, float, float] | None:
    """(baseline, current conditional conversion, current entries) of the named step."""
    if not report.breakpoint:
        return None
    for view in report.views[1:] or report.views:
        for step in view.steps:
            if step.step == report.breakpoint:
                return step.baseline_conversion, step.current_conversion, step.current_entered
    return None


def investigate_alert(
    workspace: Workspace, alert_id: int, *, backend: BaseBackend | None = None
) -> Investigation:
    """Investigate the metric of a stored alert at its opening time (onset as a hint)."""
    from tripwire.monitor.alerts import AlertStore

    with AlertStore.for_workspace(workspace) as store:
        alert = store.get(alert_id)
    return investigate(
        workspace,
        alert.metric,
        alert.opened_at,
        alert_id=alert.id,
        backend=backend,
        onset_hint=alert.onset_at,
    )


def segment_text(segment: Mapping[str, str]) -> str:
    return describe(segment)
