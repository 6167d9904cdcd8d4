"""The scorecard's stored analysis: the same numbers as a full analysis, not recomputed
per page view, recomputed when its inputs change.

The fixture's demo has two locked experiments: ``prompt_v3`` (per-unit sums: analysed from
per-day partial aggregates) and ``ranker_v2`` (a distinct-sessions measure, which cannot
be merged across days: analysed with a full scan). Both paths must show exactly what
:func:`tripwire.experiments.analysis.analyze` computes.
"""

from __future__ import annotations

import html
import os
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tripwire.experiments.analysis import ExperimentAnalysis, analyze
from tripwire.experiments.decision import decide_analysis
from tripwire.experiments.registry import open_registry
from tripwire.experiments.spec import load_specs
from tripwire.metrics.exposures import exposure_sources
from tripwire.report.experiment_readout import readout_context
from tripwire.store.engine import connect, events_table
from tripwire.web.data import DashboardData
from tripwire.web.experiments import scorecard_inputs, store_scorecards, stored_scorecard
from tripwire.web.server import create_server_app

EXPERIMENTS = ("prompt_v3", "ranker_v2")


def _full(workspace: Any, name: str, at: Any) -> ExperimentAnalysis:
    data = DashboardData(workspace)
    specs = load_specs(workspace, catalog=data.metrics.catalog)
    with open_registry(workspace) as registry:
        spec_hash = registry.effective_hash(name) or ""
    backend = connect(workspace)
    try:
        return analyze(
            events_table(backend),
            specs[name].spec,
            data.metrics.catalog.metrics,
            at=at,
            spec_hash=spec_hash,
            sources=exposure_sources(workspace.setting("exposure_mappings")),
        )
    finally:
        backend.disconnect()
        data.close()


def _numbers(analysis: ExperimentAnalysis) -> list[tuple[Any, ...]]:
    """Every look's metric effects, CIs and p-values, and its guardrail checks."""
    out: list[tuple[Any, ...]] = []
    for look in analysis.looks:
        out.append((look.look_date, dict(look.validity.units_per_arm)))
        for r in (*look.primary, *look.secondary, *look.guardrail_metrics):
            rel = r.comparison.relative
            out.append(
                (r.role, r.metric, r.treatment, float(rel.estimate), float(rel.ci_low),
                 float(rel.ci_high), float(rel.p_value), r.adjusted_p_value)
            )  # fmt: skip
        for family in look.guardrails:
            for check in family.checks:
                out.append((check.name, check.test.estimate, check.test.bound, check.breached))
    return out


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_scorecard_shows_the_numbers_of_a_full_analysis(world: Any, name: str) -> None:
    ws = world.workspace
    stored = ws.data_dir / "dashboard" / f"scorecard-{name}.pickle"
    stored.unlink(missing_ok=True)
    (ws.data_dir / "dashboard" / f"readout-{name}.pickle").unlink(missing_ok=True)
    with TestClient(create_server_app(ws, warm=False)) as client:
        body = client.get(f"/fragments/experiments/{name}")
        assert body.status_code == 200, body.text[:500]
    assert stored.exists()  # computed once, kept for the next server
    data = DashboardData(ws)
    try:
        at = data.end().date()
        specs = load_specs(ws, catalog=data.metrics.catalog)
        with open_registry(ws) as registry:
            spec_hash = registry.effective_hash(name)
            lock = registry.lock_of(name)
        assert lock is not None and spec_hash
        _, kept = stored_scorecard(data, specs[name], spec_hash, at)
    finally:
        data.close()
    full = _full(ws, name, at)
    assert kept is not None and len(kept.looks) == len(full.looks) >= 1
    assert repr(_numbers(kept)) == repr(_numbers(full))  # exactly (repr: NaN equals NaN)
    # the page shows the full analysis's primary effect and CI, formatted by the readout
    expected = readout_context(full, decide_analysis(full), lock=lock,
                               generated_at=datetime.now(UTC))  # fmt: skip
    page = html.unescape(body.text)
    for row in expected["primary_rows"]:
        assert row["relative"] in page and row["relative_ci"] in page, row


def test_scorecard_is_read_back_until_its_inputs_change(world: Any) -> None:
    ws, name = world.workspace, "prompt_v3"
    data = DashboardData(ws)
    try:
        at = data.end().date()
        loaded = load_specs(ws, catalog=data.metrics.catalog)[name]
        with open_registry(ws) as registry:
            spec_hash = registry.effective_hash(name)
        stored = ws.data_dir / "dashboard" / f"scorecard-{name}.pickle"
        first = stored_scorecard(data, loaded, spec_hash, at)
        written = stored.stat().st_mtime_ns
        again = stored_scorecard(data, loaded, spec_hash, at)
        assert stored.stat().st_mtime_ns == written  # read back, not recomputed and rewritten
        assert repr(_numbers(again[1])) == repr(_numbers(first[1])) and again[0] == first[0]  # type: ignore[arg-type]
        key = scorecard_inputs(data, loaded, spec_hash, at)
        # a lake file rewritten (e.g. compacted) or another spec hash: other inputs
        lake_file = next(ws.lake_dir.rglob("*.parquet"))
        before = lake_file.stat()
        os.utime(lake_file, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
        try:
            assert scorecard_inputs(data, loaded, spec_hash, at) != key
        finally:
            os.utime(lake_file, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert scorecard_inputs(data, loaded, spec_hash, at) == key
        assert scorecard_inputs(data, loaded, "another hash", at) != key
    finally:
        data.close()


def test_store_scorecards_keeps_every_locked_experiment(world: Any) -> None:
    ws = world.workspace
    folder = ws.data_dir / "dashboard"
    for stored in folder.glob("*.pickle"):
        stored.unlink()
    assert sorted(store_scorecards(ws)) == sorted(EXPERIMENTS)
    assert sorted(p.name for p in folder.glob("scorecard-*.pickle")) == [
        f"scorecard-{name}.pickle" for name in sorted(EXPERIMENTS)
    ]
