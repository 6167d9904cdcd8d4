"""CLI commands of the store area: ``sql``, ``status``, ``archive``, ``consumers list|rewind``."""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import duckdb
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import typer
from rich.table import Table

from tripwire.cli.common import WorkspaceOption, console, err_console, open_workspace
from tripwire.events.timestamps import TimestampError, parse_timestamp
from tripwire.ingest.archiver import Archiver, ArchiverBusy
from tripwire.store.buffer import ARCHIVER, Buffer, BufferError, ConsumerStatus
from tripwire.store.lake import create_events_view, events_dir
from tripwire.store.workspace import Workspace


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def run_sql(workspace: Workspace, query: str) -> pa.Table:
    """DuckDB over the lake's ``events`` view."""
    connection = duckdb.connect()
    try:
        create_events_view(connection, workspace.lake_dir)
        return connection.sql(query).to_arrow_table()
    finally:
        connection.close()


def _rich_table(table: pa.Table, *, limit: int, title: str | None = None) -> Table:
    view = Table(title=title, show_lines=False)
    for name in table.column_names:
        numeric = pa.types.is_integer(table[name].type) or pa.types.is_floating(table[name].type)
        view.add_column(name, justify="right" if numeric else "left")
    for row in table.slice(0, limit).to_pylist():
        view.add_row(*("" if value is None else str(value) for value in row.values()))
    return view


def _write_text(text: bytes, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text.decode())
        sys.stdout.flush()
    else:
        output.write_bytes(text)


def sql(
    query: Annotated[str, typer.Argument(help="DuckDB SQL; the lake is the `events` view.")],
    output_format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="Output format.")
    ] = OutputFormat.table,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Rows shown by --format table.")] = 100,
    workspace: WorkspaceOption = None,
) -> None:
    """Run SQL over the Parquet lake (DuckDB), e.g. `tripwire sql "SELECT event, count(*) FROM events GROUP BY 1"`."""
    ws = open_workspace(workspace)
    if output_format is OutputFormat.parquet and output is None:
        raise _fail("--format parquet needs --output FILE", 2)
    try:
        table = run_sql(ws, query)
    except duckdb.Error as error:
        raise _fail(f"query failed: {error}") from error
    if output_format is OutputFormat.parquet:
        assert output is not None
        pq.write_table(table, output, compression="zstd")
        err_console.print(f"wrote {table.num_rows} rows to {output}")
    elif output_format is OutputFormat.csv:
        sink = io.BytesIO()
        pacsv.write_csv(table, sink)
        _write_text(sink.getvalue(), output)
    elif output_format is OutputFormat.json:
        rows = orjson.dumps(
            table.to_pylist(), option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC, default=str
        )
        _write_text(rows + b"\n", output)
    else:
        console.print(_rich_table(table, limit=limit))
        if table.num_rows > limit:
            console.print(
                f"[dim]{table.num_rows - limit} more rows (raise --limit or use --format)[/dim]"
            )


def _lake_summary(workspace: Workspace) -> tuple[int, int, int, pa.Table]:
    root = events_dir(workspace.lake_dir)
    files = list(root.glob("date=*/event=*/*.parquet")) if root.exists() else []
    size = sum(f.stat().st_size for f in files)
    partitions = len({f.parent for f in files})
    per_day = run_sql(
        workspace,
        "SELECT CAST(timestamp AS DATE) AS date, count(*) AS events,"
        " count(DISTINCT event) AS event_names,"
        " count(DISTINCT coalesce(user_id, anonymous_id)) AS users"
        " FROM events GROUP BY 1 ORDER BY 1",
    )
    return len(files), partitions, size, per_day


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def status(workspace: WorkspaceOption = None) -> None:
    """Buffer depth, consumer lag, lake size and events per day."""
    ws = open_workspace(workspace)
    with Buffer.for_workspace(ws) as buffer:
        state = buffer.status()
    overview = Table(title="Buffer", show_header=False)
    overview.add_column("")
    overview.add_column("", justify="right")
    overview.add_row("rows buffered", f"{state.rows:,}")
    overview.add_row("offsets", f"{state.first_offset or '-'} … {state.last_offset}")
    overview.add_row("depth (not archived)", f"{state.depth:,}")
    overview.add_row("high-water mark", f"{buffer.high_water_mark:,}")
    overview.add_row("size on disk", _megabytes(state.size_bytes))
    console.print(overview)
    console.print(_consumers_table(state.consumers))
    files, partitions, size, per_day = _lake_summary(ws)
    lake = Table(title="Lake", show_header=False)
    lake.add_column("")
    lake.add_column("", justify="right")
    lake.add_row("files", f"{files:,}")
    lake.add_row("partitions (date × event)", f"{partitions:,}")
    lake.add_row("size on disk", _megabytes(size))
    lake.add_row("events", f"{sum(per_day['events'].to_pylist()):,}")
    console.print(lake)
    console.print(_rich_table(per_day, limit=10_000, title="Events per day"))


def _consumers_table(consumers: Sequence[ConsumerStatus]) -> Table:
    view = Table(title="Consumers")
    view.add_column("consumer")
    view.add_column("committed", justify="right")
    view.add_column("lag", justify="right")
    view.add_column("required")
    view.add_column("updated")
    for c in consumers:
        view.add_row(
            c.name,
            f"{c.committed:,}",
            f"{c.lag:,}",
            "yes" if c.required else "no",
            c.updated_at.isoformat(timespec="seconds"),
        )
    return view


def archive(
    compact: Annotated[bool, typer.Option(help="Also merge small files per partition.")] = False,
    chunk_rows: Annotated[int, typer.Option(help="Rows archived per chunk.", min=1)] = 200_000,
    workspace: WorkspaceOption = None,
) -> None:
    """Archive the buffer into the Parquet lake (exactly once; safe to interrupt and re-run)."""
    ws = open_workspace(workspace)
    with Buffer.for_workspace(ws) as buffer:
        archiver = Archiver.for_workspace(ws, buffer, chunk_rows=chunk_rows)
        try:
            result = archiver.run()
            compacted = archiver.compact() if compact else None
        except ArchiverBusy as error:
            raise _fail(str(error)) from error
    rate = result.events / result.seconds if result.seconds else 0.0
    console.print(
        f"archived {result.events:,} events in {result.chunks} chunks → {result.files} files"
        f" ({result.seconds:.1f} s, {rate:,.0f} events/s); archiver at offset"
        f" {result.committed_offset:,}; pruned {result.pruned_events:,} buffer rows"
    )
    if result.recovered_files:
        console.print(f"recovered: removed {result.recovered_files} files of an interrupted run")
    if compacted is not None:
        console.print(
            f"compacted {compacted.files_merged} files into {compacted.files_written}"
            f" in {compacted.partitions} partitions"
        )


consumers_app = typer.Typer(
    help="Named buffer consumers: list them, rewind them.", no_args_is_help=True
)


@consumers_app.command("list")
def consumers_list(workspace: WorkspaceOption = None) -> None:
    """Every consumer with its committed offset and lag."""
    ws = open_workspace(workspace)
    with Buffer.for_workspace(ws) as buffer:
        console.print(_consumers_table(buffer.status().consumers))


@consumers_app.command("rewind")
def consumers_rewind(
    name: Annotated[str, typer.Argument(help="Consumer name (e.g. archiver).")],
    offset: Annotated[int | None, typer.Option(help="Read again from this offset.")] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="Read again from this received time (ISO 8601).")
    ] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Make a consumer read again from an offset or a time within retention.

    Rewinding the archiver deletes the lake files from that point and re-archives them.
    """
    if (offset is None) == (to is None):
        raise _fail("give exactly one of --offset or --to", 2)
    ws = open_workspace(workspace)
    with Buffer.for_workspace(ws) as buffer:
        try:
            at: datetime | None = parse_timestamp(to) if to is not None else None
            if name == ARCHIVER:
                target = buffer.offset_at(at) if at is not None else offset
                assert target is not None
                committed = Archiver.for_workspace(ws, buffer).rewind(target)
            else:
                committed = buffer.rewind(name, offset=offset, at=at)
        except (BufferError, TimestampError, ValueError, ArchiverBusy) as error:
            raise _fail(str(error)) from error
    console.print(f"{name} will read again from offset {committed + 1:,}")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    app.command("sql")(sql)
    app.command("status")(status)
    app.command("archive")(archive)
    app.add_typer(consumers_app, name="consumers")
