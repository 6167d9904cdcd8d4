"""CLI commands of the monitor area: ``tripwire eval detectors``/``make-series``, ``tripwire
monitor run``, ``tripwire alerts list|ack|resolve|silence``, ``tripwire change add`` and
``tripwire changes``."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tripwire.cli.common import WorkspaceOption, console, err_console, open_workspace
from tripwire.monitor.tables import alerts_table

eval_app = typer.Typer(
    help="Score detectors on labelled series (NAB / Yahoo S5 style).", no_args_is_help=True
)


def _fmt_delay(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds / 60:.1f} min"


@eval_app.command("detectors")
def eval_detectors(
    series: Annotated[
        Path,
        typer.Option(
            "--series", help="Directory of CSVs (timestamp,value[,numerator,denominator])."
        ),
    ],
    detector: Annotated[
        list[str] | None,
        typer.Option("--detector", help="Detector name (repeatable); default: all."),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="Windows JSON (default: DIR/labels.json).")
    ] = None,
    false_alarms_per_day: Annotated[
        float, typer.Option(help="Calibration target per series (default one per 30 days).")
    ] = 1.0 / 30.0,
    probation: Annotated[
        float, typer.Option(help="Leading fraction of each series used to calibrate, not scored.")
    ] = 0.15,
    profile: Annotated[
        str, typer.Option(help="NAB profile: standard or reward_low_FP.")
    ] = "standard",
    per_series: Annotated[
        bool, typer.Option("--per-series", help="Also print one row per series.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the calibration bootstrap.")] = 0,
) -> None:
    """Per-window detection, delay, false alarms per day and the NAB score of each detector."""
    from tripwire.monitor.evaluation import (
        DETECTORS,
        NAB_LOW_FP,
        NAB_STANDARD,
        evaluate,
        load_series_dir,
    )

    names = detector or sorted(DETECTORS)
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        err_console.print(
            f"[red]error:[/red] unknown detector {unknown[0]!r}; choose from {sorted(DETECTORS)}"
        )
        raise typer.Exit(2)
    profiles = {"standard": NAB_STANDARD, "reward_low_FP": NAB_LOW_FP}
    if profile not in profiles:
        err_console.print(
            f"[red]error:[/red] unknown profile {profile!r}; choose from {sorted(profiles)}"
        )
        raise typer.Exit(2)
    try:
        loaded = load_series_dir(series, labels)
        reports = [
            evaluate(
                loaded,
                name,
                profile=profiles[profile],
                probation_fraction=probation,
                false_alarms_per_day=false_alarms_per_day,
                seed=seed,
            )
            for name in names
        ]
    except ValueError as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error

    if as_json:
        out = [
            {
                "detector": r.detector,
                "profile": r.profile.name,
                "nab_score": r.nab_score,
                "windows": r.windows,
                "detected": r.detected,
                "median_delay_seconds": r.median_delay_seconds,
                "false_alarms_per_day": r.false_alarms_per_day,
                "series": [
                    {
                        "name": s.name,
                        "windows": [
                            {
                                "start": w.start,
                                "end": w.end,
                                "detected": w.detected,
                                "delay_seconds": w.delay_seconds,
                            }
                            for w in s.windows
                        ],
                        "false_alarms": s.false_alarms,
                        "false_alarms_per_day": s.false_alarms_per_day,
                        "nab_raw": s.nab_raw,
                        "alarms": list(s.alarm_timestamps),
                    }
                    for s in r.series
                ],
            }
            for r in reports
        ]
        console.print_json(json.dumps(out))
        return

    table = Table(title=f"Detectors on {len(loaded)} series ({profile} NAB profile)")
    for col in ("detector", "NAB score", "windows detected", "median delay", "false alarms / day"):
        table.add_column(col, justify="right" if col != "detector" else "left")
    for r in reports:
        table.add_row(
            r.detector,
            f"{r.nab_score:.1f}",
            f"{r.detected}/{r.windows}",
            _fmt_delay(r.median_delay_seconds),
            f"{r.false_alarms_per_day:.3f}",
        )
    console.print(table)
    if per_series:
        for r in reports:
            detail = Table(title=f"{r.detector}: per series")
            for col in ("series", "windows detected", "delays", "false alarms", "days"):
                detail.add_column(col)
            for s in r.series:
                detail.add_row(
                    s.name,
                    f"{sum(w.detected for w in s.windows)}/{len(s.windows)}",
                    ", ".join(_fmt_delay(w.delay_seconds) for w in s.windows) or "—",
                    str(s.false_alarms),
                    f"{s.days:.1f}",
                )
            console.print(detail)


@eval_app.command("make-series")
def make_series(
    out: Annotated[
        Path, typer.Option("--out", help="Directory to write CSVs and labels.json into.")
    ],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    n_series: Annotated[int, typer.Option("--n-series", help="How many series.")] = 7,
    days: Annotated[float, typer.Option(help="Days of data per series.")] = 14.0,
    step_seconds: Annotated[int, typer.Option(help="Sampling interval in seconds.")] = 60,
) -> None:
    """Write synthetic labelled series of varied shapes (see generate_labelled_series)."""
    from tripwire.monitor.evaluation import (
        GeneratorSettings,
        generate_labelled_series,
        write_series_dir,
    )

    if n_series < 1 or days <= 0 or step_seconds <= 0:
        err_console.print(
            "[red]error:[/red] --n-series, --days and --step-seconds must be positive"
        )
        raise typer.Exit(2)
    series = generate_labelled_series(
        seed, n_series, GeneratorSettings(days=days, step_seconds=step_seconds)
    )
    write_series_dir(out, series)
    console.print(f"wrote {len(series)} series to {out}")


# --------------------------------------------------------------------------- monitors, alerts, changes

monitor_app = typer.Typer(
    help="Run monitors over the lake (backfill / replay).", no_args_is_help=True
)
alerts_app = typer.Typer(
    help="List and act on alerts: ack, resolve, silence.", no_args_is_help=True
)
change_app = typer.Typer(help="Record changes in the change log.", no_args_is_help=True)


def _when(text: str) -> datetime:
    """``24h`` (ago), or an ISO time."""
    from tripwire.metrics.definitions import parse_duration

    try:
        return datetime.now(UTC) - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise typer.BadParameter(
            f"expected a duration like 24h or an ISO time, got {text!r}"
        ) from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@monitor_app.command("run")
def monitor_run(
    since: Annotated[
        str,
        typer.Option(
            help="Replay from this long ago (e.g. 14d) or an ISO time; relative to the lake's last event."
        ),
    ] = "14d",
    until: Annotated[
        str | None, typer.Option(help="End (ISO time); default the lake's last event.")
    ] = None,
    monitor: Annotated[
        list[str] | None, typer.Option("--monitor", "-m", help="Only these monitors (repeatable).")
    ] = None,
    record: Annotated[
        bool,
        typer.Option(
            "--record/--dry-run", help="Record the alerts in the state database (no notifications)."
        ),
    ] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Backfill: the alerts the monitors would have fired over the range."""
    import sqlite3

    from tripwire.metrics.definitions import parse_duration
    from tripwire.monitor.alerts import AlertStore
    from tripwire.monitor.loader import MonitorDefinitionError
    from tripwire.monitor.runner import apply_events, lake_range, load_definitions, run_backfill
    from tripwire.store.engine import connect

    ws = open_workspace(workspace)
    try:
        monitors, catalog = load_definitions(ws)
    except (MonitorDefinitionError, ValueError) as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    chosen = [m for m in monitors if not monitor or m.name in monitor]
    if monitor and len(chosen) != len(set(monitor)):
        missing = sorted(set(monitor) - {m.name for m in chosen})
        err_console.print(f"[red]error:[/red] unknown monitor(s): {', '.join(missing)}")
        raise typer.Exit(2)
    if not chosen:
        err_console.print("[red]error:[/red] no monitors in monitors/*.yaml")
        raise typer.Exit(2)
    backend = connect(ws)
    span = lake_range(backend)
    if span is None:
        err_console.print("[red]error:[/red] the lake is empty")
        raise typer.Exit(2)
    end = _when(until) if until else span[1]
    try:
        start = max(span[0], end - parse_duration(since))
    except ValueError:
        start = _when(since)
    try:
        result = run_backfill(backend, chosen, catalog, start=start, end=end)
    except ValueError as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    target = (
        AlertStore.for_workspace(ws)
        if record
        else AlertStore(sqlite3.connect(":memory:", isolation_level=None))
    )
    with target as store:
        store.changes.sync_lake(backend, start=start - timedelta(hours=3), end=end)
        applied = apply_events(store, result.events)
        ids = sorted({i for _, i in applied if i is not None})
        alerts = [store.get(i) for i in ids]
    console.print(
        alerts_table(
            alerts,
            f"alerts that would have fired {start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} UTC",
        )
    )
    for ev in result.evaluators:
        for note in ev.notes:
            console.print(f"[yellow]{ev.monitor.name}:[/yellow] {note}")
    console.print(
        f"{len(alerts)} alert(s) from {len(result.evaluators)} monitor(s)"
        + (" recorded" if record else " (dry run: not recorded)")
    )


@alerts_app.command("list")
def alerts_list(
    status: Annotated[
        str, typer.Option(help="open, firing, acknowledged, resolved or all.")
    ] = "open",
    severity: Annotated[str | None, typer.Option(help="P1..P4")] = None,
    monitor: Annotated[str | None, typer.Option(help="Only this monitor.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """List alerts (newest first)."""
    from tripwire.monitor.alerts import AlertError, AlertStore

    ws = open_workspace(workspace)
    with AlertStore.for_workspace(ws) as store:
        try:
            alerts = store.query(
                status=None if status == "all" else status, severity=severity, monitor=monitor
            )
        except AlertError as error:
            err_console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(2) from error
    if as_json:
        console.print_json(json.dumps([a.to_json() for a in alerts]))
        return
    console.print(alerts_table(alerts, f"{status} alerts"))


def _act(action: str, alert_id: int, by: str, note: str, workspace: Path | None) -> None:
    from tripwire.monitor.alerts import AlertError, AlertStore

    ws = open_workspace(workspace)
    with AlertStore.for_workspace(ws) as store:
        try:
            alert = (
                store.acknowledge(alert_id, by=by, note=note)
                if action == "ack"
                else store.resolve(alert_id, by=by, note=note)
            )
        except AlertError as error:
            err_console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(1) from error
    console.print(
        f"alert {alert.id} is now [bold]{alert.status}[/bold] ({alert.monitor} / {alert.rule}, {alert.segment_text})"
    )


@alerts_app.command("ack")
def alerts_ack(
    alert_id: Annotated[int, typer.Argument(help="Alert id.")],
    by: Annotated[str, typer.Option(help="Who acknowledges.")] = os.environ.get("USER", "cli"),
    note: Annotated[str, typer.Option(help="A note.")] = "",
    workspace: WorkspaceOption = None,
) -> None:
    """Acknowledge a firing alert."""
    _act("ack", alert_id, by, note, workspace)


@alerts_app.command("resolve")
def alerts_resolve(
    alert_id: Annotated[int, typer.Argument(help="Alert id.")],
    by: Annotated[str, typer.Option(help="Who resolves.")] = os.environ.get("USER", "cli"),
    note: Annotated[str, typer.Option(help="A note (e.g. 'noise' or the fix).")] = "",
    workspace: WorkspaceOption = None,
) -> None:
    """Resolve an alert."""
    _act("resolve", alert_id, by, note, workspace)


@alerts_app.command("silence")
def alerts_silence(
    duration: Annotated[str, typer.Option("--for", help="How long (e.g. 2h).")] = "1h",
    monitor: Annotated[str | None, typer.Option(help="Monitor to silence.")] = None,
    rule: Annotated[str | None, typer.Option(help="Rule to silence.")] = None,
    segment: Annotated[
        list[str] | None, typer.Option("--segment", help="DIMENSION=VALUE (repeatable).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why.")] = "",
    by: Annotated[str, typer.Option(help="Who.")] = os.environ.get("USER", "cli"),
    workspace: WorkspaceOption = None,
) -> None:
    """Silence matching alerts until an expiry (they are recorded, not notified)."""
    from tripwire.metrics.definitions import parse_duration
    from tripwire.monitor.alerts import AlertError, AlertStore
    from tripwire.monitor.changes import ChangeError, parse_scope

    ws = open_workspace(workspace)
    try:
        until = datetime.now(UTC) + parse_duration(duration)
        seg = {k: str(v) for k, v in parse_scope(segment or []).items()}
    except (ValueError, ChangeError) as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    with AlertStore.for_workspace(ws) as store:
        try:
            silence = store.silence(
                until=until, monitor=monitor, rule=rule, segment=seg, by=by, reason=reason
            )
        except AlertError as error:
            err_console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(2) from error
    console.print(f"silence {silence.id} until {silence.until:%Y-%m-%d %H:%M} UTC")


@change_app.command("add")
def change_add(
    kind: Annotated[str, typer.Option(help="deploy, flag, model, config, prompt, ui or data.")],
    service: Annotated[str, typer.Option(help="Service, flag or model name.")],
    version: Annotated[str, typer.Option(help="Version or state.")] = "",
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="DIMENSION=VALUE[|VALUE] (repeatable); none = global."),
    ] = None,
    author: Annotated[str, typer.Option(help="Who made it.")] = os.environ.get("USER", ""),
    description: Annotated[str, typer.Option(help="What changed.")] = "",
    rollback_of: Annotated[str | None, typer.Option(help="Version this rolls back.")] = None,
    at: Annotated[str | None, typer.Option(help="When (ISO time); default now.")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Record a change: ``tripwire change add --kind deploy --service payments-token --version 2.3.1 --scope locale=en-GB``."""
    from tripwire.monitor.changes import Change, ChangeError, ChangeLog, parse_scope

    ws = open_workspace(workspace)
    try:
        change = Change(
            at=_when(at) if at else datetime.now(UTC),
            kind=kind,
            service=service,
            version=version,
            scope=parse_scope(scope or []),
            author=author,
            description=description,
            rollback_of=rollback_of,
            origin="cli",
        )
    except ChangeError as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    with ChangeLog.for_workspace(ws) as log:
        log.record(change)
    console.print(
        f"recorded {change.id}: {change.kind} {change.service} {change.version} ({change.scope_text()})"
    )


def changes_command(
    since: Annotated[str, typer.Option(help="How far back (e.g. 24h) or an ISO time.")] = "24h",
    service: Annotated[str | None, typer.Option(help="Only this service.")] = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
    sync: Annotated[
        bool, typer.Option("--sync/--no-sync", help="First import $change events from the lake.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """List the change log (``$change`` events, the API and the CLI), oldest first."""
    from tripwire.monitor.changes import ChangeLog

    ws = open_workspace(workspace)
    start = _when(since)
    with ChangeLog.for_workspace(ws) as log:
        if sync and ws.lake_dir.exists():
            from tripwire.store.engine import connect

            log.sync_lake(connect(ws), start=start)
        changes = log.query(since=start, service=service, kind=kind)
    if as_json:
        console.print_json(json.dumps([c.to_json() for c in changes]))
        return
    table = Table(title=f"changes since {start:%Y-%m-%d %H:%M} UTC")
    for col in ("at", "kind", "service", "version", "scope", "author", "description"):
        table.add_column(col)
    for c in changes:
        table.add_row(
            c.at.strftime("%Y-%m-%d %H:%M"),
            c.kind,
            c.service,
            c.version + (f" (rollback of {c.rollback_of})" if c.rollback_of else ""),
            c.scope_text(),
            c.author,
            c.description,
        )
    console.print(table)


def register_monitor_commands(app: typer.Typer) -> None:
    """``monitor run``, ``alerts list|ack|resolve|silence``, ``change add`` and ``changes``."""
    app.add_typer(monitor_app, name="monitor")
    app.add_typer(alerts_app, name="alerts")
    app.add_typer(change_app, name="change")
    app.command("changes")(changes_command)


def register(app: typer.Typer) -> None:
    """Add the monitor area's commands (``eval``, ``monitor``, ``alerts``, ``change``, ``changes``)."""
    app.add_typer(eval_app, name="eval")
    register_monitor_commands(app)
