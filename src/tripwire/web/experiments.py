"""Experiment list and scorecards for the dashboard, from the registry and the analysis.

The list reads the registry only (status, current look, verdict). A scorecard runs the
experiment's analysis at the newest data day (every look up to it) and formats it with the
readout's :func:`~tripwire.report.experiment_readout.readout_context`, so the page and the
readout file show the same numbers; the planner's numbers come from
:func:`~tripwire.experiments.planner.plan_experiment`. Both are cached (minutes: an
analysis changes once per look).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tripwire.experiments.analysis import analyze
from tripwire.experiments.decision import decide_analysis
from tripwire.experiments.planner import PlanningError, plan_experiment
from tripwire.experiments.registry import open_registry
from tripwire.experiments.spec import ExperimentSpecError, load_specs
from tripwire.metrics.exposures import exposure_sources
from tripwire.report.experiment_readout import readout_context
from tripwire.store.engine import events_table
from tripwire.web.data import DashboardData

SCORECARD_TTL = 300.0


@dataclass(frozen=True)
class ExperimentRow:
    name: str
    description: str
    status: str
    looks: int
    verdict: str | None
    rule: str | None
    spec_hash: str | None


def experiment_rows(data: DashboardData) -> tuple[list[ExperimentRow], list[str]]:
    """Every spec of the workspace with its registry state; and spec errors, if any."""
    errors: list[str] = []
    try:
        specs = load_specs(data.workspace, catalog=data.metrics.catalog)
    except ExperimentSpecError as error:
        return [], [str(e) for e in error.errors]
    rows = []
    with open_registry(data.workspace) as registry:
        for name, loaded in sorted(specs.items()):
            verdict = registry.latest_verdict(name)
            lock = registry.lock_of(name)
            rows.append(
                ExperimentRow(
                    name=name,
                    description=loaded.spec.description or "",
                    status=registry.status(name),
                    looks=len(registry.looks(name)),
                    verdict=registry.final_decision(name) or (verdict.verdict if verdict else None),
                    rule=verdict.rule if verdict else None,
                    spec_hash=lock.hash if lock else None,
                )
            )
    return rows, errors


def scorecard(data: DashboardData, name: str) -> dict[str, Any]:
    """The readout context of ``name`` at the newest data day, plus plan and figures."""
    return data.cache.get(("scorecard", name), lambda: _scorecard(data, name), SCORECARD_TTL)


def _scorecard(data: DashboardData, name: str) -> dict[str, Any]:
    specs = load_specs(data.workspace, catalog=data.metrics.catalog)
    if name not in specs:
        raise KeyError(name)
    loaded = specs[name]
    with open_registry(data.workspace) as registry:
        lock = registry.lock_of(name)
        status = registry.status(name)
        amendments = registry.amendments(name)
        log = registry.decisions(name)
        overrides = registry.overrides(name)
        looks = registry.looks(name)
    plan: dict[str, Any] = {}
    with data._lock:
        backend = data.metrics.backend
        try:
            p = plan_experiment(
                data.workspace, loaded, catalog=data.metrics.catalog, backend=backend
            )
            plan = {
                "n_per_arm": list(p.n_per_arm),
                "runtime_days": p.runtime_days,
                "sequential_inflation": p.sequential_inflation,
                "eligible_units": p.eligible_units,
                "daily_eligible_units": p.daily_eligible_units,
                "baseline": p.primary.value,
                "underpowered": [c.label for c in p.underpowered_cohorts],
            }
        except (PlanningError, ValueError) as error:
            plan = {"error": str(error)}
        events = events_table(backend)
        context: dict[str, Any] | None = None
        problem = ""
        if lock is None:
            problem = "draft: not locked yet, so there is no pre-registered analysis to show"
        else:
            at = data.end().date()
            analysis = analyze(
                events,
                loaded.spec,
                data.metrics.catalog.metrics,
                at=at,
                spec_hash=registry_hash(data, name) or lock.hash,
                sources=exposure_sources(data.workspace.setting("exposure_mappings")),
            )
            decision = decide_analysis(analysis)
            context = readout_context(
                analysis,
                decision,
                lock=lock,
                amendments=amendments,
                log=log,
                generated_at=datetime.now(UTC),
            )
    return {
        "name": name,
        "status": status,
        "looks": len(looks),
        "plan": plan,
        "readout": context,
        "problem": problem,
        "overrides": overrides,
    }


def warm_scorecards(data: DashboardData) -> None:
    """Compute every locked experiment's scorecard (a background warm-up step)."""
    rows, _ = experiment_rows(data)
    for row in rows:
        if row.status != "draft":
            scorecard(data, row.name)


def registry_hash(data: DashboardData, name: str) -> str | None:
    with open_registry(data.workspace) as registry:
        return registry.effective_hash(name)
