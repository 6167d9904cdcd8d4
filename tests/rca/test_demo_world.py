"""The demo's root-cause step on the demo's own world: right segments, step, change, category.

Issue 7's demo bar, checked on the world ``tripwire demo`` simulates (seed 7, 10,000 users,
14 days): the demo's RCA step investigates each planted incident an hour after its onset
(as a paged on-call would) and must name the planted segments (none for the global telemetry
loss), the funnel step that broke, the causing change and the category ("measurement issue"
for the telemetry outage), and write both reports for each.
"""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from tripwire.rca.demo_step import check_truth, run_rca_step
from tripwire.store.workspace import Workspace

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("demo-world")]


def test_demo_rca_names_each_planted_cause(demo_world: Workspace) -> None:
    out = io.StringIO()
    investigations = run_rca_step(demo_world, Console(file=out, width=200))
    truth = json.loads((demo_world.data_dir / "sim" / "ground_truth.json").read_text())
    assert len(investigations) == len(truth["incidents"]) == 3
    for incident, inv in zip(truth["incidents"], investigations, strict=True):
        check = check_truth(incident, inv)
        assert check.matches, (incident["id"], check, inv.summary())
        assert inv.integrity.measurement_issue == (incident["category"] == "measurement issue")
    reports = sorted((demo_world.data_dir / "reports").rglob("inc_*"))
    assert {p.suffix for p in reports} >= {".md", ".html"}, reports
    assert "no:" not in out.getvalue()
