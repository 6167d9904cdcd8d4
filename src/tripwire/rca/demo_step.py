"""The demo's root-cause step: investigate each planted incident and write the reports.

For every incident in ``ground_truth.json`` the step runs ``tripwire rca`` on the
incident's metric an hour after its start (as an on-call engineer would when paged), writes
the report and prints what the investigation found next to the ground truth.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

from tripwire.rca.data import InvestigationError
from tripwire.rca.incidents import record_investigation
from tripwire.rca.investigation import Investigation, investigate
from tripwire.rca.segments import describe
from tripwire.store.workspace import Workspace

#: How long after the planted start the demo "gets paged".
PAGED_AFTER = timedelta(minutes=60)


def _truth(workspace: Workspace) -> list[dict[str, Any]]:
    path = workspace.data_dir / "sim" / "ground_truth.json"
    if not path.exists():
        return []
    return list(json.loads(path.read_text()).get("incidents", []))


def run_rca_step(workspace: Workspace, console: Console) -> list[Investigation]:
    """Investigate each planted incident; print found vs planted; return the investigations."""
    table = Table(title="root-cause analysis vs ground truth")
    for column in ("incident", "segments found", "step", "change", "category (planted)", "report"):
        table.add_column(column)
    out = []
    for incident in _truth(workspace):
        start = datetime.fromisoformat(incident["start"].replace("Z", "+00:00"))
        try:
            inv = investigate(workspace, incident["metric"], start + PAGED_AFTER)
        except InvestigationError as error:  # e.g. a short demo whose data ends before it
            table.add_row(incident["id"], f"(not investigated: {error})", "–", "–", "–", "–")
            continue
        _, files = record_investigation(workspace, inv)
        top = inv.changes.implicated
        change = f"{top.change['service']} {top.change.get('version', '')}" if top else "–"
        table.add_row(
            incident["id"],
            "; ".join(describe(s) for s in inv.root_segments) or "(none)",
            inv.breakpoint.breakpoint or "–",
            change,
            f"{inv.category} ({incident['category']})",
            files.html.name,
        )
        out.append(inv)
    console.print(table)
    return out
