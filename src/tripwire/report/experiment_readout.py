"""Experiment readouts: the decision document of one experiment, in Markdown and HTML.

The structure is the one launch reviews expect, written for a reader who was not in the
room: summary and verdict (with the rule and its numbers), hypothesis and
pre-registration hash, design and power, results table with confidence intervals, a
forest plot of the effect by cohort (raw and partially pooled), the cumulative effect
over the looks against the sequential boundaries, the guardrail table with thresholds
and the levels each check had to reach, validity checks, the risk register and the
decision log.

Both formats render from one context (:func:`readout_context`) through Jinja2 templates
in ``tripwire/report/templates``. The HTML is self-contained: Plotly's JavaScript is
inlined from the installed ``plotly`` package (no CDN), so the file opens offline.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from tripwire.experiments.analysis import (
    CohortBreakdown,
    ExperimentAnalysis,
    LookAnalysis,
    MetricResult,
)
from tripwire.experiments.decision import (
    ExperimentDecision,
    describe_sequential,
    pct,
)
from tripwire.experiments.registry import Amendment, Decision, Lock

TEMPLATES = Path(__file__).parent / "templates"
#: Colour-blind-safe pair (Okabe–Ito blue and vermillion) and a neutral grey.
BLUE, VERMILLION, GREY = "#0072B2", "#D55E00", "#7f7f7f"
VERDICT_COLOURS = {
    "SHIP": "#009E73",
    "VETO": "#D55E00",
    "CONTINUE": "#0072B2",
    "INCONCLUSIVE": "#7f7f7f",
    "STOP-FOR-FUTILITY": "#E69F00",
    "INVALID": "#CC79A7",
}


@dataclass(frozen=True)
class Readout:
    """A rendered readout."""

    experiment: str
    markdown: str
    html: str


@dataclass(frozen=True)
class ReadoutFiles:
    markdown: Path
    html: Path


# --------------------------------------------------------------------------- numbers → text


def _num(x: Any, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    value = float(x)
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}g}"


def _p(x: Any) -> str:
    if x is None or not math.isfinite(float(x)):
        return "n/a"
    value = float(x)
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}" if value < 0.01 else f"{value:.3f}"


def _metric_row(r: MetricResult) -> dict[str, Any]:
    c = r.comparison
    rel, ab = c.relative, c.absolute
    return {
        "metric": r.metric,
        "role": r.role,
        "treatment": r.treatment,
        "method": c.method + (" (CUPED)" if r.cuped and "cuped" not in c.method else ""),
        "control_mean": _num(c.control.mean),
        "treatment_mean": _num(c.treatment.mean),
        "n_control": f"{int(c.control.n):,}",
        "n_treatment": f"{int(c.treatment.n):,}",
        "absolute": f"{_num(ab.estimate)} [{_num(ab.ci_low)}, {_num(ab.ci_high)}]",
        "relative": pct(float(rel.estimate)),
        "relative_ci": f"[{pct(float(rel.ci_low))}, {pct(float(rel.ci_high))}]",
        "p_value": _p(ab.p_value),
        "adjusted_p": _p(r.adjusted_p_value),
        "variance_reduction": (
            f"{float(c.variance_reduction):.0%}" if c.variance_reduction is not None else ""
        ),
        "status": str(c.status.value if hasattr(c.status, "value") else c.status),
        "message": c.message,
    }


def _cohort_rows(b: CohortBreakdown) -> list[dict[str, Any]]:
    rel = b.comparison.relative
    rows = []
    for i, value in enumerate(b.values):
        est, lo, hi = (
            float(_at(rel.estimate, i)),
            float(_at(rel.ci_low, i)),
            float(_at(rel.ci_high, i)),
        )
        pooled = pooled_se = math.nan
        if b.analysis is not None:
            pooled = float(b.analysis.pooling.pooled[i])
            pooled_se = float(b.analysis.pooling.pooled_se[i])
        rows.append(
            {
                "value": value,
                "units": f"{b.units[i]:,}",
                "raw": pct(est),
                "raw_ci": f"[{pct(lo)}, {pct(hi)}]",
                "pooled": pct(pooled),
                "pooled_ci": (
                    f"[{pct(pooled - 1.96 * pooled_se)}, {pct(pooled + 1.96 * pooled_se)}]"
                    if math.isfinite(pooled_se)
                    else ""
                ),
                "p_value": _p(_at(rel.p_value, i)),
            }
        )
    return rows


def _at(x: Any, i: int) -> float:
    try:
        return float(x[i])
    except (TypeError, IndexError):
        return float(x)


# --------------------------------------------------------------------------- figures


def forest_figure(breakdowns: Sequence[CohortBreakdown], overall: MetricResult) -> go.Figure:
    """Relative effect by cohort value, raw (with 95% CI) and partially pooled, with the
    aggregate effect as a reference line."""
    labels, raw, lo, hi, pooled = [], [], [], [], []
    for b in breakdowns:
        rel = b.comparison.relative
        for i, value in enumerate(b.values):
            labels.append(f"{b.dimension}={value}")
            raw.append(100 * _at(rel.estimate, i))
            lo.append(100 * _at(rel.ci_low, i))
            hi.append(100 * _at(rel.ci_high, i))
            pooled.append(
                100 * float(b.analysis.pooling.pooled[i]) if b.analysis is not None else None
            )
    agg = 100 * float(overall.comparison.relative.estimate)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=raw, y=labels, mode="markers", name="raw (95% CI)",
            marker={"color": BLUE, "size": 9, "symbol": "square"},
            error_x={"type": "data", "symmetric": False,
                     "array": [h - r for h, r in zip(hi, raw, strict=True)],
                     "arrayminus": [r - lo_ for r, lo_ in zip(raw, lo, strict=True)]},
        )
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=pooled, y=labels, mode="markers", name="partially pooled",
            marker={"color": VERMILLION, "size": 9, "symbol": "diamond"},
        )
    )  # fmt: skip
    fig.add_vline(x=0, line={"color": GREY, "width": 1})
    fig.add_vline(
        x=agg, line={"color": BLUE, "dash": "dash", "width": 1},
        annotation_text=f"overall {agg:+.1f}%", annotation_position="top",
    )  # fmt: skip
    fig.update_layout(
        title=f"{overall.metric}: relative effect by cohort (%)",
        xaxis_title="relative effect, treatment vs control (%)",
        yaxis={"autorange": "reversed"},
        height=140 + 28 * len(labels),
        margin={"l": 160, "r": 30, "t": 60, "b": 50},
        legend={"orientation": "h", "y": -0.15},
        template="plotly_white",
    )
    return fig


def cumulative_figure(looks: Sequence[LookAnalysis], treatment: str) -> go.Figure:
    """z statistic of the primary at each look against the efficacy (±) and futility
    boundaries of the design at the actual information fractions."""
    xs, zs, labels = [], [], []
    for look in looks:
        status = look.sequential_for(treatment)
        if status.look == 0 or not math.isfinite(status.information_fraction):
            continue
        xs.append(status.information_fraction)
        zs.append(status.z)
        labels.append(str(look.look_date))
    design = looks[-1].sequential_for(treatment).design
    t = list(design.information_fractions)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=t, y=list(design.efficacy), mode="lines+markers", name="efficacy boundary",
            line={"color": VERMILLION, "shape": "hv" if len(t) > 1 else "linear"},
        )
    )  # fmt: skip
    if design.sides == 2:
        fig.add_trace(
            go.Scatter(
                x=t, y=[-c for c in design.efficacy], mode="lines+markers",
                name="harm boundary", line={"color": VERMILLION, "dash": "dot"},
            )
        )  # fmt: skip
    if design.futility is not None:
        fig.add_trace(
            go.Scatter(
                x=t, y=list(design.futility), mode="lines+markers", name="futility boundary",
                line={"color": GREY, "dash": "dash"},
            )
        )  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=xs, y=zs, mode="lines+markers+text", name="observed z", text=labels,
            textposition="top center", marker={"color": BLUE, "size": 10},
            line={"color": BLUE},
        )
    )  # fmt: skip
    fig.add_hline(y=0, line={"color": GREY, "width": 1})
    fig.update_layout(
        title="Cumulative primary z statistic against the sequential boundaries",
        xaxis_title="information fraction (observed / maximum information)",
        yaxis_title="z",
        height=420,
        template="plotly_white",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def effect_over_time_figure(looks: Sequence[LookAnalysis], treatment: str) -> go.Figure:
    """Cumulative relative effect of the primary (95% CI) at each look."""
    dates, est, lo, hi = [], [], [], []
    for look in looks:
        rel = look.primary_for(treatment).comparison.relative
        dates.append(str(look.look_date))
        est.append(100 * float(rel.estimate))
        lo.append(100 * float(rel.ci_low))
        hi.append(100 * float(rel.ci_high))
    fig = go.Figure(
        go.Scatter(
            x=dates, y=est, mode="lines+markers", name="relative effect (95% CI)",
            marker={"color": BLUE}, line={"color": BLUE},
            error_y={"type": "data", "symmetric": False,
                     "array": [h - e for h, e in zip(hi, est, strict=True)],
                     "arrayminus": [e - lo_ for e, lo_ in zip(est, lo, strict=True)]},
        )
    )  # fmt: skip
    fig.add_hline(y=0, line={"color": GREY, "width": 1})
    fig.update_layout(
        title="Cumulative relative effect of the primary at each look (%)",
        yaxis_title="relative effect (%)",
        height=360,
        template="plotly_white",
    )
    return fig


# --------------------------------------------------------------------------- the context


def readout_context(
    analysis: ExperimentAnalysis,
    decision: ExperimentDecision,
    *,
    lock: Lock | None = None,
    amendments: Sequence[Amendment] = (),
    log: Sequence[Decision] = (),
    generated_at: datetime | None = None,
) -> dict[str, Any]:
    """Everything the templates show, formatted (shared by Markdown and HTML)."""
    spec = analysis.spec
    look = analysis.current
    treatment = decision.treatment or look.treatments[0]
    primary = look.primary_for(treatment)
    status = look.sequential_for(treatment)
    family = look.guardrails_for(treatment)
    exposures = look.exposures
    start = exposures.first_exposure
    plan = spec.sequential
    design = status.design
    cohorts_primary = [
        b for b in look.cohorts if b.metric == spec.primary.metric and b.treatment == treatment
        and b.role == "primary"
    ]  # fmt: skip
    cohort_sections = []
    for b in look.cohorts:
        if b.treatment != treatment:
            continue
        het = b.analysis.heterogeneity if b.analysis else None
        simpson = b.analysis.simpson if b.analysis else None
        cohort_sections.append(
            {
                "metric": b.metric,
                "role": b.role,
                "dimension": b.dimension,
                "rows": _cohort_rows(b),
                "q": _num(het.q, 3) if het else "n/a",
                "q_p": _p(het.p_value) if het else "n/a",
                "i2": f"{het.i_squared:.0%}" if het else "n/a",
                "heterogeneous": bool(het and het.p_value < 0.05),
                "simpson": simpson.message if simpson and simpson.flag else "",
                "note": b.note,
            }
        )
    guard_rows = []
    for c in family.checks:
        t = c.test
        fmt = pct if t.scale == "relative" else (lambda v: _num(v))
        state = "BREACHED" if c.breached else "pass" if c.passed else "not shown"
        guard_rows.append(
            {
                "name": c.name,
                "metric": c.metric,
                "harm": t.harm,
                "threshold": fmt(t.threshold),
                "scale": t.scale,
                "effect": fmt(t.estimate),
                "bound": fmt(t.bound),
                "p_value": _p(t.p_value),
                "level": _num(c.level, 3),
                "state": state,
            }
        )
    look_rows = []
    for past in analysis.looks:
        s = past.sequential_for(treatment)
        rel = past.primary_for(treatment).comparison.relative
        look_rows.append(
            {
                "date": str(past.look_date),
                "look": s.look if s.look else "(before first look)",
                "units": f"{sum(past.validity.units_per_arm.values()):,}",
                "fraction": (
                    f"{s.information_fraction:.0%}"
                    if math.isfinite(s.information_fraction)
                    else "n/a"
                ),
                "effect": f"{pct(float(rel.estimate))} [{pct(float(rel.ci_low))}, {pct(float(rel.ci_high))}]",
                "z": _num(s.z, 3),
                "boundary": f"±{s.efficacy_boundary:.3f}",
                "futility": _num(s.futility_boundary, 3) if s.futility_boundary is not None else "",
                "nominal_alpha": _num(s.nominal_alpha, 3),
                "decision": s.decision.value,
            }
        )
    srm = look.validity.srm
    figures: dict[str, str] = {}
    if cohorts_primary:
        figures["forest"] = forest_figure(cohorts_primary, primary).to_html(
            full_html=False, include_plotlyjs=False
        )
    figures["cumulative"] = cumulative_figure(analysis.looks, treatment).to_html(
        full_html=False, include_plotlyjs=False
    )
    figures["effect"] = effect_over_time_figure(analysis.looks, treatment).to_html(
        full_html=False, include_plotlyjs=False
    )
    verdict = decision.verdict.value
    end = exposures.last_first_exposure
    return {
        "spec": spec,
        "name": spec.name,
        "description": spec.description,
        "generated_at": (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC"),
        "verdict": verdict,
        "verdict_colour": VERDICT_COLOURS.get(verdict, GREY),
        "rule": decision.rule,
        "explanation": decision.explanation.splitlines(),
        "overridden": decision.overridden,
        "override_reason": decision.override_reason,
        "override_author": decision.override_author,
        "mechanical_verdict": (
            decision.mechanical_verdict.value if decision.mechanical_verdict else ""
        ),
        "mechanical_rule": decision.mechanical_rule or "",
        "summary": _summary(analysis, decision, primary, status),
        "treatment": treatment,
        "control": look.control,
        "look_date": str(look.look_date),
        "cutoff": look.cutoff.strftime("%Y-%m-%d %H:%M UTC"),
        "first_exposure": start.strftime("%Y-%m-%d %H:%M UTC") if start else "n/a",
        "last_exposure": end.strftime("%Y-%m-%d %H:%M UTC") if end else "n/a",
        "hypothesis": spec.hypothesis,
        "lock": lock,
        "locked_hash": lock.hash if lock else None,
        "spec_hash": analysis.spec_hash,
        "hash_matches": bool(lock and lock.hash == analysis.spec_hash),
        "amendments": list(amendments),
        "design": {
            "unit": spec.unit,
            "arms": ", ".join(f"{a.name} ({a.weight:g})" for a in spec.arms),
            "alpha": f"{spec.alpha:g}",
            "power": f"{spec.power:.0%}",
            "sides": spec.sides,
            "mde": (
                f"{spec.primary.mde:.1%} relative"
                if spec.primary.mde_scale == "relative"
                else f"{spec.primary.mde:g} absolute"
            ),
            "direction": spec.primary.direction,
            "cuped": (
                f"{spec.cuped.pre_period_days}-day pre-period, same metric" if spec.cuped else "off"
            ),
            "sequential": _plan_text(spec),
            "boundaries": ", ".join(f"{c:.3f}" for c in design.efficacy),
            "fractions": ", ".join(f"{t:.2f}" for t in design.information_fractions),
            "max_information": _num(status.max_information, 4),
            "information_fraction": (
                f"{status.information_fraction:.0%}"
                if math.isfinite(status.information_fraction)
                else "n/a"
            ),
            "achievable_mde": (
                f"{primary.achievable_mde:.1%}" if primary.achievable_mde else "n/a"
            ),
            "guardrail_rule": spec.guardrail_rule.replace("_", "-"),
            "cohorts": ", ".join(spec.cohorts) or "none",
            "window": str(spec.analysis_window) if spec.analysis_window else "until the look",
            "has_plan": plan is not None,
        },  # fmt: skip
        "primary_rows": [_metric_row(r) for r in look.primary if r.treatment == treatment],
        "secondary_rows": [_metric_row(r) for r in look.secondary if r.treatment == treatment],
        "guardrail_metric_rows": [
            _metric_row(r)
            for r in look.guardrail_metrics
            if r.treatment == treatment
            and r.metric not in {x.metric for x in (*look.primary, *look.secondary)}
        ],
        "cohort_sections": cohort_sections,
        "guardrail_rows": guard_rows,
        "look_rows": look_rows,
        "sequential_text": describe_sequential(status),
        "validity": {
            "ok": look.validity.ok,
            "problems": list(look.validity.problems),
            "arms": [
                {
                    "arm": a,
                    "observed": f"{int(o):,}",
                    "expected": f"{e:,.0f}",
                    "weight": f"{look.validity.planned_weights[a]:g}",
                }
                for a, o, e in zip(
                    look.validity.units_per_arm, srm.observed, srm.expected, strict=True
                )
            ],  # fmt: skip
            "srm_p": _p(srm.p_value),
            "srm_method": srm.method,
            "srm_threshold": f"{srm.threshold:g}",
            "multi_arm": f"{look.validity.multi_arm_units:,}",
            "multi_arm_share": f"{look.validity.multi_arm_share:.2%}",
            "unknown_arms": look.validity.unknown_arms,
            "variance_reduction": _metric_row(primary)["variance_reduction"],
        },
        "risks": list(spec.risks),
        "owners": list(spec.owners),
        "log": [
            {
                "at": d.at.strftime("%Y-%m-%d %H:%M"),
                "kind": d.kind,
                "author": d.author,
                "summary": d.summary,
            }
            for d in log
        ],  # fmt: skip
        "figures": figures,
    }


def _plan_text(spec: Any) -> str:
    plan = spec.sequential
    if plan is None:
        end = f" ending {spec.end:%Y-%m-%d}" if spec.end else ""
        return f"fixed horizon{end}: one analysis, no peeking"
    when = (
        "looks on " + ", ".join(str(d) for d in plan.looks)
        if plan.looks
        else "looks at information fractions "
        + ", ".join(f"{t:g}" for t in plan.information_fractions or ())
    )
    fut = (
        f"; non-binding futility (β = {plan.futility.beta:g}, {plan.futility.spending} spending)"
        if plan.futility
        else ""
    )
    return f"group-sequential, {plan.spending} alpha spending, {when}{fut}"


def _summary(
    analysis: ExperimentAnalysis, decision: ExperimentDecision, primary: MetricResult, status: Any
) -> str:
    """The paragraph a director reads: who, how many, what moved, what was decided, why."""
    spec = analysis.spec
    look = analysis.current
    units = sum(look.validity.units_per_arm.values())
    rel = primary.comparison.relative
    moved = (
        f"{primary.metric} changed by {pct(float(rel.estimate))} "
        f"(95% CI {pct(float(rel.ci_low))} to {pct(float(rel.ci_high))})"
    )
    kind = "the final look" if status.final else f"look {status.look} of {status.n_looks}"
    why = {
        "validity": "a validity check failed, so no effect can be trusted",
        "guardrail-breach": f"harm beyond a guardrail's threshold is demonstrated "
        f"({', '.join(decision.breaches)})",
        "primary-harm": "the primary metric moved the wrong way beyond the boundary",
        "primary-efficacy": "the primary metric crossed its boundary and every guardrail held",
        "guardrails-pending": "the primary crossed its boundary but guardrails are not yet "
        "shown safe",
        "guardrail-not-shown": f"{len(decision.vetoes)} guardrail check(s) could not be "
        "shown safe, and shipping needs all of them",
        "futility": "the primary fell below the futility boundary",
        "final-not-significant": "the primary metric did not cross its boundary",
        "within-boundaries": "the primary metric is within its boundaries",
        "override": f"a person overrode the mechanical verdict: “{decision.override_reason}”",
    }.get(decision.rule, decision.rule)
    return (
        f"{spec.name} compared {primary.treatment} with {look.control} on {units:,} "
        f"{spec.unit}s, with data up to {look.cutoff:%Y-%m-%d %H:%M} UTC ({kind}). "
        f"The primary metric {moved}. Verdict: {decision.verdict.value}, because {why} "
        f"(rule “{decision.rule}”; the numbers are below)."
    )


# --------------------------------------------------------------------------- rendering


@functools.lru_cache(maxsize=2)
def _environment(autoescape: bool) -> jinja2.Environment:
    """One environment per escaping mode for the process: it keeps the compiled
    templates (compiling them took most of a warm render's time)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


@functools.lru_cache(maxsize=1)
def _plotly_js() -> str:
    """plotly.js (~3.5 MB, read from the installed package once per process)."""
    return jinja2.utils.markupsafe.Markup(get_plotlyjs())


def render_readout(
    analysis: ExperimentAnalysis,
    decision: ExperimentDecision,
    *,
    lock: Lock | None = None,
    amendments: Sequence[Amendment] = (),
    log: Sequence[Decision] = (),
    generated_at: datetime | None = None,
) -> Readout:
    """Render the Markdown and the self-contained HTML readout."""
    context = readout_context(
        analysis, decision, lock=lock, amendments=amendments, log=log, generated_at=generated_at
    )
    markdown = _environment(False).get_template("experiment_readout.md.j2").render(**context)
    html = (
        _environment(True)
        .get_template("experiment_readout.html.j2")
        .render(**context, plotly_js=_plotly_js())
    )
    return Readout(analysis.spec.name, markdown, html)


def write_readout(readout: Readout, directory: Path) -> ReadoutFiles:
    """Write ``<name>.md`` and ``<name>.html`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    md = directory / f"{readout.experiment}.md"
    html = directory / f"{readout.experiment}.html"
    md.write_text(readout.markdown, encoding="utf-8")
    html.write_text(readout.html, encoding="utf-8")
    return ReadoutFiles(md, html)
