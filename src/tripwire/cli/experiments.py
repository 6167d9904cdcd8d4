"""CLI of the experiments area: ``tripwire experiment …`` and ``tripwire decisions``.

Commands are grouped by concern, each group added to the ``experiment`` sub-app by its own
function in :func:`register`:

* planning and pre-registration — ``list``, ``plan``, ``lock``, ``show``
* rollout — ``check``, ``rollout advance|resume|kill``
* analysis and readout — ``analyze``, ``report`` (:func:`register_analysis`)
* ``tripwire decisions`` — the decision log across experiments

Helpers shared by every group (:func:`load_or_exit`, :func:`ensure_current_or_exit`,
:func:`open_registry`) turn library errors into clear messages and exit codes
(1: the request failed, 2: bad usage or a missing workspace/spec).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from tripwire.cli.common import WorkspaceOption, console, err_console, open_workspace
from tripwire.experiments.analysis import (
    AnalysisError,
    ExperimentAnalysis,
    analyze,
    analyze_incremental,
    incremental_spec,
)
from tripwire.experiments.decision import (
    ExperimentDecision,
    decide_analysis,
    override,
    record,
)
from tripwire.experiments.planner import ExperimentPlan, PlanningError, plan_experiment
from tripwire.experiments.registry import (
    AlreadyLocked,
    NotLocked,
    Registry,
    RegistryError,
    SpecChangedAfterLock,
    default_author,
)
from tripwire.experiments.rollout import (
    CheckResult,
    RolloutError,
    advance,
    check,
    current_rollout,
    kill,
    resume,
)
from tripwire.experiments.spec import (
    ExperimentSpecError,
    LoadedSpec,
    SpecNotFound,
    load_spec,
    load_specs,
)
from tripwire.metrics.definitions import parse_duration
from tripwire.metrics.exposures import ExposureConfigError, exposure_sources
from tripwire.metrics.incremental import IncrementalStats
from tripwire.metrics.loader import MetricCatalog, MetricDefinitionError, load_metrics
from tripwire.metrics.query import parse_time
from tripwire.metrics.unit_stats import UnitStatsError
from tripwire.report.experiment_readout import render_readout, write_readout
from tripwire.store.engine import connect, engine_name, events_table
from tripwire.store.workspace import Workspace

experiment_app = typer.Typer(
    name="experiment",
    help="Experiments: plan, pre-register (lock), roll out and guard, analyse, report.",
    no_args_is_help=True,
)
rollout_app = typer.Typer(
    name="rollout", help="Staged rollout: advance, resume, kill switch.", no_args_is_help=True
)

NameArg = Annotated[str, typer.Argument(help="Experiment name (experiments/NAME.yaml).")]
AuthorOption = Annotated[
    str | None,
    typer.Option("--author", help="Who acts (default: $TRIPWIRE_AUTHOR or the OS user)."),
]
AmendOption = Annotated[
    str | None,
    typer.Option("--amend", help="Reason for a change of the spec after it was locked (recorded)."),
]


# --------------------------------------------------------------------------- shared helpers


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` to stderr; return the Exit to raise."""
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def load_catalog_or_exit(workspace: Workspace) -> MetricCatalog:
    try:
        return load_metrics(workspace, check_lake=False)
    except MetricDefinitionError as error:
        raise fail(str(error)) from error


def load_or_exit(workspace: Workspace, name: str) -> tuple[LoadedSpec, MetricCatalog]:
    """The validated spec and the metric catalog, or every error printed and exit 1."""
    catalog = load_catalog_or_exit(workspace)
    try:
        return load_spec(workspace, name, catalog=catalog), catalog
    except SpecNotFound as error:
        raise fail(str(error), 2) from error
    except ExperimentSpecError as error:
        raise fail(str(error)) from error


def open_registry(workspace: Workspace) -> Registry:
    return Registry.open(workspace)


def ensure_current_or_exit(
    registry: Registry, loaded: LoadedSpec, amend: str | None, author: str | None
) -> str:
    """The hash to analyse under; refuses a spec changed after lock unless ``amend``."""
    try:
        hash_ = registry.ensure_current(loaded, amend=amend, author=author)
    except (NotLocked, SpecChangedAfterLock) as error:
        raise fail(str(error)) from error
    if amend:
        console.print(f"recorded amendment of {loaded.spec.name}: {amend}")
    return hash_


def _when(moment: datetime | None) -> str:
    return "—" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}%}"


def _parse_at(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as error:
        raise fail(f"--at: {error}", 2) from error


# --------------------------------------------------------------------------- planning


def print_plan(plan: ExperimentPlan, loaded: LoadedSpec) -> None:
    """The plan as Rich tables (what ``experiment plan`` prints)."""
    spec = loaded.spec
    p = plan.primary
    table = Table(title=f"plan: {plan.experiment}", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    mde = spec.primary.mde
    mde_text = _pct(mde) if spec.primary.mde_scale == "relative" else f"{mde:g} (absolute)"
    rows = [
        ("baseline window", f"{_when(plan.window_start)} → {_when(plan.window_end)}"),
        ("primary metric", f"{p.metric} ({p.kind})"),
        ("baseline", f"{p.value:.6g} per unit (sd {p.sd:.4g}, {p.units:,} units)"),
        (
            "CUPED correlation ρ",
            "not configured"
            if p.cuped_correlation is None
            else f"{p.cuped_correlation:.3f} (variance × {1 - p.cuped_correlation**2:.3f})",
        ),
        ("eligible units", f"{plan.eligible_units:,} ({plan.daily_eligible_units:,.0f}/day)"),
        ("traffic entering", _pct(plan.traffic_fraction)),
        ("MDE", f"{mde_text} at α={spec.alpha:g}, power {spec.power:.0%}, {spec.sides}-sided"),
        ("sequential inflation", f"× {plan.sequential_inflation:.3f}"),
        (
            "units per arm",
            ", ".join(f"{a}: {n:,}" for a, n in zip(spec.arm_names, plan.n_per_arm, strict=True)),
        ),
        ("runtime", f"{plan.runtime_days} days"),
    ]
    if plan.planned_days is not None:
        rows.append(("planned runtime", f"{plan.planned_days:.1f} days"))
        rows.append(
            (
                "units per arm at planned runtime",
                ", ".join(f"{n:,.0f}" for n in plan.planned_units_per_arm),
            )
        )
    if plan.mde_at_planned is not None:
        rows.append(
            (
                "MDE at planned runtime",
                _pct(plan.mde_at_planned)
                if spec.primary.mde_scale == "relative"
                else f"{plan.mde_at_planned:.4g}",
            )
        )
    if plan.sequential is not None:
        d = plan.sequential
        rows.append(
            (
                "looks (information, z boundary)",
                ", ".join(
                    f"{t:.2f}: {c:.3f}"
                    for t, c in zip(d.information_fractions, d.efficacy, strict=True)
                ),
            )
        )
    for what, value in rows:
        table.add_row(what, value)
    console.print(table)
    if plan.cohorts:
        cohorts = Table(title="cohorts: conditional MDE at the planned size")
        for column in ("cohort", "share", "baseline", "MDE", "inconclusive band", "powered"):
            cohorts.add_column(column, justify="left" if column == "cohort" else "right")
        for c in plan.cohorts:
            band = "—" if c.inconclusive_relative is None else f"±{c.inconclusive_relative:.1%}"
            cohorts.add_row(
                c.label,
                _pct(c.share),
                f"{c.baseline:.4g}",
                _pct(c.mde_relative) if c.mde_relative is not None else f"{c.mde_absolute:.4g}",
                band,
                "[red]no[/red]" if c.underpowered else "yes",
            )
        console.print(cohorts)
    for c in plan.underpowered_cohorts:
        console.print(f"[yellow]underpowered:[/yellow] {c.message()}", highlight=False)
    for note in plan.notes:
        console.print(f"[dim]note:[/dim] {note}", highlight=False)


def register_planning(app: typer.Typer) -> None:
    """``list``, ``plan``, ``lock``, ``show``."""

    @app.command("list")
    def list_command(workspace: WorkspaceOption = None) -> None:
        """Every experiment of the workspace with its status and lock."""
        ws = open_workspace(workspace)
        catalog = load_catalog_or_exit(ws)
        try:
            specs = load_specs(ws, catalog=catalog)
        except ExperimentSpecError as error:
            raise fail(str(error)) from error
        table = Table(title="experiments")
        for column in ("experiment", "status", "primary", "arms", "locked", "decision"):
            table.add_column(column)
        with open_registry(ws) as registry:
            for name, loaded in specs.items():
                lock = registry.lock_of(name)
                table.add_row(
                    name,
                    registry.status(name),
                    loaded.spec.primary.metric,
                    " / ".join(loaded.spec.arm_names),
                    _when(lock.locked_at) if lock else "—",
                    registry.final_decision(name) or "—",
                )
        console.print(table)

    @app.command("plan")
    def plan_command(
        name: NameArg,
        baseline_days: Annotated[
            int, typer.Option("--baseline-days", min=1, help="Days of history to measure on.")
        ] = 14,
        baseline_end: Annotated[
            str | None,
            typer.Option("--baseline-end", help="End of the baseline window (default: the start)."),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
        workspace: WorkspaceOption = None,
    ) -> None:
        """Size the experiment from the lake: baseline, variance, traffic, CUPED → units per
        arm, runtime, sequential inflation and each cohort's MDE."""
        ws = open_workspace(workspace)
        loaded, catalog = load_or_exit(ws, name)
        try:
            plan = plan_experiment(
                ws,
                loaded,
                catalog=catalog,
                baseline_days=baseline_days,
                baseline_end=_parse_at(baseline_end),
            )
        except PlanningError as error:
            raise fail(str(error)) from error
        if as_json:
            console.print_json(json.dumps(plan.to_dict(), default=str))
            return
        print_plan(plan, loaded)

    @app.command("lock")
    def lock_command(
        name: NameArg,
        author: AuthorOption = None,
        amend: AmendOption = None,
        workspace: WorkspaceOption = None,
    ) -> None:
        """Pre-register: store the spec's content hash, time and author."""
        ws = open_workspace(workspace)
        loaded, _ = load_or_exit(ws, name)
        with open_registry(ws) as registry:
            existing = registry.lock_of(name)
            if existing is not None and amend:
                try:
                    registry.ensure_current(loaded, amend=amend, author=author)
                except RegistryError as error:
                    raise fail(str(error)) from error
                console.print(f"recorded amendment of {name} → {loaded.hash[:12]}: {amend}")
                return
            try:
                lock = registry.lock(
                    name, loaded.hash, loaded.spec.model_dump(mode="json"), author=author
                )
            except AlreadyLocked as error:
                raise fail(str(error)) from error
        verb = "already locked" if existing is not None else "locked"
        console.print(
            f"[green]{verb}[/green] {name}: sha256 {lock.hash} "
            f"({_when(lock.locked_at)} by {lock.author})",
            highlight=False,
        )

    @app.command("show")
    def show_command(name: NameArg, workspace: WorkspaceOption = None) -> None:
        """The spec, its pre-registration (lock and amendments) and the rollout state."""
        ws = open_workspace(workspace)
        loaded, _ = load_or_exit(ws, name)
        spec = loaded.spec
        table = Table(title=f"experiment {name}", show_header=False)
        table.add_column("what")
        table.add_column("value", overflow="fold")
        if spec.hypothesis:
            table.add_row("H0", spec.hypothesis.h0)
            table.add_row("H1", spec.hypothesis.h1)
        table.add_row("unit", spec.unit)
        table.add_row("arms", ", ".join(f"{a.name} ({a.weight:g})" for a in spec.arms))
        table.add_row(
            "primary", f"{spec.primary.metric}, MDE {spec.primary.mde:g} ({spec.primary.mde_scale})"
        )
        for g in spec.guardrails:
            cohorts = spec.guardrail_cohorts(g)
            extra = f", per {', '.join(cohorts)}" if cohorts else ""
            table.add_row(
                "guardrail",
                f"{g.label}: {g.harm} no worse than {g.threshold:+g} ({g.scale}){extra}",
            )
        if spec.cohorts:
            table.add_row("cohorts", ", ".join(spec.cohorts))
        table.add_row("alpha / power", f"{spec.alpha:g} / {spec.power:g}")
        table.add_row("spec hash (now)", loaded.hash)
        with open_registry(ws) as registry:
            lock = registry.lock_of(name)
            amendments = registry.amendments(name)
            state = registry.rollout_state(name)
            table.add_row("status", registry.status(name))
            if lock is None:
                table.add_row("pre-registration", "[yellow]not locked[/yellow]")
            else:
                table.add_row("locked", f"{lock.hash} ({_when(lock.locked_at)} by {lock.author})")
                effective = registry.effective_hash(name)
                matches = effective == loaded.hash
                table.add_row(
                    "spec on disk",
                    "matches the pre-registration"
                    if matches
                    else "[red]CHANGED since lock[/red] (analysis refuses without --amend)",
                )
            decision = registry.final_decision(name)
        view = current_rollout(spec, state)
        stages = spec.rollout.stages if spec.rollout else []
        if stages:
            table.add_row(
                "rollout",
                f"stage {view.stage_index + 1}/{len(stages)} ({view.stage.label if view.stage else '—'}), "
                f"{view.status}: {view.reason}",
            )
        if decision:
            table.add_row("decision", decision)
        console.print(table)
        if amendments:
            am = Table(title="amendments")
            for column in ("#", "when", "who", "from", "to", "reason"):
                am.add_column(column)
            for i, a in enumerate(amendments, start=1):
                am.add_row(
                    str(i), _when(a.at), a.author, a.from_hash[:12], a.to_hash[:12], a.reason
                )
            console.print(am)


# --------------------------------------------------------------------------- rollout


def print_check(result: CheckResult) -> None:
    table = Table(title=f"rollout check: {result.experiment}, stage {result.stage}")
    for column in ("", "criterion", "observed", "note"):
        table.add_column(column)
    for f in result.findings:
        mark = "[red]BREACH[/red]" if f.breached else "[green]ok[/green]"
        observed = "n/a" if f.observed is None else f"{f.observed:.4g}"
        table.add_row(
            mark, f"{f.name}: {f.rule}" if f.kind == "guardrail" else f.rule, observed, f.note
        )
    console.print(table)
    units = ", ".join(f"{a}: {n:,}" for a, n in result.units_per_arm.items())
    console.print(f"units exposed: {units}; data until {_when(result.at)}", highlight=False)
    if result.status_after != result.status_before:
        console.print(
            f"[red]rollout {result.status_after}[/red]: new units get no arm until resumed "
            "(recorded in the decision log)"
        )
    elif result.breached:
        console.print(f"rollout already {result.status_before}: breach recorded")
    else:
        console.print(f"[green]{result.summary()}[/green]", highlight=False)


def register_rollout(app: typer.Typer) -> None:
    """``check`` and ``rollout advance|resume|kill``."""

    @app.command("check")
    def check_command(
        name: NameArg,
        at: Annotated[
            str | None, typer.Option("--at", help="Evaluate up to this time (default: data end).")
        ] = None,
        window: Annotated[
            str, typer.Option("--window", help="Window of live data for abort criteria.")
        ] = "24h",
        amend: AmendOption = None,
        author: AuthorOption = None,
        workspace: WorkspaceOption = None,
    ) -> None:
        """Evaluate the current stage's abort criteria and guardrails on live data; a
        breach pauses the rollout (exit code 3) and is recorded."""
        ws = open_workspace(workspace)
        loaded, catalog = load_or_exit(ws, name)
        try:
            span = parse_duration(window)
        except ValueError as error:
            raise fail(f"--window: {error}", 2) from error
        with open_registry(ws) as registry:
            if registry.lock_of(name) is not None:
                ensure_current_or_exit(registry, loaded, amend, author)
            else:
                console.print(f"[yellow]warning:[/yellow] {name} is not pre-registered (locked)")
            try:
                result = check(
                    ws, loaded, registry, catalog, connect(ws),
                    at=_parse_at(at), window=span, author=author,
                )  # fmt: skip
            except RolloutError as error:
                raise fail(str(error)) from error
        print_check(result)
        if result.breached:
            raise typer.Exit(3)

    def transition(workspace: Path | None, name: str, action: Callable[..., Any]) -> Any:
        """Run one rollout state change on a loaded spec; a refused change exits with why."""
        ws = open_workspace(workspace)
        loaded, _ = load_or_exit(ws, name)
        with open_registry(ws) as registry:
            try:
                return action(registry, loaded.spec)
            except RolloutError as error:
                raise fail(str(error)) from error

    @rollout_app.command("advance")
    def advance_command(
        name: NameArg,
        force: Annotated[
            bool, typer.Option("--force", help="Advance before the stage's min_duration.")
        ] = False,
        author: AuthorOption = None,
        workspace: WorkspaceOption = None,
    ) -> None:
        """Move the rollout to its next stage."""
        state = transition(
            workspace, name, lambda r, spec: advance(r, spec, author=author, force=force)
        )
        console.print(f"{name}: {state.reason} ({state.status})", highlight=False)

    @rollout_app.command("resume")
    def resume_command(
        name: NameArg,
        reason: Annotated[str, typer.Option("--reason", help="Why it is safe to resume.")],
        author: AuthorOption = None,
        workspace: WorkspaceOption = None,
    ) -> None:
        """Resume a paused rollout at its current stage."""
        state = transition(workspace, name, lambda r, spec: resume(r, spec, reason, author=author))
        console.print(f"{name}: {state.reason}", highlight=False)

    @rollout_app.command("kill")
    def kill_command(
        name: NameArg,
        reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")],
        author: AuthorOption = None,
        workspace: WorkspaceOption = None,
    ) -> None:
        """The kill switch: no unit gets an arm any more (assigned ones included)."""
        state = transition(workspace, name, lambda r, spec: kill(r, spec, reason, author=author))
        console.print(f"[red]{name} killed[/red]: {state.reason}", highlight=False)

    app.add_typer(rollout_app, name="rollout")


# --------------------------------------------------------------------------- analysis


IncrementalOption = Annotated[
    bool,
    typer.Option(
        "--incremental",
        help="Use per-day partial aggregates (scan only lake files not seen before).",
    ),
]


def _run_analysis(
    ws: Workspace,
    catalog: MetricCatalog,
    loaded: LoadedSpec,
    spec_hash: str,
    at: date,
    *,
    incremental: bool = False,
) -> ExperimentAnalysis:
    """The analysis of every look up to ``at``, with a Rich progress line while it runs.

    ``incremental``: from per-day partial aggregates kept under
    ``.tripwire/aggregates/<experiment>/`` (refreshed with the lake files not seen yet, then
    merged per look; same numbers as a full scan), DuckDB workspaces only.
    """
    try:
        sources = exposure_sources(ws.setting("exposure_mappings"))
    except ExposureConfigError as error:
        raise fail(str(error), 2) from error
    if incremental and engine_name(ws) != "duckdb":
        raise fail("--incremental needs the duckdb engine (per-day partials are DuckDB files)", 2)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(f"analysing {loaded.spec.name}", total=None)

        def report(text: str) -> None:
            progress.update(task, description=f"{loaded.spec.name}: {text}")

        try:
            if incremental:
                state = IncrementalStats(
                    ws.data_dir,
                    ws.lake_dir,
                    incremental_spec(loaded.spec, catalog.metrics, sources),
                )
                return analyze_incremental(
                    state, loaded.spec, catalog.metrics, at=at, spec_hash=spec_hash,
                    progress=report,
                )  # fmt: skip
            return analyze(
                events_table(connect(ws)), loaded.spec, catalog.metrics, at=at,
                spec_hash=spec_hash, sources=sources, progress=report,
            )  # fmt: skip
        except (AnalysisError, UnitStatsError) as error:
            progress.stop()
            raise fail(str(error)) from error


def _signed(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x * 100:+.2f}%"


def print_scorecard(analysis: ExperimentAnalysis, decision: ExperimentDecision) -> None:
    """The Rich scorecard of the current look: metrics, guardrails, validity, verdict."""
    look = analysis.current
    status = look.sequential_for(decision.treatment or look.treatments[0])
    kind = "final look" if status.final else f"look {status.look} of {status.n_looks}"
    table = Table(
        title=f"{analysis.spec.name} · {kind} · data until {_when(look.cutoff)} · "
        f"spec {analysis.spec_hash[:12] or 'unlocked'}"
    )
    for column in ("role", "metric", "arm", "control", "treatment", "relative", "95% CI", "p"):
        table.add_column(column, justify="left" if column in ("role", "metric", "arm") else "right")
    seen: set[tuple[str, str]] = set()
    for r in (*look.primary, *look.secondary, *look.guardrail_metrics):
        if (r.metric, r.treatment) in seen:
            continue
        seen.add((r.metric, r.treatment))
        c = r.comparison
        rel, p = float(c.relative.estimate), r.adjusted_p_value
        style = ("green" if rel > 0 else "red") if p <= analysis.spec.alpha else "default"
        table.add_row(
            r.role, r.metric + (" (CUPED)" if r.cuped else ""), r.treatment,
            f"{float(c.control.mean):.4g}", f"{float(c.treatment.mean):.4g}",
            f"[{style}]{_signed(rel)}[/{style}]",
            f"[{_signed(float(c.relative.ci_low))}, {_signed(float(c.relative.ci_high))}]",
            f"{p:.3g}",
        )  # fmt: skip
    console.print(table)
    checks = [c for family in look.guardrails for c in family.checks]
    if checks:
        guards = Table(title="guardrails (one-sided non-inferiority)")
        for column in ("check", "threshold", "effect", "bound", "p", "level", "result"):
            guards.add_column(column, justify="left" if column in ("check", "result") else "right")
        for check in checks:
            t = check.test
            fmt = _signed if t.scale == "relative" else (lambda v: f"{v:+.4g}")
            result = (
                "[red]BREACHED[/red]" if check.breached
                else "[green]pass[/green]" if check.passed else "[yellow]not shown[/yellow]"
            )  # fmt: skip
            guards.add_row(
                escape(check.name), fmt(t.threshold), fmt(t.estimate), fmt(t.bound),
                f"{t.p_value:.3g}", f"{check.level:.3g}", result,
            )  # fmt: skip
        console.print(guards)
    v = look.validity
    arms = ", ".join(f"{a} {n:,}" for a, n in v.units_per_arm.items())
    problems = "" if v.ok else "\n[magenta]" + escape("\n".join(v.problems)) + "[/magenta]"
    console.print(
        f"validity: units {arms}; SRM p = {v.srm.p_value:.3g}; units in several arms "
        f"{v.multi_arm_units:,} (excluded){problems}",
        highlight=False,
    )
    body = escape(decision.explanation)
    if decision.overridden:
        body += (
            f"\n\noverridden by {escape(decision.override_author or '')} (mechanical: "
            f"{decision.mechanical_verdict}): {escape(decision.override_reason or '')}"
        )
    colour = {"SHIP": "green", "VETO": "red", "INVALID": "magenta", "CONTINUE": "blue"}
    console.print(
        Panel(
            body,
            title=f"[bold]{decision.verdict.value}[/bold] — rule {decision.rule}",
            border_style=colour.get(decision.verdict.value, "yellow"),
        )
    )


def register_analysis(app: typer.Typer) -> None:
    """``analyze`` and ``report`` (issue 5, items 6–8)."""

    @app.command("analyze")
    def analyze_command(
        name: NameArg,
        at: Annotated[
            str | None, typer.Option("--at", help="Analyse as of this date (UTC; default today).")
        ] = None,
        amend: AmendOption = None,
        override_reason: Annotated[
            str | None,
            typer.Option("--override", help="Override the mechanical verdict, with why."),
        ] = None,
        override_to: Annotated[
            str | None,
            typer.Option("--to", help="The verdict that --override puts in force (e.g. SHIP)."),
        ] = None,
        author: AuthorOption = None,
        incremental: IncrementalOption = False,
        workspace: WorkspaceOption = None,
    ) -> None:
        """Analyse every look up to --at (validity first, primary with CUPED, secondaries,
        guardrails, cohorts, sequential status), print the scorecard and the verdict with
        its rule, and record the look and the verdict in the decision log."""
        if (override_reason is None) != (override_to is None):
            raise fail('--override "reason" and --to VERDICT go together', 2)
        ws = open_workspace(workspace)
        loaded, catalog = load_or_exit(ws, name)
        when = (_parse_at(at) or datetime.now(UTC)).date()
        with open_registry(ws) as registry:
            spec_hash = ensure_current_or_exit(registry, loaded, amend, author)
            analysis = _run_analysis(ws, catalog, loaded, spec_hash, when, incremental=incremental)
            decision = decide_analysis(analysis)
            if override_reason is not None and override_to is not None:
                try:
                    decision = override(
                        decision, override_to, override_reason, author=author or default_author()
                    )
                except ValueError as error:
                    raise fail(str(error), 2) from error
            record(registry, analysis, decision, author=author)
        print_scorecard(analysis, decision)

    @app.command("report")
    def report_command(
        name: NameArg,
        at: Annotated[
            str | None, typer.Option("--at", help="Report as of this date (UTC; default today).")
        ] = None,
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="Folder for NAME.md and NAME.html.")
        ] = None,
        incremental: IncrementalOption = False,
        workspace: WorkspaceOption = None,
    ) -> None:
        """Write the readout: Markdown and a self-contained HTML page with plots."""
        ws = open_workspace(workspace)
        loaded, catalog = load_or_exit(ws, name)
        when = (_parse_at(at) or datetime.now(UTC)).date()
        with open_registry(ws) as registry:
            lock = registry.lock_of(loaded.spec.name)
            amendments = registry.amendments(loaded.spec.name)
            analysis = _run_analysis(
                ws, catalog, loaded, loaded.hash, when, incremental=incremental
            )
            decision = decide_analysis(analysis)
            latest = registry.latest_verdict(loaded.spec.name)
            overrides = registry.overrides(loaded.spec.name)
            if overrides and (latest is None or overrides[-1].at >= latest.at):
                last = overrides[-1]
                decision = override(decision, last.to_verdict, last.reason, author=last.author)
            log = registry.decisions(loaded.spec.name)
        readout = render_readout(analysis, decision, lock=lock, amendments=amendments, log=log)
        files = write_readout(readout, output or ws.reports_dir / "experiments")
        console.print(f"{decision.verdict.value} ({decision.rule})", highlight=False)
        console.print(f"readout: {files.markdown}\n         {files.html}", highlight=False)


# --------------------------------------------------------------------------- decisions


def decisions_command(
    experiment: Annotated[
        str | None, typer.Option("--experiment", "-e", help="Only this experiment.")
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="lock, amendment, look, verdict, override, rollout, check or finished.",
        ),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="e.g. 7d, 24h or an ISO time.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Latest N entries.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    finished: Annotated[
        bool,
        typer.Option("--finished", help="The registry of finished experiments instead."),
    ] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """The decision log: every lock, amendment, look, verdict, override and rollout step."""
    ws = open_workspace(workspace)
    try:
        start = parse_time(since) if since else None
    except ValueError as error:
        raise fail(f"--since: {error}", 2) from error
    with open_registry(ws) as registry:
        if finished:
            _print_finished(registry, experiment, as_json)
            return
        entries = registry.decisions(experiment, kind=kind, since=start, limit=limit)
    if as_json:
        for d in entries:
            record: dict[str, Any] = {
                "id": d.id, "experiment": d.experiment, "kind": d.kind, "summary": d.summary,
                "at": d.at.isoformat(), "author": d.author, "details": d.details,
            }  # fmt: skip
            typer.echo(json.dumps(record, default=str))
        return
    if not entries:
        console.print("no decisions recorded yet")
        return
    table = Table(title="decision log")
    for column in ("when", "experiment", "kind", "who", "what"):
        table.add_column(column, overflow="fold")
    for d in entries:
        table.add_row(_when(d.at), d.experiment, d.kind, d.author, d.summary)
    console.print(table)


def _print_finished(registry: Registry, experiment: str | None, as_json: bool) -> None:
    entries = registry.finished(experiment)
    if as_json:
        for e in entries:
            typer.echo(json.dumps(e.__dict__, default=str))
        return
    table = Table(title="finished experiments")
    for column in ("experiment", "verdict", "metric", "online effect", "CI", "offline"):
        table.add_column(column)
    for e in entries:
        ci = (
            "—"
            if e.online_ci_low is None or e.online_ci_high is None
            else f"[{e.online_ci_low:+.2%}, {e.online_ci_high:+.2%}]"
        )
        offline = "—" if e.offline_effect is None else f"{e.offline_metric} {e.offline_effect:+.4g}"
        effect = "—" if e.online_effect is None else f"{e.online_effect:+.2%}"
        table.add_row(e.experiment, e.verdict, e.metric, effect, ci, offline)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``experiment`` (with its command groups) and ``decisions`` to the main app."""
    register_planning(experiment_app)
    register_rollout(experiment_app)
    register_analysis(experiment_app)
    app.add_typer(experiment_app, name="experiment")
    app.command("decisions")(decisions_command)


__all__ = [
    "AmendOption",
    "AuthorOption",
    "NameArg",
    "default_author",
    "ensure_current_or_exit",
    "experiment_app",
    "fail",
    "load_or_exit",
    "open_registry",
    "register",
]
