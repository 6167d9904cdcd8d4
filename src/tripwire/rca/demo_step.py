"""The demo's root-cause step: investigate each planted incident and write the reports.

For every incident in ``ground_truth.json`` the step runs ``tripwire rca`` on the
incident's metric an hour after its start (as an on-call engineer would when paged), writes
the report and prints what the investigation found next to the ground truth, with
:func:`check_truth`'s verdict on each part (segments, funnel step, change, category).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

from tripwire.monitor.changes import dimension_key
from tripwire.rca.data import InvestigationError
from tripwire.rca.incidents import record_investigation
from tripwire.rca.investigation import Investigation, investigate
from tripwire.rca.segments import describe
from tripwire.store.workspace import Workspace

#: How long after the planted start the demo "gets paged".
PAGED_AFTER = timedelta(minutes=60)


def segments_match(
    found: Sequence[Mapping[str, str]], planted: Sequence[Mapping[str, str]]
) -> bool:
    """Same number of segments and each planted one found (``app_version`` ≡ its device).

    A found segment matches a planted one when it pins no conflicting value, pins every
    planted condition or an equivalent ``app_version``, and adds no unrelated condition.
    Dimension names compare by their last path component (``context.traits.payment_method``
    is ``payment_method``). A global incident (no planted segment) matches no segment found.

    >>> segments_match([{"context.traits.payment_method": "tokenized-card"}],
    ...                [{"payment_method": "tokenized-card"}])
    True
    >>> segments_match([{"locale": "en-GB", "device": "web"}], [{"locale": "en-GB"}])
    False
    >>> segments_match([], []), segments_match([{"locale": "en-GB"}], [])
    (True, False)
    """
    if len(found) != len(planted):
        return False
    short = [{dimension_key(k): v for k, v in f.items()} for f in found]
    for seg in planted:
        ok = False
        for f in short:
            conflict = any(k in f and f[k] != v for k, v in seg.items())
            covered = all(k in f or "app_version" in f for k in seg)
            unrelated = [k for k in f if k not in seg and k != "app_version"]
            ok |= not conflict and covered and not unrelated
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class TruthCheck:
    """Which parts of one investigation agree with the planted incident."""

    segments: bool
    step: bool
    change: bool
    category: bool

    @property
    def matches(self) -> bool:
        return self.segments and self.step and self.change and self.category


def check_truth(incident: Mapping[str, Any], inv: Investigation) -> TruthCheck:
    """Compare an investigation with a planted incident of the ground truth: the root-cause
    segments, the funnel step that broke (None for metrics without one, and for measurement
    issues), the implicated change (service and version) and the category."""
    top = inv.changes.implicated
    cause = incident.get("change") or {}
    return TruthCheck(
        segments=segments_match(inv.root_segments, incident.get("segments", [])),
        step=inv.breakpoint.breakpoint == incident.get("funnel_step"),
        change=top is not None
        and (top.change["service"], top.change.get("version"))
        == (cause.get("service"), cause.get("version")),
        category=inv.category == incident.get("category"),
    )


def _truth(workspace: Workspace) -> list[dict[str, Any]]:
    path = workspace.data_dir / "sim" / "ground_truth.json"
    if not path.exists():
        return []
    return list(json.loads(path.read_text()).get("incidents", []))


def run_rca_step(workspace: Workspace, console: Console) -> list[Investigation]:
    """Investigate each planted incident; print found vs planted; return the investigations."""
    table = Table(title="root-cause analysis vs ground truth")
    for column in ("incident", "segments found", "step", "change", "category (planted)", "match"):
        table.add_column(column)
    out = []
    reports = []
    for incident in _truth(workspace):
        start = datetime.fromisoformat(incident["start"].replace("Z", "+00:00"))
        try:
            inv = investigate(workspace, incident["metric"], start + PAGED_AFTER)
        except InvestigationError as error:  # e.g. a short demo whose data ends before it
            table.add_row(incident["id"], f"(not investigated: {error})", "–", "–", "–", "no")
            continue
        _, files = record_investigation(workspace, inv)
        reports.append(files.html)
        top = inv.changes.implicated
        change = f"{top.change['service']} {top.change.get('version', '')}" if top else "–"
        check = check_truth(incident, inv)
        wrong = [
            name for name in ("segments", "step", "change", "category") if not getattr(check, name)
        ]
        table.add_row(
            incident["id"],
            "; ".join(describe(s) for s in inv.root_segments) or "(none)",
            inv.breakpoint.breakpoint or "–",
            change,
            f"{inv.category} ({incident['category']})",
            "yes" if check.matches else f"no: {', '.join(wrong)}",
        )
        out.append(inv)
    console.print(table)
    if reports:
        console.print(f"incident reports: {', '.join(str(r) for r in reports)}")
    return out
