"""End to end on the synthetic world: every planted incident investigated like an on-call would.

Worlds are small but dense (8,000 users × 3 days at 2.5 sessions per user-day; the
payments and retrieval incidents on day 2, the telemetry outage on day 1), scored with the
demo's own truth check (:func:`tripwire.rca.demo_step.check_truth`). Each world also gets a planted
**global** change (40% of payment authorisations fail everywhere for 2.5 h on day 1,
product-side: the ledger loses the same orders) that must not be localized.

The accuracy test scores every case (seeds × incident types) on the top root-cause set,
funnel step, change and category, and asserts ≥ 95% correct; the investigation runs at
the incident's end (a retrospective on-call look; the demo pages at +60 min, checked by
``tests/rca/test_demo_world.py``). Also: the
measurement-issue verdict up front, no invented cause for an unmoved metric, the report
files and the CLI. Widen the sweep with ``TRIPWIRE_RCA_SEEDS=1,2,3,4``.
"""

from __future__ import annotations

import json
import os
import zlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tripwire.cli.main import app
from tripwire.rca.data import NONE
from tripwire.rca.demo_step import check_truth
from tripwire.rca.incidents import IncidentStore, record_investigation
from tripwire.rca.investigation import Investigation, investigate
from tripwire.sim import World, WorldConfig
from tripwire.sim.feed import write_world_to_lake
from tripwire.store.workspace import Workspace, init_workspace

# One worker builds the worlds, once: the fixture is session-scoped because xdist and the
# random test order interleave modules, which would tear a module fixture down and rebuild it.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("rca-world")]

SEEDS = tuple(int(s) for s in os.environ.get("TRIPWIRE_RCA_SEEDS", "1,2").split(","))
GLOBAL = "global-payment-failure"
#: Events of a session lost when its payment fails (app and ledger alike: a product failure).
_AFTER_PAYMENT = {
    "Payment Authorized",
    "Shipping Selected",
    "Order Confirmed",
    "Order Completed",
    "Ledger Order Recorded",
}


def _global_failure(message: dict[str, Any], start: datetime, end: datetime) -> bool:
    """True when ``message`` is lost to the planted global payment failure (40% of sessions)."""
    if message.get("event") not in _AFTER_PAYMENT:
        return False
    at = datetime.fromisoformat(message["timestamp"].replace("Z", "+00:00"))
    if not start <= at < end:
        return False
    session = str(message.get("properties", {}).get("session_id", ""))
    return zlib.crc32(session.encode()) % 10 < 4


def build_world(root: Path, seed: int) -> Workspace:
    """A dense 3-day world with the three planted incidents and the global failure."""
    ws = init_workspace(root)
    world = World(
        WorldConfig(
            seed=seed,
            users=8000,
            days=3,
            sessions_per_user_day=2.5,
            incident_days=(2, 1, 2),
            turn_latency_sampling=0.1,
            experiments=False,
        )
    )
    day1 = world.start.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    g_start, g_end = day1 + timedelta(hours=10), day1 + timedelta(hours=12, minutes=30)
    write_world_to_lake(world, ws, keep=lambda m: not _global_failure(m, g_start, g_end))
    planted = {
        "id": GLOBAL,
        "start": g_start.isoformat(),
        "end": g_end.isoformat(),
        "metric": "voice_checkout_conversion",
        "segments": [],
        "funnel_step": "payment",
    }
    (ws.data_dir / "sim" / "global_change.json").write_text(json.dumps(planted))
    return ws


def cases(ws: Workspace) -> list[dict[str, Any]]:
    """The planted incidents of a world built by :func:`build_world` (global one last)."""
    truth = json.loads((ws.data_dir / "sim" / "ground_truth.json").read_text())["incidents"]
    return [*truth, json.loads((ws.data_dir / "sim" / "global_change.json").read_text())]


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def score(case: dict[str, Any], inv: Investigation) -> dict[str, bool]:
    """Which parts of one investigation are right (segments, step, change, category)."""
    top = inv.changes.implicated
    if case["id"] == GLOBAL:
        # No invented cause: no segment, and no scoped change blamed for a global failure.
        return {
            "segments": inv.root_segments == (),
            "step": inv.breakpoint.breakpoint == case["funnel_step"],
            "change": top is None or not top.change.get("scope"),
            "category": inv.category != "measurement issue",
        }
    check = check_truth(case, inv)
    return {
        "segments": check.segments,
        "step": check.step,
        "change": check.change,
        "category": check.category,
    }


@pytest.fixture(scope="session")
def investigated(
    tmp_path_factory: pytest.TempPathFactory,
) -> list[tuple[Workspace, list[tuple[dict[str, Any], Investigation]]]]:
    out = []
    for seed in SEEDS:
        ws = build_world(tmp_path_factory.mktemp(f"world{seed}"), seed)
        found = [(case, investigate(ws, case["metric"], _time(case["end"]))) for case in cases(ws)]
        out.append((ws, found))
    return out


def test_accuracy_over_seeds_and_incident_types(investigated):
    table = [(case["id"], score(case, inv)) for _, found in investigated for case, inv in found]
    right = [all(parts.values()) for _, parts in table]
    assert len(table) == 4 * len(SEEDS)
    assert sum(right) / len(right) >= 0.95, [
        t for t, ok in zip(table, right, strict=True) if not ok
    ]


def test_no_invented_cause_for_a_global_change(investigated):
    for _, found in investigated:
        inv = next(inv for case, inv in found if case["id"] == GLOBAL)
        assert inv.root_segments == () and not inv.integrity.measurement_issue, inv.summary()


def test_the_measurement_issue_is_said_up_front(investigated):
    for _, found in investigated:
        for case, inv in found:
            measurement = case.get("category") == "measurement issue"
            assert inv.integrity.measurement_issue == measurement, (
                case["id"],
                inv.integrity.evidence,
            )
            if measurement:
                assert inv.summary().split(". ")[1].startswith("Measurement issue")
                assert inv.breakpoint.breakpoint is None


def test_a_metric_that_did_not_move_gets_no_invented_cause(investigated):
    ws, found = investigated[0]
    telemetry = next(inv for case, inv in found if case["id"] == "telemetry-outage")
    # Chatbot resolution is not touched by the telemetry outage (day 1; the retrieval
    # incident is on day 2, beyond the onset search's 12 hours).
    inv = investigate(ws, "resolution_rate", telemetry.at)
    assert inv.root_segments == () and inv.changes.implicated is None, inv.summary()


def test_reports_are_written_and_stored(investigated):
    ws, found = investigated[0]
    _, inv = found[0]
    record, files = record_investigation(ws, inv)
    html = files.html.read_text()
    assert (
        "<script src=" not in html and "<link" not in html and "Plotly" in html
    )  # nothing fetched
    text = files.markdown.read_text()
    for section in (
        "Executive summary",
        "Problem definition",
        "Data integrity",
        "Localization",
        "Funnel breakpoint",
        "Changes and root-cause category",
        "Impact",
        "Recommended actions",
        "Risks and guardrails",
        "How success will be measured",
        "Postmortem skeleton",
    ):
        assert f"## {section}" in text, section
    with IncidentStore.for_workspace(ws) as store:
        assert store.get(record.id).category == inv.category
    assert NONE not in str(inv.root_segments)


def test_cli_rca_and_incidents(investigated):
    ws, found = investigated[0]
    case, inv = next((c, v) for c, v in found if c["id"] == "retrieval-shard")
    at = _time(case["start"]) + timedelta(minutes=60)  # paged an hour in
    runner = CliRunner()
    result = runner.invoke(app, ["rca", case["metric"], "--at", at.isoformat(), "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert "retrieval" in result.output
    listed = runner.invoke(app, ["incidents", "list", "-w", str(ws.root)])
    assert listed.exit_code == 0 and "inc_" in listed.output
    incident_id = next(w for w in listed.output.split() if w.startswith("inc_"))
    shown = runner.invoke(app, ["incidents", "show", incident_id, "-w", str(ws.root)])
    assert shown.exit_code == 0, shown.output
    assert "recovered" in shown.output  # the planted rollback restores resolution
    stats = runner.invoke(app, ["incidents", "stats", "-w", str(ws.root)])
    assert stats.exit_code == 0 and "model version" in stats.output
    bad = runner.invoke(
        app, ["rca", "resolution_rate", "--at", "1999-01-01T00:00Z", "-w", str(ws.root)]
    )
    assert bad.exit_code == 1 and "outside the data" in bad.output
