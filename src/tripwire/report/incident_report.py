"""Incident reports: the decision document of one investigation, in Markdown and HTML.

Sections, in the order a reader needs them: executive summary; problem definition;
data-integrity verdict (up front, because a measurement issue changes everything after
it); localization with a heatmap of the change by dimension value; funnel breakpoint and
stage telemetry; changes and the root-cause category (with what was ruled out); impact with
the cumulative loss since onset; recommended actions with owner and due date to fill;
risks and guardrails; how success will be measured; a postmortem skeleton.

Both formats render from one context (:func:`report_context`) through the Jinja2
templates ``incident.md.j2`` and ``incident.html.j2``. The HTML is self-contained: Plotly's
JavaScript is inlined from the installed ``plotly`` package (no CDN).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import plotly.colors
from plotly.offline import get_plotlyjs

from tripwire.rca.investigation import Investigation
from tripwire.rca.segments import describe

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class IncidentReport:
    incident: str
    markdown: str
    html: str


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    html: Path


def _fmt(value: float | None, kind: str = "num") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if kind == "pct":
        return f"{value:.1%}"
    if kind == "pp":
        return f"{value * 100:+.1f} pp"
    if kind == "rel":
        return f"{value:+.0%}"
    if kind == "money":
        return f"{value:,.0f}"
    return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _rate_like(inv: Investigation) -> bool:
    return inv.problem.metric_type in ("ratio", "proportion")


#: A figure as Plotly's JSON: ``{"data": [trace, ...], "layout": {...}}``.
Figure = dict[str, Any]


@functools.lru_cache(maxsize=1)
def _template() -> dict[str, Any]:
    """The ``plotly_white`` template, read from the installed package's JSON once.

    Plotly's validation of the same template (``layout.template="plotly_white"``) costs
    about 0.35 s per process and gives an equal object, with its keys in another order.
    """
    path = importlib.resources.files("plotly") / "package_data" / "templates" / "plotly_white.json"
    if path.is_file():
        loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return loaded
    import plotly.io as pio  # a plotly without its package data: the validated template

    return dict(pio.templates["plotly_white"].to_plotly_json())


def _layout(title: str, height: int, **extra: Any) -> dict[str, Any]:
    """A layout in the key order and the form Plotly's validation gives it."""
    out: dict[str, Any] = {"template": _template()}
    out.update({k: extra.pop(k) for k in ("shapes", "yaxis", "margin") if k in extra})
    out["title"] = {"text": title}
    out.update(extra)
    out["height"] = height
    return out


def _scatter(x: Sequence[Any], y: Sequence[Any], name: str, **style: Any) -> dict[str, Any]:
    """A line trace (``fill``/``line`` styles first: the key order validation gives)."""
    trace: dict[str, Any] = {}
    for key in ("fill", "line"):
        if key in style:
            trace[key] = style.pop(key)
    trace.update({"mode": "lines", "name": name, "x": list(x), "y": list(y), "type": "scatter"})
    return trace


def _series_figure(inv: Investigation) -> Figure:
    p = inv.problem
    window = {
        "fillcolor": "#D55E00",
        "line": {"width": 0},
        "opacity": 0.12,
        "type": "rect",
        "x0": p.current.start,
        "x1": p.current.end,
        "xref": "x",
        "y0": 0,
        "y1": 1,
        "yref": "y domain",
    }
    return {
        "data": [
            _scatter(p.series_starts, p.series_observed, "observed"),
            _scatter(p.series_starts, p.series_expected, "baseline", line={"dash": "dash"}),
        ],
        "layout": _layout(
            f"{p.metric} per 10 minutes (shaded: the incident window)",
            340,
            shapes=[window],
            margin={"t": 50, "b": 40},
        ),
    }


def _diverging_scale() -> list[list[Any]]:
    """Plotly's named ``RdBu`` colorscale as its validation expands it."""
    colors = plotly.colors.diverging.RdBu
    return [[i / (len(colors) - 1), c] for i, c in enumerate(colors)]


def _heatmap_figure(inv: Investigation) -> Figure:
    rows = [r for r in inv.problem.by_dimension if math.isfinite(r.relative)]
    dims = sorted({r.dimension for r in rows})
    values = sorted({r.value for r in rows})[:60]
    grid = [
        [
            next((r.relative for r in rows if r.dimension == d and r.value == v), None)
            for v in values
        ]
        for d in dims
    ]
    heatmap = {
        "colorbar": {"title": {"text": "rel. change"}},
        "colorscale": _diverging_scale(),
        "x": values,
        "y": dims,
        "z": grid,
        "zmid": 0,
        "type": "heatmap",
    }
    return {
        "data": [heatmap],
        "layout": _layout(
            "relative change by dimension value", 120 + 40 * len(dims), margin={"t": 50, "b": 80}
        ),
    }


def _loss_figure(inv: Investigation) -> Figure:
    i = inv.impact
    unit = "revenue" if i.aov else i.unit
    return {
        "data": [
            _scatter(i.cumulative_starts, i.cumulative_loss, "cumulative loss", fill="tozeroy")
        ],
        "layout": _layout(f"cumulative loss since onset ({unit})", 300, margin={"t": 50, "b": 40}),
    }


def _funnel_figure(inv: Investigation) -> Figure | None:
    views = inv.breakpoint.views
    if not views:
        return None
    view = views[1] if len(views) > 1 else views[0]
    names = [s.step for s in view.steps]
    bars = [
        {"name": "baseline", "x": names, "y": [s.baseline_conversion for s in view.steps]},
        {"name": "incident", "x": names, "y": [s.current_conversion for s in view.steps]},
    ]
    return {
        "data": [{**bar, "type": "bar"} for bar in bars],
        "layout": _layout(
            f"P(step | previous step) in {view.scope}",
            320,
            yaxis={"tickformat": ".0%"},
            margin={"t": 50, "b": 40},
            barmode="group",
        ),
    }


def figure_html(figure: Figure) -> str:
    """A figure's ``<div>`` (plotly.js is inlined once per page by the template).

    The figures are built in the form Plotly's validation produces (checked by the
    tests), so validation is skipped: building validated ``go.Figure`` objects cost
    about 0.4 s per report, most of it the first time in a process.
    """
    import plotly.io as pio

    return str(pio.to_html(figure, validate=False, full_html=False, include_plotlyjs=False))


def report_context(inv: Investigation) -> dict[str, Any]:
    """Everything the templates show, formatted."""
    p, ig, seg, bp, ch, im, rec = (
        inv.problem,
        inv.integrity,
        inv.segments,
        inv.breakpoint,
        inv.changes,
        inv.impact,
        inv.recommendation,
    )
    rate = _rate_like(inv)
    kind = "pct" if rate else "num"
    heat_rows = sorted(
        p.by_dimension, key=lambda r: -abs(r.contribution) if math.isfinite(r.contribution) else 0
    )[:25]
    elements = (
        [
            {
                "segment": e.label(),
                "expected": _fmt(e.expected),
                "observed": _fmt(e.observed),
                "relative": _fmt(e.relative_change, "rel"),
                "share": _fmt(e.share_of_change, "pct"),
                "explained": _fmt(e.share_of_error_explained, "pct"),
                "z": f"{e.z_score:.1f}",
            }
            for e in seg.chosen.localization.elements
        ]
        if seg.verdict == "localized"
        else []
    )
    figures: dict[str, Figure] = {
        "series": _series_figure(inv),
        "heatmap": _heatmap_figure(inv),
        "loss": _loss_figure(inv),
    }
    funnel_figure = _funnel_figure(inv)
    if funnel_figure is not None:
        figures["funnel"] = funnel_figure
    top = ch.implicated
    return {
        "id": inv.id,
        "metric": inv.metric,
        "alert_id": inv.alert_id,
        "generated": inv.started_at.strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": f"{inv.seconds:.1f}",
        "summary": inv.summary(),
        "headline": p.headline(),
        "definition": {
            "description": p.description,
            "numerator": p.numerator,
            "denominator": p.denominator,
            "unit": p.unit,
        },
        "window": p.current.text(),
        "baselines": f"{len(p.baselines)} same-clock windows on the previous days",
        "baseline": f"{_fmt(p.baseline_value.value, kind)} ({_fmt(p.baseline_value.low, kind)} – {_fmt(p.baseline_value.high, kind)})",
        "current": f"{_fmt(p.current_value.value, kind)} ({_fmt(p.current_value.low, kind)} – {_fmt(p.current_value.high, kind)})",
        "absolute": (
            f"{_fmt(p.absolute_change.value, 'pp')} ({_fmt(p.absolute_change.low, 'pp')} to {_fmt(p.absolute_change.high, 'pp')})"
            if rate
            else f"{_fmt(p.absolute_change.value)} ({_fmt(p.absolute_change.low)} to {_fmt(p.absolute_change.high)})"
        ),
        "relative": f"{_fmt(p.relative_change.value, 'rel')} ({_fmt(p.relative_change.low, 'rel')} to {_fmt(p.relative_change.high, 'rel')})",
        "p_value": f"{p.p_value:.2g}",
        "onset": f"{p.regime.onset:%Y-%m-%d %H:%M} UTC",
        "regime_end": f"{p.regime.end:%Y-%m-%d %H:%M} UTC"
        + (" (recovered in the data)" if p.regime.recovered_in_data else ""),
        "shape": f"{p.regime.shape} ({p.regime.shape_evidence})",
        "integrity": {
            "verdict": ig.verdict,
            "evidence": list(ig.evidence),
            "rejected": ig.rejected_events,
            "volumes": [v for v in ig.volumes if v.dropped][:10],
            "reconciliation": ig.reconciliation,
        },
        "localization": {
            "verdict": seg.verdict,
            "measure": seg.chosen.measure,
            "elements": elements,
            "segments": [describe(s) for s in seg.segments],
        },
        "heat_rows": [
            {
                "dimension": r.dimension,
                "value": r.value,
                "baseline": _fmt(r.baseline, kind),
                "current": _fmt(r.current, kind),
                "relative": _fmt(r.relative, "rel"),
                "contribution": _fmt(r.contribution, "pct"),
            }
            for r in heat_rows
        ],
        "breakpoint": {
            "funnel": bp.funnel,
            "step": bp.breakpoint,
            "statement": bp.statement,
            "views": [
                {
                    "scope": v.scope,
                    "steps": [
                        {
                            "step": s.step,
                            "baseline": _fmt(s.baseline_conversion, "pct"),
                            "current": _fmt(s.current_conversion, "pct"),
                            "delta": _fmt(s.absolute, "pp"),
                            "ci": f"{_fmt(s.ci_low, 'pp')} to {_fmt(s.ci_high, 'pp')}",
                            "p": f"{s.p_value:.2g}",
                            "entered": f"{s.current_entered:,.0f}",
                        }
                        for s in v.steps
                    ],
                }
                for v in bp.views
            ],
            "telemetry": [
                {
                    "stage": f"{t.pipeline}/{t.stage}",
                    "p50": f"{t.baseline_p50:,.0f} → {t.current_p50:,.0f}",
                    "p95": f"{t.baseline_p95:,.0f} → {t.current_p95:,.0f}",
                    "errors": f"{t.baseline_error_share:.1%} → {t.current_error_share:.1%}",
                    "n": f"{t.current_count:,.0f}",
                }
                for t in bp.telemetry
            ],
            "correlations": {k: f"{v:+.2f}" for k, v in bp.correlations.items()},
        },
        "changes": {
            "ranked": [
                {
                    "at": r.change["at"],
                    "kind": r.change["kind"],
                    "service": r.change["service"],
                    "version": r.change.get("version", ""),
                    "scope": ", ".join(f"{k}={v}" for k, v in (r.change.get("scope") or {}).items())
                    or "global",
                    "minutes": f"{r.minutes_before_onset:.0f}",
                    "score": f"{r.score:.2f}",
                    "reason": r.reason,
                }
                for r in ch.ranked[:10]
            ],
            "implicated": None
            if top is None
            else f"{top.change['kind']} {top.change['service']} {top.change.get('version', '')} at {top.change['at']}",
            "did": None if ch.did is None else ch.did.statement,
            "category": ch.category,
            "evidence": ch.category_evidence,
            "ruled_out": ch.ruled_out,
        },
        "impact": {
            "unit": im.unit,
            "affected": f"{im.affected_units:,.0f} ({im.affected_units_per_day:,.0f} per day)",
            "delta": (
                f"{_fmt(im.delta_rate, 'pp')} ({_fmt(im.delta_rate_low, 'pp')} to {_fmt(im.delta_rate_high, 'pp')})"
                if rate
                else f"{im.delta_rate:,.1f} ({im.delta_rate_low:,.1f} to {im.delta_rate_high:,.1f})"
            ),
            "lost": f"{im.lost_units:,.1f} {im.unit}",
            "aov": _fmt(im.aov, "money"),
            "loss_per_day": "–"
            if im.loss_per_day is None
            else f"{im.loss_per_day:,.0f} ({_fmt(im.loss_per_day_low, 'money')} to {_fmt(im.loss_per_day_high, 'money')})",
            "customers": f"{im.customers_affected:,}",
            "note": im.note,
        },
        "actions": [{"action": a.action, "evidence": a.evidence} for a in rec.actions],
        "check": rec.check,
        "guardrails": list(rec.guardrails),
        "success": list(rec.success_criteria),
        "figures": {name: figure_html(fig) for name, fig in figures.items()},
    }


def _environment(autoescape: bool) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def render_report(inv: Investigation) -> IncidentReport:
    """The Markdown and the self-contained HTML report."""
    context = report_context(inv)
    markdown = _environment(False).get_template("incident.md.j2").render(**context)
    html = (
        _environment(True)
        .get_template("incident.html.j2")
        .render(
            **context,
            plotly_js=jinja2.utils.markupsafe.Markup(get_plotlyjs()),
            figures_html={
                k: jinja2.utils.markupsafe.Markup(v) for k, v in context["figures"].items()
            },
        )
    )
    return IncidentReport(inv.id, markdown, html)


def write_report(report: IncidentReport, directory: Path) -> ReportFiles:
    """Write ``<id>.md`` and ``<id>.html`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    md, html = directory / f"{report.incident}.md", directory / f"{report.incident}.html"
    md.write_text(report.markdown, encoding="utf-8")
    html.write_text(report.html, encoding="utf-8")
    return ReportFiles(md, html)
