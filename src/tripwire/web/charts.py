"""Plotly figures of the dashboard as plain JSON-able dicts (``{"data": [...], "layout": {...}}``).

The browser renders them with the plotly.js bundled in the ``plotly`` package; the page's
script applies the light or dark theme to the layout. Colours come from the Okabe–Ito
palette, which stays distinguishable under the common colour-vision deficiencies: blue
for "up/better/before", orange for "down/worse/after", never red against green.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from tripwire.monitor.changes import Change
from tripwire.web.data import SeriesPoint

BLUE = "#0072B2"
ORANGE = "#E69F00"
VERMILLION = "#D55E00"
SKY = "#56B4E9"
GREEN = "#009E73"
PURPLE = "#CC79A7"
GREY = "#888888"
PALETTE = (BLUE, ORANGE, GREEN, VERMILLION, SKY, PURPLE, "#F0E442", GREY)
#: A diverging scale for relative change: orange (down) → white → blue (up).
DIVERGING = [[0.0, ORANGE], [0.5, "#f7f7f7"], [1.0, BLUE]]
#: One marker symbol per change kind, so markers differ by shape as well as colour.
CHANGE_SYMBOLS = {
    "deploy": "triangle-up",
    "flag": "diamond",
    "model": "star",
    "config": "square",
    "prompt": "circle",
    "ui": "cross",
    "experiment": "hexagon",
}

Figure = dict[str, Any]


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "title": {"text": title, "font": {"size": 14}},
        "margin": {"l": 50, "r": 10, "t": 36, "b": 40},
        "legend": {"orientation": "h", "y": -0.2},
        "hovermode": "x unified",
    }
    layout.update(extra)
    return layout


def kpi_figure(
    metric: str, points: Sequence[SeriesPoint], changes: Sequence[Change], *, percent: bool
) -> Figure:
    """The KPI with its expected band (min–max of previous days) and change markers."""
    x = [iso(p.at) for p in points]
    band_x = [iso(p.at) for p in points if p.low is not None]
    data: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "name": "expected band",
            "x": band_x + band_x[::-1],
            "y": [p.high for p in points if p.low is not None]
            + [p.low for p in points if p.low is not None][::-1],
            "fill": "toself",
            "fillcolor": "rgba(86,180,233,0.25)",
            "line": {"width": 0},
            "hoverinfo": "skip",
        },
        {
            "type": "scatter",
            "mode": "lines",
            "name": "expected",
            "x": x,
            "y": [p.expected for p in points],
            "line": {"color": SKY, "dash": "dot"},
        },
        {
            "type": "scatter",
            "mode": "lines+markers" if len(points) <= 90 else "lines",
            "name": metric,
            "x": x,
            "y": [p.value for p in points],
            "line": {"color": BLUE, "width": 2},
            "marker": {"size": 4},
        },
    ]
    values = [v for p in points for v in (p.value, p.high) if v is not None]
    top = max(values) if values else 1.0
    for kind in sorted({c.kind for c in changes}):
        of_kind = [c for c in changes if c.kind == kind]
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"change: {kind}",
                "x": [iso(c.at) for c in of_kind],
                "y": [top] * len(of_kind),
                "text": [
                    f"{c.kind} {c.service} {c.version} · {c.scope_text()} · {c.author}"
                    for c in of_kind
                ],
                "hovertemplate": "%{text}<extra></extra>",
                "marker": {
                    "symbol": CHANGE_SYMBOLS.get(kind, "circle"),
                    "size": 12,
                    "color": VERMILLION,
                },
            }
        )
    shapes = [
        {
            "type": "line",
            "xref": "x",
            "yref": "paper",
            "x0": iso(c.at),
            "x1": iso(c.at),
            "y0": 0,
            "y1": 1,
            "line": {"color": VERMILLION, "width": 1, "dash": "dash"},
        }
        for c in changes
    ]
    yaxis = {"tickformat": ".1%"} if percent else {}
    return {"data": data, "layout": _layout(metric, shapes=shapes, yaxis=yaxis)}


def lines_figure(
    title: str,
    series: Mapping[str, Sequence[tuple[datetime, float | None]]],
    *,
    percent: bool = False,
    ytitle: str = "",
) -> Figure:
    data = [
        {
            "type": "scatter",
            "mode": "lines",
            "name": name,
            "x": [iso(t) for t, _ in points],
            "y": [v for _, v in points],
            "line": {"color": PALETTE[i % len(PALETTE)]},
        }
        for i, (name, points) in enumerate(series.items())
    ]
    yaxis: dict[str, Any] = {"title": {"text": ytitle}}
    if percent:
        yaxis["tickformat"] = ".1%"
    return {"data": data, "layout": _layout(title, yaxis=yaxis)}


def heatmap_figure(
    title: str, x: Sequence[str], y: Sequence[str], z: Sequence[Sequence[float | None]]
) -> Figure:
    """Relative change per cell on the blue/orange diverging scale, centred on zero."""
    finite = [abs(v) for row in z for v in row if v is not None]
    bound = max(finite) if finite else 1.0
    return {
        "data": [
            {
                "type": "heatmap",
                "name": "relative change",
                "x": list(x),
                "y": list(y),
                "z": [list(row) for row in z],
                "zmin": -bound,
                "zmax": bound,
                "colorscale": DIVERGING,
                "hovertemplate": "%{y} × %{x}: %{z:+.1%}<extra></extra>",
                "colorbar": {"tickformat": "+.0%"},
            }
        ],
        "layout": _layout(title, hovermode="closest"),
    }


def bars_figure(
    title: str,
    categories: Sequence[str],
    groups: Mapping[str, Sequence[float | None]],
    *,
    percent: bool = False,
    ytitle: str = "",
) -> Figure:
    data = [
        {
            "type": "bar",
            "name": name,
            "x": list(categories),
            "y": list(values),
            "marker": {"color": PALETTE[i % len(PALETTE)]},
        }
        for i, (name, values) in enumerate(groups.items())
    ]
    yaxis: dict[str, Any] = {"title": {"text": ytitle}}
    if percent:
        yaxis["tickformat"] = ".0%"
    return {
        "data": data,
        "layout": _layout(title, barmode="group", yaxis=yaxis, hovermode="closest"),
    }
