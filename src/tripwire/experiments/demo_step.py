"""The demo's experiments step: install, plan, lock, analyse and report the world's experiments.

``tripwire demo`` calls :func:`run_experiments_step` after the lake is built. For each
example spec shipped in :mod:`tripwire.experiments.examples` (``ranker_v2``,
``prompt_v3``, matching the synthetic world) it

1. copies the spec into ``experiments/`` (dates shifted to the world's experiment start
   when the demo ran another range) and the day-1 metric catalog into ``metrics/``;
2. plans it on the lake (:func:`tripwire.experiments.planner.plan_experiment`);
3. locks it in the registry (pre-registration);
4. analyses every look up to the end of the data, records the looks and the verdict in the
   decision log, and writes the readout (Markdown + HTML) to ``.tripwire/reports/experiments``;
5. compares the verdict with the world's ground truth: ``ranker_v2`` must be vetoed
   because the ja-JP locale cohort of its add-to-cart guardrail is breached (and no other
   locale's) although its aggregate effect is positive, ``prompt_v3`` on its thumbs-down
   guardrail.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tripwire.experiments.analysis import ExperimentAnalysis, analyze
from tripwire.experiments.decision import ExperimentDecision, decide_analysis, record
from tripwire.experiments.planner import PlanningError, plan_experiment
from tripwire.experiments.registry import AlreadyLocked, open_registry
from tripwire.experiments.spec import LoadedSpec, load_spec
from tripwire.metrics.catalog import install_catalog
from tripwire.metrics.exposures import exposure_sources
from tripwire.metrics.loader import load_metrics
from tripwire.report.experiment_readout import render_readout, write_readout
from tripwire.store.engine import connect, events_table
from tripwire.store.workspace import Workspace

EXAMPLES = ("ranker_v2", "prompt_v3")
AUTHOR = "tripwire demo"
#: The ranker_v2 guardrail whose ja-JP cohort the world makes regress.
JP_GUARDRAIL = "add_to_cart_by_locale"
_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})")


@dataclass(frozen=True)
class TruthCheck:
    """What the world planted and whether the verdict agrees."""

    expected: str
    matches: bool


@dataclass(frozen=True)
class ExperimentStepResult:
    """One experiment of the demo: its verdict, readout files and the ground-truth check."""

    experiment: str
    decision: ExperimentDecision
    analysis: ExperimentAnalysis
    markdown: Path
    html: Path
    truth: TruthCheck


def _ground_truth(workspace: Workspace) -> dict[str, dict[str, object]]:
    path = workspace.data_dir / "sim" / "ground_truth.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {e["name"]: e for e in data.get("experiments", [])}


def install_example(workspace: Workspace, name: str, start: datetime | None) -> Path:
    """Copy example spec ``name``; shift its dates by whole days so that its start is the
    world's experiment start (the examples match a world starting 2026-11-02)."""
    text = resources.files("tripwire.experiments.examples").joinpath(f"{name}.yaml").read_text()
    if start is not None:
        found = re.search(r"^start:\s*(\S+)", text, flags=re.M)
        if found:
            written = datetime.fromisoformat(found.group(1).replace("Z", "+00:00"))
            shift = timedelta(days=(start.date() - written.date()).days)
            if shift:
                text = _DATE.sub(lambda m: str(date.fromisoformat(m.group(1)) + shift), text)
    target = workspace.experiments_dir / f"{name}.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def check_truth(
    name: str, decision: ExperimentDecision, analysis: ExperimentAnalysis
) -> TruthCheck:
    """The verdict the world's ground truth calls for, and whether this one is it."""
    verdict = decision.verdict.value
    if name == "ranker_v2":
        look = analysis.current
        positive = all(float(r.comparison.relative.estimate) > 0 for r in look.primary)
        # breached (significantly worse), not merely "not shown non-inferior": the rule is
        # guardrail-breach and the only breached locale cohort is ja-JP
        locales = [b for b in decision.breaches if "[locale=" in b]
        named = locales == [f"{JP_GUARDRAIL} [locale=ja-JP]"]
        return TruthCheck(
            "VETO: ja-JP cohort guardrail breached, aggregate positive",
            verdict == "VETO" and decision.rule == "guardrail-breach" and named and positive,
        )
    if name == "prompt_v3":
        named = any("thumbs_down" in v or "csat" in v for v in decision.vetoes)
        return TruthCheck("VETO on the thumbs-down / CSAT guardrail", verdict == "VETO" and named)
    return TruthCheck("(no ground truth)", True)


def _lock(workspace: Workspace, loaded: LoadedSpec) -> str:
    with open_registry(workspace) as registry:
        try:
            registry.lock(
                loaded.spec.name, loaded.hash, loaded.spec.model_dump(mode="json"), author=AUTHOR
            )
        except AlreadyLocked:
            return registry.ensure_current(
                loaded, amend="demo re-run with the shipped example spec", author=AUTHOR
            )
        return loaded.hash


def run_experiments_step(workspace: Workspace, console: Console) -> list[ExperimentStepResult]:
    """Install, plan, lock, analyse and report the world's experiments (see module doc)."""
    install_catalog(workspace)
    truth = _ground_truth(workspace)
    catalog = load_metrics(workspace, check_lake=False)
    backend = connect(workspace)
    events = events_table(backend)
    last = events.timestamp.max().to_pyarrow().as_py()
    at = last.date() if last else date.today()
    sources = exposure_sources(workspace.setting("exposure_mappings"))
    results: list[ExperimentStepResult] = []
    for name in EXAMPLES:
        started = truth.get(name, {}).get("start")
        start = datetime.fromisoformat(str(started).replace("Z", "+00:00")) if started else None
        install_example(workspace, name, start)
        loaded = load_spec(workspace, name, catalog=catalog)
        try:
            plan = plan_experiment(workspace, loaded, catalog=catalog, backend=backend)
            under = ", ".join(c.label for c in plan.underpowered_cohorts) or "none"
            console.print(
                f"[bold]{name}[/bold] plan: {plan.n_per_arm[0]:,} units per arm, "
                f"{plan.runtime_days} days, sequential inflation {plan.sequential_inflation:.3f}; "
                f"underpowered cohorts: {under}"
            )
        except PlanningError as error:
            console.print(f"[bold]{name}[/bold] plan: {error}")
        spec_hash = _lock(workspace, loaded)
        analysis = analyze(
            events, loaded.spec, catalog.metrics, at=at, spec_hash=spec_hash, sources=sources
        )
        decision = decide_analysis(analysis)
        with open_registry(workspace) as registry:
            record(registry, analysis, decision, author=AUTHOR)
            lock = registry.lock_of(name)
            amendments = registry.amendments(name)
            log = registry.decisions(name)
        readout = render_readout(analysis, decision, lock=lock, amendments=amendments, log=log)
        files = write_readout(readout, workspace.reports_dir / "experiments")
        results.append(
            ExperimentStepResult(
                name,
                decision,
                analysis,
                files.markdown,
                files.html,
                check_truth(name, decision, analysis),
            )  # fmt: skip
        )
    table = Table(title="experiments: verdicts vs the world's ground truth")
    for column in ("experiment", "verdict", "rule", "names", "ground truth", "match"):
        table.add_column(column)
    for r in results:
        names = ", ".join(r.decision.breaches or r.decision.vetoes) or "—"
        table.add_row(
            r.experiment, r.decision.verdict.value, r.decision.rule, escape(names),
            r.truth.expected,
            "[green]yes[/green]" if r.truth.matches else "[red]NO[/red]",
        )  # fmt: skip
    console.print(table)
    for r in results:
        console.print(f"readout {r.experiment}: {r.html}")
    return results
