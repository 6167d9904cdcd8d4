"""Step 4 — find the funnel breakpoint and what the pipeline's telemetry says about it.

* **Step-wise conversion** of the funnel related to the metric (a catalog funnel that reads
  the metric's events), baseline vs current, overall and within each localized segment:
  ``P(step k | step k−1)`` per step, tested with the two-proportion z test of
  :mod:`tripwire.stats` (vectorised over steps). The named breakpoint is the step whose
  conditional conversion fell the most significantly (Bonferroni over steps) inside the
  segments; earlier steps should be flat.
* **Stage telemetry** (``$latency`` events: ``pipeline``, ``stage``, ``ms``, ``outcome``)
  for the same segments and windows: median and p95 latency and the error/timeout share
  per stage, baseline vs current.
* **Correlation** between a stage's mean latency and its step's conversion across the
  time buckets of the current window and the preceding hours (Pearson).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from ibis.backends import BaseBackend

from tripwire.metrics.compile import event_names_read
from tripwire.metrics.definitions import FunnelMetric, MetricBase
from tripwire.rca.data import (
    WINDOW_COLUMN,
    FunnelCounts,
    Window,
    dimension_label,
    funnel_series,
    segment_where,
    windowed_events,
)
from tripwire.stats import MeanStats, two_proportion_z_test

ALPHA = 0.01


@dataclass(frozen=True)
class StepChange:
    step: str
    baseline_entered: float
    baseline_conversion: float
    current_entered: float
    current_conversion: float
    absolute: float
    ci_low: float
    ci_high: float
    p_value: float


@dataclass(frozen=True)
class FunnelView:
    """Step conversions for one scope (``(all)`` or a segment)."""

    scope: str
    steps: tuple[StepChange, ...]
    breakpoint: str | None


@dataclass(frozen=True)
class StageTelemetry:
    pipeline: str
    stage: str
    baseline_p50: float
    current_p50: float
    baseline_p95: float
    current_p95: float
    baseline_error_share: float
    current_error_share: float
    current_count: float


@dataclass(frozen=True)
class BreakpointReport:
    funnel: str | None
    views: tuple[FunnelView, ...]
    breakpoint: str | None
    statement: str
    telemetry: tuple[StageTelemetry, ...]
    correlations: dict[str, float]


def related_funnel(metric: MetricBase, funnels: Sequence[FunnelMetric]) -> FunnelMetric | None:
    """The catalog funnel that reads the most of the metric's events (None if none)."""
    if isinstance(metric, FunnelMetric):
        return metric
    read = event_names_read(metric) or set()
    best, overlap = None, 0
    for funnel in funnels:
        events = {e for step in funnel.steps for e in step.events}
        shared = len(events & read)
        if shared > overlap:
            best, overlap = funnel, shared
    return best


def step_changes(
    baseline: np.ndarray, current: np.ndarray, steps: Sequence[str]
) -> tuple[StepChange, ...]:
    """Conditional conversion per step (from step 2), baseline vs current, with tests."""
    b_prev, b_now = baseline[:-1], baseline[1:]
    c_prev, c_now = current[:-1], current[1:]
    b_now, c_now = np.minimum(b_now, b_prev), np.minimum(c_now, c_prev)
    test = two_proportion_z_test(
        MeanStats.from_proportion(b_prev, b_now), MeanStats.from_proportion(c_prev, c_now)
    )
    a = test.absolute
    out = []
    for i, name in enumerate(steps[1:]):
        out.append(
            StepChange(
                name,
                float(b_prev[i]),
                float(b_now[i] / b_prev[i]) if b_prev[i] else float("nan"),
                float(c_prev[i]),
                float(c_now[i] / c_prev[i]) if c_prev[i] else float("nan"),
                float(np.atleast_1d(a.estimate)[i]),
                float(np.atleast_1d(a.ci_low)[i]),
                float(np.atleast_1d(a.ci_high)[i]),
                float(np.atleast_1d(a.p_value)[i]),
            )
        )
    return tuple(out)


def name_breakpoint(steps: Sequence[StepChange], *, alpha: float = ALPHA) -> str | None:
    """The step whose conversion fell most significantly (None when no step fell)."""
    bound = alpha / max(len(steps), 1)
    fallen = [s for s in steps if s.absolute < 0 and np.isfinite(s.p_value) and s.p_value < bound]
    if not fallen:
        return None
    return min(fallen, key=lambda s: (s.p_value, s.absolute)).step


def funnel_views(
    baseline: FunnelCounts, current: FunnelCounts, segments: Sequence[Mapping[str, str]]
) -> tuple[FunnelView, ...]:
    """Overall and per-segment step views."""
    from tripwire.rca.segments import describe

    views = []
    scopes: list[tuple[str, Mapping[str, str]]] = [("(all)", {})] + [
        (describe(s), s) for s in segments
    ]
    for label, segment in scopes:
        steps = step_changes(
            baseline.total(baseline.select(segment)),
            current.total(current.select(segment)),
            current.steps,
        )
        views.append(FunnelView(label, steps, name_breakpoint(steps)))
    return tuple(views)


def stage_telemetry(
    backend: BaseBackend,
    current: Window,
    baselines: Sequence[Window],
    segment: Mapping[str, str],
    dims: Sequence[str],
) -> tuple[StageTelemetry, ...]:
    """Latency quantiles and error share per pipeline stage, baseline vs current."""
    context = {
        k: v for k, v in segment.items() if dimension_label(k) not in ("intent", "service", "stage")
    }
    where = segment_where(context, [d for d in dims if not d.startswith("properties.")])
    table = windowed_events(backend, {"current": [current], "baseline": baselines}, where)
    if "prop_stage" not in table.columns or "prop_ms" not in table.columns:
        return ()
    table = table.filter(table.event == "$latency")
    failed = (table.prop_outcome != "ok").cast("int64")
    grouped = table.group_by([WINDOW_COLUMN, "prop_pipeline", "prop_stage"]).aggregate(
        n=table.count(),
        p50=table.prop_ms.quantile(0.5),
        p95=table.prop_ms.quantile(0.95),
        errors=failed.sum(),
    )
    rows = backend.to_pyarrow(grouped).to_pylist()
    per: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    for row in rows:
        per.setdefault((str(row["prop_pipeline"]), str(row["prop_stage"])), {})[
            row[WINDOW_COLUMN]
        ] = row
    out = []
    for (pipeline, stage), parts in sorted(per.items()):
        b, c = parts.get("baseline"), parts.get("current")
        if not b or not c:
            continue
        out.append(
            StageTelemetry(
                pipeline,
                stage,
                float(b["p50"]),
                float(c["p50"]),
                float(b["p95"]),
                float(c["p95"]),
                float(b["errors"]) / float(b["n"]),
                float(c["errors"]) / float(c["n"]),
                float(c["n"]),
            )
        )
    return tuple(out)


def latency_conversion_correlation(
    backend: BaseBackend,
    funnel: FunnelMetric,
    window: Window,
    segment: Mapping[str, str],
    dims: Sequence[str],
) -> dict[str, float]:
    """Pearson correlation, across buckets, of each stage's mean latency and its step conversion."""
    context = {k: v for k, v in segment.items() if dimension_label(k) not in ("intent", "service")}
    where = segment_where(context, [d for d in dims if not d.startswith("properties.")])
    entered = funnel_series(backend, funnel, window, where)
    table = windowed_events(backend, {"w": [window]}, where)
    if "prop_stage" not in table.columns:
        return {}
    table = table.filter(table.event == "$latency")
    bucket = table.timestamp.truncate("h")
    grouped = table.group_by([bucket.name("hour"), "prop_stage"]).aggregate(ms=table.prop_ms.mean())
    rows = backend.to_pyarrow(grouped).to_pylist()
    hours = int(np.ceil(window.duration.total_seconds() / 3600))
    per_bucket = entered.shape[0] // max(hours, 1) or 1
    hourly = np.add.reduceat(entered, np.arange(0, entered.shape[0], per_bucket), axis=0)[:hours]
    out: dict[str, float] = {}
    labels = [s.label for s in funnel.steps]
    for k in range(1, len(labels)):
        latency = np.full(hourly.shape[0], np.nan)
        for row in rows:
            if row["prop_stage"] != labels[k] or row["hour"] is None:
                continue
            index = int((row["hour"].timestamp() - window.start.timestamp()) // 3600)
            if 0 <= index < latency.size:
                latency[index] = row["ms"]
        with np.errstate(invalid="ignore", divide="ignore"):
            conversion = hourly[:, k] / hourly[:, k - 1]
        ok = np.isfinite(latency) & np.isfinite(conversion)
        if ok.sum() >= 4 and np.std(latency[ok]) > 0 and np.std(conversion[ok]) > 0:
            out[labels[k]] = float(np.corrcoef(latency[ok], conversion[ok])[0, 1])
    return out


def find_breakpoint(
    backend: BaseBackend,
    funnel: FunnelMetric | None,
    baseline: FunnelCounts | None,
    current: FunnelCounts | None,
    segments: Sequence[Mapping[str, str]],
    current_window: Window,
    baselines: Sequence[Window],
    dims: Sequence[str],
    *,
    measurement_issue: bool = False,
) -> BreakpointReport:
    """The whole step (see the module docstring)."""
    focus = segments[0] if segments else {}
    telemetry = stage_telemetry(backend, current_window, baselines, focus, dims)
    if funnel is None or baseline is None or current is None:
        return BreakpointReport(
            None,
            (),
            None,
            "no funnel reads this metric's events; see the stage telemetry",
            telemetry,
            {},
        )
    views = funnel_views(baseline, current, segments)
    inside = [v for v in views[1:] if v.breakpoint] or [v for v in views[:1] if v.breakpoint]
    name = inside[0].breakpoint if inside else None
    span = Window(current_window.start - (current_window.duration * 2), current_window.end)
    correlations = latency_conversion_correlation(backend, funnel, span, focus, dims)
    if measurement_issue and name is not None:
        statement = (
            f"conversion into '{name}' fell, but the data-integrity check found lost telemetry: the "
            "step's events are missing, not failing — no product breakpoint is named"
        )
        name = None
    elif name is None:
        statement = "no step's conditional conversion moved significantly"
    else:
        view = inside[0]
        step = next(s for s in view.steps if s.step == name)
        flat = [s.step for s in view.steps if s.step != name and s.p_value >= ALPHA]
        statement = (
            f"P({name} | previous step) {step.baseline_conversion:.0%} → {step.current_conversion:.0%} in "
            f"{view.scope} (p = {step.p_value:.1e}); {len(flat)} of {len(view.steps) - 1} other steps flat"
        )
    return BreakpointReport(funnel.name, views, name, statement, telemetry, correlations)
