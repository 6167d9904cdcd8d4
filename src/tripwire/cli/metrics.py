"""`tripwire metrics list|show|query|validate`: the metrics layer from the command line."""

from __future__ import annotations

import io
import json
import sys
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import typer
import yaml
from rich.syntax import Syntax
from rich.table import Table

from tripwire.cli.common import WorkspaceOption, console, err_console, open_workspace
from tripwire.metrics.loader import MetricDefinitionError, load_metrics
from tripwire.metrics.query import Metrics
from tripwire.metrics.timeseries import DEFAULT_TOP_N
from tripwire.store.engine import connect

metrics_app = typer.Typer(
    help="Metric definitions: list, show, query, validate.", no_args_is_help=True
)


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


class GrainOption(StrEnum):
    minute = "minute"
    hour = "hour"
    day = "day"
    none = "none"


def register(app: typer.Typer) -> None:
    """Add the ``metrics`` command group."""
    app.add_typer(metrics_app, name="metrics")


def _fail_definitions(error: MetricDefinitionError) -> typer.Exit:
    err_console.print(f"[red]{len(error.errors)} error(s) in metric definitions:[/red]")
    for problem in error.errors:
        err_console.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _open(workspace: Path | None) -> Metrics:
    ws = open_workspace(workspace)
    try:
        return Metrics.open(ws)
    except MetricDefinitionError as error:
        raise _fail_definitions(error) from error


def _split(values: list[str] | None) -> list[str]:
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


@metrics_app.command("list")
def list_metrics(workspace: WorkspaceOption = None) -> None:
    """List every metric with its type, description and where it is defined."""
    metrics = _open(workspace)
    table = Table(title=f"{len(metrics.catalog)} metrics", show_lines=False)
    table.add_column("name", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("description", overflow="fold", ratio=1)
    table.add_column("defined at", no_wrap=True)
    for metric in metrics.list():
        source = metrics.catalog.sources.get(metric.name)
        where = f"{source.file}:{source.line}" if source else ""
        table.add_row(metric.name, metric.type, metric.description, where)
    console.print(table)


@metrics_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Metric name.")],
    by: Annotated[
        list[str] | None, typer.Option("--by", help="Dimensions (comma-separated).")
    ] = None,
    grain: Annotated[
        GrainOption, typer.Option(help="Time grain of the compiled query.")
    ] = GrainOption.hour,
    workspace: WorkspaceOption = None,
) -> None:
    """Show a metric's definition and the SQL it compiles to."""
    metrics = _open(workspace)
    try:
        metric = metrics.get(name)
    except KeyError as error:
        err_console.print(f"[red]error:[/red] {error.args[0]}")
        raise typer.Exit(2) from error
    source = metrics.catalog.sources.get(name)
    console.print(
        f"[bold]{metric.name}[/bold] ({metric.type})"
        + (f" — {source.file}:{source.line}" if source else "")
    )
    definition = metric.model_dump(mode="json", exclude_defaults=True)
    definition = {"name": metric.name, "type": metric.type, **definition}
    console.print(Syntax(yaml.safe_dump(definition, sort_keys=False), "yaml"))
    sql = metrics.sql(name, by=_split(by), grain=None if grain is GrainOption.none else grain.value)
    console.print("[bold]compiled SQL[/bold] " + f"({metrics.backend.name})")
    console.print(Syntax(sql, "sql", word_wrap=True))


@metrics_app.command("query")
def query(
    names: Annotated[str, typer.Argument(help="Metric name (several: comma-separated, one scan).")],
    by: Annotated[
        list[str] | None, typer.Option("--by", help="Dimensions, e.g. locale,device.")
    ] = None,
    grain: Annotated[GrainOption, typer.Option(help="Time grain.")] = GrainOption.hour,
    since: Annotated[
        str | None, typer.Option(help="Start: ISO date/time or a duration ago (7d, 24h).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="End (exclusive): ISO date/time or duration ago.")
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            "--where", help="Filter FIELD=VALUE (!= > >= < <=; a|b for any of). Repeatable."
        ),
    ] = None,
    top: Annotated[
        int,
        typer.Option(
            "--top", help="Keep the top N values per dimension; others become (other). 0: all."
        ),
    ] = DEFAULT_TOP_N,
    values: Annotated[
        list[str] | None,
        typer.Option("--values", help="Explicit values of a dimension: DIM=a|b|c. Repeatable."),
    ] = None,
    relative_to: Annotated[
        str,
        typer.Option(
            help="Durations in --since/--until count back from 'now' or from the end of the 'data'."
        ),
    ] = "now",
    fill: Annotated[
        bool, typer.Option(help="Add empty buckets of the range with zero counts.")
    ] = False,
    approximate: Annotated[
        bool,
        typer.Option(
            help="Estimate distinct counts (HyperLogLog) and quantiles (t-digest) instead of "
            "computing them exactly: for very large lakes; counts and sums stay exact."
        ),
    ] = False,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="Output format.")
    ] = OutputFormat.table,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to a file (required for parquet).")
    ] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Compute metrics by time grain × dimensions over a time range."""
    metrics = _open(workspace)
    chosen = _split([names])
    for name in chosen:
        if name not in metrics.catalog:
            err_console.print(
                f"[red]error:[/red] unknown metric {name!r} (see `tripwire metrics list`)"
            )
            raise typer.Exit(2)
    if relative_to not in ("now", "data"):
        err_console.print("[red]error:[/red] --relative-to must be 'now' or 'data'")
        raise typer.Exit(2)
    if output_format is OutputFormat.parquet and output is None:
        err_console.print("[red]error:[/red] --format parquet needs --output FILE")
        raise typer.Exit(2)
    try:
        explicit = dict(_parse_values(v) for v in values or [])
        results = metrics.series(
            chosen,
            by=_split(by),
            grain=None if grain is GrainOption.none else grain.value,
            since=since,
            until=until,
            where=where or [],
            top_n=top or None,
            values=explicit or None,
            fill=fill,
            relative_to=relative_to,  # type: ignore[arg-type]
            approximate=approximate,
        )
    except ValueError as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    for name, result in results.items():
        table = result.table
        if len(results) > 1:
            table = table.append_column("metric", pa.array([name] * table.num_rows, pa.string()))
        if output_format is OutputFormat.table:
            if result.is_empty:
                span = f"{_fmt(result.start) or 'the beginning'} to {_fmt(result.end) or 'now'}"
                console.print(f"[yellow]{name}: no data[/yellow] from {span}")
                continue
            console.print(_rich_table(name, table))
        else:
            _write(table, output_format, output if len(results) == 1 else _suffixed(output, name))


def _parse_values(text: str) -> tuple[str, list[str]]:
    dim, sep, rest = text.partition("=")
    if not sep or not rest:
        raise ValueError(f"--values {text!r}: expected DIM=a|b|c")
    return dim.strip(), [v.strip() for v in rest.split("|") if v.strip()]


def _suffixed(path: Path | None, name: str) -> Path | None:
    return None if path is None else path.with_name(f"{path.stem}.{name}{path.suffix}")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1 else f"{value:,.2f}".rstrip("0").rstrip(".")
    return str(value)


def _rich_table(name: str, table: pa.Table) -> Table:
    view = Table(title=name)
    for column in table.column_names:
        numeric = pa.types.is_floating(table[column].type) or pa.types.is_integer(
            table[column].type
        )
        view.add_column(column, justify="right" if numeric else "left")
    for row in table.to_pylist():
        view.add_row(*(_fmt(row[c]) for c in table.column_names))
    return view


def _write(table: pa.Table, fmt: OutputFormat, output: Path | None) -> None:
    if fmt is OutputFormat.parquet:
        assert output is not None
        pq.write_table(table, output)
        return
    if fmt is OutputFormat.csv:
        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer)
        text = buffer.getvalue().decode()
    else:
        rows = [
            {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
            for row in table.to_pylist()
        ]
        text = json.dumps(rows, indent=1) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)


@metrics_app.command("validate")
def validate(workspace: WorkspaceOption = None) -> None:
    """Check every definition (YAML, fields, events and properties against the lake, data)."""
    ws = open_workspace(workspace)
    try:
        catalog = load_metrics(ws, backend=connect(ws))
    except MetricDefinitionError as error:
        raise _fail_definitions(error) from error
    console.print(f"[green]{len(catalog)} metric(s) valid[/green]")
