"""CLI commands of the experiments area: ``tripwire experiment ...``."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.panel import Panel
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from tripwire.cli.common import WorkspaceOption, console, err_console, open_workspace

if TYPE_CHECKING:
    from tripwire.experiments.analysis import ExperimentAnalysis
    from tripwire.experiments.decision import ExperimentDecision
    from tripwire.experiments.spec import LoadedSpec
    from tripwire.metrics.loader import MetricCatalog
    from tripwire.store.workspace import Workspace

experiment_app = typer.Typer(
    help="Experiments: plan, lock, analyse, decide and report.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add the ``experiment`` command group."""
    app.add_typer(experiment_app, name="experiment")
    register_analysis_commands(experiment_app)


# --------------------------------------------------------------------------- analyze / report


def _analysis_inputs(
    workspace: Path | None, name: str
) -> tuple[Workspace, MetricCatalog, LoadedSpec]:
    """Workspace, metric catalog and validated spec, or a clean exit with the errors."""
    from tripwire.experiments.spec import ExperimentSpecError, SpecNotFound, load_spec
    from tripwire.metrics.loader import MetricDefinitionError, load_metrics

    ws = open_workspace(workspace)
    try:
        catalog = load_metrics(ws, check_lake=False)
        loaded = load_spec(ws, name, catalog=catalog)
    except (ExperimentSpecError, MetricDefinitionError) as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    except SpecNotFound as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    return ws, catalog, loaded


def _run_analysis(
    ws: Workspace, catalog: MetricCatalog, loaded: LoadedSpec, spec_hash: str, at: date
) -> ExperimentAnalysis:
    """The analysis of every look up to ``at``, with a Rich progress line."""
    from tripwire.experiments.analysis import AnalysisError, analyze
    from tripwire.metrics.exposures import ExposureConfigError, exposure_sources
    from tripwire.store.engine import connect, events_table

    try:
        sources = exposure_sources(ws.setting("exposure_mappings"))
    except ExposureConfigError as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(f"analysing {loaded.spec.name}", total=None)
        try:
            backend = connect(ws)
            return analyze(
                events_table(backend),
                loaded.spec,
                catalog.metrics,
                at=at,
                spec_hash=spec_hash,
                sources=sources,
                progress=lambda text: progress.update(
                    task, description=f"{loaded.spec.name}: {text}"
                ),
            )
        except AnalysisError as error:
            progress.stop()
            err_console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(1) from error


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x * 100:+.2f}%"


def print_scorecard(analysis: ExperimentAnalysis, decision: ExperimentDecision) -> None:
    """The Rich scorecard of the current look: verdict, metrics, guardrails, validity."""
    look = analysis.current
    colour = {"SHIP": "green", "VETO": "red", "INVALID": "magenta", "CONTINUE": "blue"}.get(
        decision.verdict.value, "yellow"
    )
    status = look.sequential_for(decision.treatment or look.treatments[0])
    kind = "final look" if status.final else f"look {status.look} of {status.n_looks}"
    title = (
        f"{analysis.spec.name} · {kind} · data until {look.cutoff:%Y-%m-%d %H:%M} UTC · "
        f"spec {analysis.spec_hash[:12] or 'unlocked'}"
    )
    table = Table(title=title)
    for column in ("role", "metric", "arm", "control", "treatment", "relative", "95% CI", "p"):
        table.add_column(
            column, justify="right" if column not in ("role", "metric", "arm") else "left"
        )
    seen: set[tuple[str, str]] = set()
    for r in (*look.primary, *look.secondary, *look.guardrail_metrics):
        if (r.metric, r.treatment) in seen:
            continue
        seen.add((r.metric, r.treatment))
        c = r.comparison
        p = r.adjusted_p_value
        significant = math.isfinite(p) and p <= analysis.spec.alpha
        rel = float(c.relative.estimate)
        style = ("green" if rel > 0 else "red") if significant else ""
        table.add_row(
            r.role, r.metric + (" (CUPED)" if r.cuped else ""), r.treatment,
            f"{float(c.control.mean):.4g}", f"{float(c.treatment.mean):.4g}",
            f"[{style}]{_pct(rel)}[/{style}]" if style else _pct(rel),
            f"[{_pct(float(c.relative.ci_low))}, {_pct(float(c.relative.ci_high))}]",
            f"{p:.3g}",
        )  # fmt: skip
    console.print(table)
    guards = Table(title="guardrails (non-inferiority)")
    for column in ("check", "threshold", "effect", "bound", "p", "level", "result"):
        guards.add_column(column, justify="left" if column in ("check", "result") else "right")
    for family in look.guardrails:
        for check in family.checks:
            t = check.test
            fmt = _pct if t.scale == "relative" else (lambda v: f"{v:+.4g}")
            result = (
                "[red]BREACHED[/red]"
                if check.breached
                else "[green]pass[/green]"
                if check.passed
                else "[yellow]not shown[/yellow]"
            )
            guards.add_row(
                check.name, fmt(t.threshold), fmt(t.estimate), fmt(t.bound), f"{t.p_value:.3g}",
                f"{check.level:.3g}", result,
            )  # fmt: skip
    if look.guardrails and any(f.checks for f in look.guardrails):
        console.print(guards)
    v = look.validity
    arms = ", ".join(f"{a} {n:,}" for a, n in v.units_per_arm.items())
    console.print(
        f"validity: units {arms}; SRM p = {v.srm.p_value:.3g}; units in several arms "
        f"{v.multi_arm_units:,} (excluded)"
        + ("" if v.ok else "\n[magenta]" + "\n".join(v.problems) + "[/magenta]")
    )
    body = "\n".join(decision.explanation.splitlines())
    if decision.overridden:
        body += (
            f"\n\noverridden by {decision.override_author} (mechanical: "
            f"{decision.mechanical_verdict}): {decision.override_reason}"
        )
    console.print(
        Panel(body, title=f"[bold]{decision.verdict.value}[/bold] — rule {decision.rule}",
              border_style=colour)
    )  # fmt: skip


def analyze_command(
    name: Annotated[str, typer.Argument(help="Experiment name (experiments/NAME.yaml).")],
    at: Annotated[
        datetime | None,
        typer.Option("--at", formats=["%Y-%m-%d"], help="Analyse as of this date (UTC)."),
    ] = None,
    amend: Annotated[
        str | None,
        typer.Option("--amend", help="Record a change of the spec since the lock, with why."),
    ] = None,
    override_reason: Annotated[
        str | None,
        typer.Option("--override", help="Override the mechanical verdict, with why."),
    ] = None,
    override_to: Annotated[
        str | None,
        typer.Option("--to", help="The verdict an --override replaces it with (e.g. SHIP)."),
    ] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Analyse every look up to --at: validity, primary, secondaries, guardrails, cohorts,
    sequential status; print the scorecard and the verdict; record both."""
    from tripwire.experiments.decision import decide_analysis, override, record
    from tripwire.experiments.registry import RegistryError, default_author, open_registry

    if (override_reason is None) != (override_to is None):
        err_console.print('[red]error:[/red] --override "reason" and --to VERDICT go together')
        raise typer.Exit(2)
    ws, catalog, loaded = _analysis_inputs(workspace, name)
    with open_registry(ws) as registry:
        try:
            spec_hash = registry.ensure_current(loaded, amend=amend)
        except RegistryError as error:
            err_console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(1) from error
        analysis = _run_analysis(ws, catalog, loaded, spec_hash, (at or _today()).date())
        decision = decide_analysis(analysis)
        if override_reason is not None and override_to is not None:
            try:
                decision = override(decision, override_to, override_reason, author=default_author())
            except ValueError as error:
                err_console.print(f"[red]error:[/red] {error}")
                raise typer.Exit(2) from error
        record(registry, analysis, decision)
    print_scorecard(analysis, decision)


def report_command(
    name: Annotated[str, typer.Argument(help="Experiment name (experiments/NAME.yaml).")],
    at: Annotated[
        datetime | None,
        typer.Option("--at", formats=["%Y-%m-%d"], help="Report as of this date (UTC)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Folder for NAME.md and NAME.html."),
    ] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Write the readout (Markdown and self-contained HTML with plots)."""
    from tripwire.experiments.decision import decide_analysis, override
    from tripwire.experiments.registry import open_registry
    from tripwire.report.experiment_readout import render_readout, write_readout

    ws, catalog, loaded = _analysis_inputs(workspace, name)
    with open_registry(ws) as registry:
        lock = registry.lock_of(loaded.spec.name)
        amendments = registry.amendments(loaded.spec.name)
        spec_hash = loaded.hash
        analysis = _run_analysis(ws, catalog, loaded, spec_hash, (at or _today()).date())
        decision = decide_analysis(analysis)
        latest = registry.latest_verdict(loaded.spec.name)
        overrides = registry.overrides(loaded.spec.name)
        if overrides and (latest is None or overrides[-1].at >= latest.at):
            last = overrides[-1]
            decision = override(decision, last.to_verdict, last.reason, author=last.author)
        log = registry.decisions(loaded.spec.name)
    readout = render_readout(analysis, decision, lock=lock, amendments=amendments, log=log)
    files = write_readout(readout, output or ws.reports_dir / "experiments")
    console.print(f"{decision.verdict.value} ({decision.rule})")
    console.print(f"readout: {files.markdown}\n         {files.html}")


def _today() -> datetime:
    return datetime.now(UTC)


def register_analysis_commands(group: typer.Typer) -> None:
    """``experiment analyze`` and ``experiment report`` (issue 5, items 6–8)."""
    group.command("analyze")(analyze_command)
    group.command("report")(report_command)
