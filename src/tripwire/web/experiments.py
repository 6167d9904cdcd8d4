"""Experiment list and scorecards for the dashboard, from the registry and the analysis.

The list reads the registry only (status, current look, verdict). A scorecard shows the
experiment's analysis at the newest data day (every look up to it) formatted with the
readout's :func:`~tripwire.report.experiment_readout.readout_context`, so the page and the
readout file show the same numbers; the planner's numbers come from
:func:`~tripwire.experiments.planner.plan_experiment`.

A page view does not rerun the analysis. The analysis and the plan are stored under
``<data dir>/dashboard/`` with the inputs they were computed from (the lake's files, the
spec's effective hash, the metric definitions, the analysis day); a scorecard whose inputs
did not change is read back (a cold server pays milliseconds, not a scan of the lake).
When they changed, the analysis is recomputed from the experiment's per-day partial
aggregates (:func:`~tripwire.experiments.analysis.analyze_incremental`: the refresh scans
only the lake files not seen yet, the same state ``tripwire experiment analyze
--incremental`` keeps), or with a full :func:`~tripwire.experiments.analysis.analyze` when
the spec reads a measure that cannot be merged across days (distinct counts). Both give
exactly the numbers of a full analysis (tested).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from tripwire.experiments.analysis import (
    ExperimentAnalysis,
    analyze,
    analyze_incremental,
    incremental_spec,
)
from tripwire.experiments.decision import decide_analysis
from tripwire.experiments.planner import PlanningError, plan_experiment
from tripwire.experiments.registry import open_registry
from tripwire.experiments.spec import ExperimentSpecError, LoadedSpec, load_specs
from tripwire.metrics.exposures import exposure_sources
from tripwire.metrics.incremental import IncrementalStats
from tripwire.metrics.unit_stats import UnitStatsError
from tripwire.report.experiment_readout import readout_context
from tripwire.store.engine import events_table
from tripwire.store.workspace import Workspace
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
    context: dict[str, Any] | None = None
    problem = ""
    at = data.end().date()
    effective = registry_hash(data, name) or (lock.hash if lock else "")
    spec_hash = effective if lock else None
    plan, analysis = stored_scorecard(data, loaded, spec_hash, at)
    if lock is None:
        problem = "draft: not locked yet, so there is no pre-registered analysis to show"
    elif analysis is not None:
        # the formatted readout (its figures cost more than reading the analysis back) is
        # stored too, for this analysis and this registry state (lock, amendments, log)
        inputs = scorecard_inputs(data, loaded, spec_hash, at)
        registry_state = repr((lock, amendments, log)).encode()
        key = hashlib.sha256(inputs.encode() + b"\0" + registry_state).hexdigest()
        context = _stored(
            data.workspace.data_dir / "dashboard" / f"readout-{name}.pickle",
            key,
            lambda: readout_context(
                analysis,
                decide_analysis(analysis),
                lock=lock,
                amendments=amendments,
                log=log,
                generated_at=datetime.now(UTC),
            ),
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


STORE_VERSION = 2


def stored_scorecard(
    data: DashboardData, loaded: LoadedSpec, spec_hash: str | None, at: date
) -> tuple[dict[str, Any], ExperimentAnalysis | None]:
    """The plan's numbers and (for a locked spec, ``spec_hash`` set) the analysis at
    ``at``: read from ``<data dir>/dashboard/scorecard-<name>.pickle`` when they were
    computed from the same inputs, else computed (:func:`compute_scorecard`) and stored."""
    key = scorecard_inputs(data, loaded, spec_hash, at)
    return _stored(  # type: ignore[no-any-return]
        data.workspace.data_dir / "dashboard" / f"scorecard-{loaded.spec.name}.pickle",
        key,
        lambda: compute_scorecard(data, loaded, spec_hash, at),
    )


def _stored(path: Path, key: str, compute: Callable[[], Any]) -> Any:
    """``compute()``'s value stored at ``path`` with ``key`` (the digest of its inputs):
    read back while ``key`` is the same, else recomputed and stored (atomically)."""
    try:
        with path.open("rb") as handle:
            stored = pickle.load(handle)  # the workspace's own file, written below
        if stored.get("key") == key:
            return stored["value"]
    except (OSError, EOFError, KeyError, pickle.UnpicklingError, AttributeError, ImportError,
            TypeError):  # fmt: skip
        pass
    value = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        with tmp.open("wb") as handle:
            pickle.dump({"key": key, "value": value}, handle)
        os.replace(tmp, path)
    except OSError:  # a read-only workspace: the page still shows the computed value
        pass
    return value


def scorecard_inputs(
    data: DashboardData, loaded: LoadedSpec, spec_hash: str | None, at: date
) -> str:
    """A digest of everything a scorecard's plan and analysis are computed from: the
    lake's files (path, size, modification time), the spec file and its effective hash,
    the metric definition files, the exposure mappings, the analysis day and the version.
    """
    digest = hashlib.sha256()
    lake = data.workspace.lake_dir
    files = sorted(lake.rglob("*.parquet")) if lake.exists() else []
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(lake)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    definitions: list[Path] = []
    for folder in (data.workspace.metrics_dir, data.workspace.experiments_dir):
        if folder.is_dir():
            definitions += sorted(p for p in folder.rglob("*") if p.is_file())
    for path in definitions:
        digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\n")
    digest.update(
        json.dumps(
            {
                "version": STORE_VERSION,
                "tripwire": _version(),
                "spec": loaded.spec.name,
                "spec_hash": spec_hash,
                "at": at.isoformat(),
                "exposure_mappings": data.workspace.setting("exposure_mappings"),
            },
            sort_keys=True,
            default=str,
        ).encode()
    )
    return digest.hexdigest()


def _version() -> str:
    try:
        return metadata.version("tripwire")
    except metadata.PackageNotFoundError:
        return ""


def compute_scorecard(
    data: DashboardData, loaded: LoadedSpec, spec_hash: str | None, at: date
) -> tuple[dict[str, Any], ExperimentAnalysis | None]:
    """The planner's numbers and (``spec_hash`` set: the spec is locked) the analysis of
    every look up to ``at``, incremental when the spec's measures merge across days."""
    plan: dict[str, Any]
    catalog = data.metrics.catalog
    with data._lock:
        backend = data.metrics.backend
        try:
            p = plan_experiment(data.workspace, loaded, catalog=catalog, backend=backend)
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
        if spec_hash is None:
            return plan, None
        sources = exposure_sources(data.workspace.setting("exposure_mappings"))
        spec, metrics = loaded.spec, catalog.metrics
        if getattr(backend, "name", "") == "duckdb":
            try:
                state = IncrementalStats(
                    data.workspace.data_dir,
                    data.workspace.lake_dir,
                    incremental_spec(spec, metrics, sources),
                )
            except UnitStatsError:  # a distinct measure: only the full scan is exact
                state = None
            if state is not None:
                return plan, analyze_incremental(state, spec, metrics, at=at, spec_hash=spec_hash)
        analysis = analyze(
            events_table(backend), spec, metrics, at=at, spec_hash=spec_hash, sources=sources
        )
    return plan, analysis


def warm_scorecards(data: DashboardData) -> None:
    """Compute every locked experiment's scorecard (a background warm-up step)."""
    rows, _ = experiment_rows(data)
    for row in rows:
        if row.status != "draft":
            scorecard(data, row.name)


def store_scorecards(workspace: Workspace) -> list[str]:
    """Compute and store every locked experiment's scorecard (plan and analysis) for the
    dashboard, e.g. at the end of a pipeline that analysed the experiments, so that the
    first page view after it reads them back; returns the experiments stored."""
    data = DashboardData(workspace)
    try:
        rows, _ = experiment_rows(data)
        names = [row.name for row in rows if row.status != "draft"]
        for name in names:
            _scorecard(data, name)
        return names
    finally:
        data.close()


def registry_hash(data: DashboardData, name: str) -> str | None:
    with open_registry(data.workspace) as registry:
        return registry.effective_hash(name)
