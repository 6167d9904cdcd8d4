"""CLI commands of the rca area: ``tripwire rca`` and ``tripwire incidents list|show|stats|resolve``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from tripwire.cli.common import WorkspaceOption, console, err_console, open_workspace
from tripwire.rca.data import InvestigationError


def _time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise typer.BadParameter(f"{text!r} is not an ISO time (e.g. 2026-11-07T19:30Z)") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def register(app: typer.Typer) -> None:
    """Add ``tripwire rca`` and the ``tripwire incidents`` group."""

    @app.command("rca")
    def rca(
        metric: Annotated[
            str | None, typer.Argument(help="Metric that moved (omit with --alert).")
        ] = None,
        at: Annotated[
            str | None, typer.Option("--at", help="When it looked wrong (ISO, UTC).")
        ] = None,
        alert: Annotated[
            int | None, typer.Option("--alert", help="Investigate a stored alert.")
        ] = None,
        workspace: WorkspaceOption = None,
    ) -> None:
        """Investigate a metric change: integrity, where, which step, which change, impact, actions."""
        from tripwire.rca.incidents import record_investigation
        from tripwire.rca.investigation import investigate, investigate_alert

        ws = open_workspace(workspace)
        try:
            if alert is not None:
                inv = investigate_alert(ws, alert)
            elif metric and at:
                inv = investigate(ws, metric, _time(at))
            else:
                raise typer.BadParameter("give METRIC --at TIME, or --alert ID")
        except (InvestigationError, KeyError, ValueError) as error:  # definitions, times, ids
            err_console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(1) from error
        record, files = record_investigation(ws, inv)
        console.print(f"[bold]{inv.id}[/bold] · {inv.summary()}")
        console.print(f"report: {files.markdown}  ·  {files.html}  ({inv.seconds:.1f} s)")

    incidents = typer.Typer(help="Incidents recorded by root-cause analysis.", no_args_is_help=True)
    app.add_typer(incidents, name="incidents")

    @incidents.command("list")
    def list_(
        status: Annotated[str | None, typer.Option(help="open | recovered | false_alarm")] = None,
        workspace: WorkspaceOption = None,
    ) -> None:
        """Incidents, newest onset first."""
        from tripwire.rca.incidents import IncidentStore

        ws = open_workspace(workspace)
        with IncidentStore.for_workspace(ws) as store:
            records = store.list(status=status)
        table = Table(title=f"{len(records)} incident(s)")
        for column in ("id", "metric", "onset", "category", "integrity", "segments", "status"):
            table.add_column(column, no_wrap=column in ("id", "onset"))
        for r in records:
            segments = (
                "; ".join(" × ".join(f"{k}={v}" for k, v in s.items()) for s in r.segments)
                or "(global)"
            )
            table.add_row(
                r.id,
                r.metric,
                f"{r.onset:%Y-%m-%d %H:%M}",
                r.category,
                r.integrity,
                segments,
                r.status,
            )
        console.print(table)

    @incidents.command("show")
    def show(
        incident: Annotated[str, typer.Argument(help="Incident id.")],
        workspace: WorkspaceOption = None,
    ) -> None:
        """The incident's summary, report paths and recovery (re-checked against the change log)."""
        from tripwire.rca.data import data_bounds
        from tripwire.rca.incidents import IncidentStore
        from tripwire.rca.investigation import load_changes, metric_catalog
        from tripwire.rca.recovery import track_recovery
        from tripwire.store.engine import connect

        ws = open_workspace(workspace)
        with IncidentStore.for_workspace(ws) as store:
            try:
                record = store.get(incident)
            except KeyError as error:
                err_console.print(f"[red]error:[/red] {error.args[0]}")
                raise typer.Exit(1) from error
            backend = connect(ws)
            end = data_bounds(backend)[1]
            changes = load_changes(ws, backend, record.onset, end)
            result = track_recovery(
                backend, metric_catalog(ws)[record.metric], record, changes, end
            )
            if result.recovered and record.status == "open":
                record = store.set_status(
                    record.id,
                    "recovered",
                    at=datetime.fromisoformat(str(result.mitigation["at"]).replace("Z", "+00:00"))
                    if result.mitigation
                    else None,
                    evidence={"statement": result.statement, "did": result.did},
                )
        console.print(
            f"[bold]{record.id}[/bold] {record.metric} · onset {record.onset:%Y-%m-%d %H:%M} UTC · {record.category} · status {record.status}"
        )
        console.print(record.result.get("problem", {}).get("metric", ""), end="")
        console.print(f"report: {record.report_md} · {record.report_html}")
        table = Table(title="recovery")
        for column in ("segment", "baseline", "during", "after", "p", "recovered"):
            table.add_column(column)
        for s in result.segments:
            table.add_row(
                s.segment,
                f"{s.baseline:.3g}",
                f"{s.during:.3g}",
                f"{s.after:.3g}",
                f"{s.p_value:.2g}",
                "yes" if s.recovered else "no",
            )
        console.print(table)
        console.print(result.statement)
        if result.did:
            console.print(f"difference-in-differences: {result.did}")

    @incidents.command("resolve")
    def resolve(
        incident: Annotated[str, typer.Argument(help="Incident id.")],
        noise: Annotated[bool, typer.Option("--noise", help="It was a false alarm.")] = False,
        note: Annotated[str, typer.Option(help="Why.")] = "",
        workspace: WorkspaceOption = None,
    ) -> None:
        """Mark an incident recovered, or a false alarm (--noise)."""
        from tripwire.rca.incidents import IncidentStore

        ws = open_workspace(workspace)
        with IncidentStore.for_workspace(ws) as store:
            record = store.set_status(
                incident,
                "false_alarm" if noise else "recovered",
                at=datetime.now(UTC),
                note=note or None,
            )
        console.print(f"{record.id}: {record.status}")

    @incidents.command("stats")
    def stats(workspace: WorkspaceOption = None) -> None:
        """Time to detect, localize and recover by category; false-alarm rate; repeats."""
        from tripwire.rca.history import incident_stats
        from tripwire.rca.incidents import IncidentStore

        ws = open_workspace(workspace)
        with IncidentStore.for_workspace(ws) as store:
            records = store.list()
        alerts: list[object] = []
        try:
            from tripwire.monitor.alerts import AlertStore

            with AlertStore.for_workspace(ws) as alert_store:
                alerts = list(alert_store.query())
        except Exception:  # the alert store is optional for these figures
            alerts = []
        result = incident_stats(records, alerts)
        table = Table(title="incident readiness (medians, minutes)")
        for column in ("category", "incidents", "to detect", "to localize", "to recover"):
            table.add_column(column)
        fmt = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
        for c in result.categories:
            table.add_row(
                c.category,
                str(c.incidents),
                fmt(c.median_minutes_to_detect),
                fmt(c.median_minutes_to_localize),
                fmt(c.median_minutes_to_recover),
            )
        console.print(table)
        rate = "–" if result.false_alarm_rate is None else f"{result.false_alarm_rate:.0%}"
        console.print(
            f"false alarms: {result.false_alarms} of {result.alerts_considered} ({rate}); repeat incidents within a quarter: {len(result.repeats)}"
        )
