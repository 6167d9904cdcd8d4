"""Incident report figures: built as Plotly JSON directly, in the form validation gives.

The report skips Plotly's validation (it cost about 0.4 s per report); these tests check
that validating each figure would not change it, so the embedded JSON is what a
validated ``go.Figure`` produces.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import plotly.graph_objects as go
import pytest

from tripwire.rca.data import Window
from tripwire.rca.problem import DimensionChange
from tripwire.report import incident_report as report

START = datetime(2026, 11, 7, 17, tzinfo=UTC)


def _investigation() -> Any:
    starts = tuple(START + i * timedelta(minutes=10) for i in range(12))
    cells = (
        DimensionChange("locale", "en-GB", 0.6, 0.4, -0.2, -1 / 3, 100, 90, 0.8),
        DimensionChange("device", "Echo Show", 0.6, 0.5, -0.1, -1 / 6, 50, 45, 0.2),
        DimensionChange("device", "Phone", 0.6, 0.6, 0.0, float("nan"), 50, 45, 0.0),
    )
    problem = SimpleNamespace(
        metric="voice_checkout_conversion",
        current=Window(START + timedelta(hours=1), START + timedelta(hours=2)),
        series_starts=starts,
        series_observed=tuple(0.6 - 0.01 * i for i in range(12)),
        series_expected=(0.6,) * 12,
        by_dimension=cells,
    )
    impact = SimpleNamespace(
        aov=None, unit="orders", cumulative_starts=starts, cumulative_loss=tuple(range(12))
    )
    steps = tuple(
        SimpleNamespace(step=name, baseline_conversion=0.97, current_conversion=rate)
        for name, rate in (("cart", 0.9), ("payment", 0.86))
    )
    views = (SimpleNamespace(scope="(all)", steps=steps),)
    return SimpleNamespace(problem=problem, impact=impact, breakpoint=SimpleNamespace(views=views))


BUILDERS = ("_series_figure", "_heatmap_figure", "_loss_figure", "_funnel_figure")


@pytest.mark.parametrize("builder", BUILDERS)
def test_validation_would_not_change_a_figure(builder: str) -> None:
    figure = getattr(report, builder)(_investigation())
    assert figure is not None
    assert go.Figure(figure).to_plotly_json() == figure


def test_the_heatmap_expands_the_named_colorscale() -> None:
    heatmap = report._heatmap_figure(_investigation())["data"][0]
    assert heatmap["colorscale"][0] == [0.0, "rgb(103,0,31)"]
    assert heatmap["colorscale"][-1] == [1.0, "rgb(5,48,97)"]
    assert heatmap["y"] == ["device", "locale"]  # the NaN cell is left out
    assert heatmap["z"][1][heatmap["x"].index("en-GB")] == pytest.approx(-1 / 3)


def test_figure_html_embeds_the_figure() -> None:
    figure = report._series_figure(_investigation())
    html = report.figure_html(figure)
    assert "<script src=" not in html
    embedded = re.search(r'Plotly\.newPlot\(\s*"[^"]+",\s*(.*)\s*\)\s*};?\s*</script>', html, re.S)
    assert embedded is not None
    data, layout = json.loads("[" + embedded.group(1) + "]")[:2]
    assert [t["name"] for t in data] == ["observed", "baseline"]
    assert layout["title"] == {"text": figure["layout"]["title"]["text"]}
    assert (
        layout["template"]
        == go.Figure(layout={"template": "plotly_white"}).layout.template.to_plotly_json()
    )
    assert layout["shapes"][0]["x0"].startswith("2026-11-07T18:00:00")
