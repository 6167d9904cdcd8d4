"""The demo world's cohort-flipping experiment gets the verdict its ground truth calls for.

The world of ``tripwire demo`` (seed 7, 10,000 users, 14 days) is generated as the demo
does; the events that ``ranker_v2``'s decision reads go straight into a lake (the capture
path is tested elsewhere), and the demo step's shipped spec is analysed at every look and
decided, then checked with the demo step's ground-truth check: vetoed because its ja-JP
cohort guardrail is breached, while the aggregate effect is positive.

To keep the test within its budget the spec's secondary metrics are dropped (with the
events only they read): secondaries are reported but never enter a decision rule (primary,
guardrails, SRM and the sequential boundaries do). ``prompt_v3``'s verdict is checked by
the demo itself (its guardrails read every turn, ~4× the events).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from tripwire.cli.demo import demo_world_config
from tripwire.events import validate_batch
from tripwire.experiments.analysis import analyze
from tripwire.experiments.decision import decide_analysis
from tripwire.experiments.demo_step import JP_GUARDRAIL, check_truth, install_example
from tripwire.experiments.spec import load_spec
from tripwire.metrics.catalog import install_catalog
from tripwire.metrics.loader import load_metrics
from tripwire.metrics.unit_stats import plan_metrics
from tripwire.sim.world import World
from tripwire.store.engine import connect, events_table
from tripwire.store.lake import write_events
from tripwire.store.workspace import init_workspace

RANKER = "ranker_v2"
DEMO_WORLD = demo_world_config()


def _needed_events(specs: list[Any], catalog: Any) -> set[str]:
    names = {"$exposure", "Session Started"}
    for spec in specs:
        metrics = [spec.primary.metric, *(s.metric for s in spec.secondary)]
        metrics += [g.metric for g in spec.guardrails]
        plan = plan_metrics([catalog.metrics[m] for m in dict.fromkeys(metrics)])
        for component in plan.components:
            for f in component.filters:
                names |= set(f.events)
    return names


@pytest.mark.slow
def test_demo_world_verdicts_match_its_ground_truth(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    install_catalog(ws)
    world = World(DEMO_WORLD, sent_at=False)
    truth = {e.name: e for e in world.ground_truth().experiments}
    catalog = load_metrics(ws, check_lake=False)
    start = datetime.fromisoformat(truth[RANKER].start.replace("Z", "+00:00"))
    install_example(ws, RANKER, start)
    shipped = load_spec(ws, RANKER, catalog=catalog).spec
    assert shipped.secondary and shipped.guardrails
    spec = shipped.model_copy(update={"secondary": []})
    needed = _needed_events([spec], catalog)
    received = datetime(2026, 12, 1, tzinfo=UTC)
    envelopes: list[dict[str, Any]] = []
    for batch in world.batches(50_000):
        wanted = [m for m in batch.messages if m.get("event") in needed]
        accepted, rejected = validate_batch(wanted, received_at=received, source=batch.source)
        assert not rejected
        envelopes += accepted
    write_events(ws.lake_dir, envelopes, file_id="demo-world")

    events = events_table(connect(ws))
    at: date = events.timestamp.max().to_pyarrow().as_py().date()
    analysis = analyze(events, spec, catalog.metrics, at=at)
    decision = decide_analysis(analysis)
    assert len(analysis.looks) == 3 and analysis.current.sequential[0].final
    verdict = check_truth(RANKER, decision, analysis)
    assert verdict.matches, (decision.verdict, decision.rule, decision.breaches)
    assert decision.breaches == (f"{JP_GUARDRAIL} [locale=ja-JP]",)
    effects = {e.metric: e for e in truth[RANKER].effects}
    assert effects["add_to_cart_per_user"].overall > 0
    assert effects["add_to_cart_per_user"].by_cohort["locale"]["ja-JP"] < 0
