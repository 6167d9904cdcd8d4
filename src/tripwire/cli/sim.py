"""``tripwire sim``: feed a workspace with the synthetic world (docs/world.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tripwire.cli.common import WorkspaceOption, console, err_console, open_workspace
from tripwire.sim.config import WorldConfig
from tripwire.sim.feed import FeedResult, HttpSink, InProcessSink, SimFeedError, Sink, feed
from tripwire.store.workspace import Workspace


def parse_write_keys(values: list[str]) -> dict[str, str]:
    """``KEY`` (every source) or ``source=KEY`` items → {source or "*": key}."""
    keys: dict[str, str] = {}
    for value in values:
        source, sep, key = value.partition("=")
        if sep and source and key:
            keys[source] = key
        elif not sep:
            keys["*"] = value
        else:
            raise typer.BadParameter(f"--write-key {value!r}: expected KEY or SOURCE=KEY")
    return keys


def world_config(
    *,
    days: int,
    users: int,
    seed: int,
    start: str | None,
    end_now: bool,
    rate: float | None,
    turn_latency_sampling: float = 1.0,
) -> WorldConfig:
    """Build the world's config from CLI options (with clear errors)."""
    rate = WorldConfig.sessions_per_user_day if rate is None else rate
    try:
        if end_now:
            return WorldConfig.ending_now(
                days=days,
                users=users,
                seed=seed,
                sessions_per_user_day=rate,
                turn_latency_sampling=turn_latency_sampling,
            )
        begin = None
        if start is not None:
            parsed = datetime.fromisoformat(start)
            begin = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        return WorldConfig(
            days=days,
            users=users,
            seed=seed,
            start=begin,
            sessions_per_user_day=rate,
            turn_latency_sampling=turn_latency_sampling,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error


def run_feed(workspace: Workspace, config: WorldConfig, sink: Sink) -> FeedResult:
    """Feed with a Rich progress bar over simulated days."""
    with Progress(
        TextColumn("[bold]simulating[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[events]:,} events"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("days", total=config.days + 1, events=0)
        sent = 0

        def on_day(day: str, events: int) -> None:
            nonlocal sent
            sent += events
            progress.update(task, advance=1, description=day, events=sent)

        return feed(config, sink, workspace, on_day=on_day)


def print_feed(result: FeedResult, via: str) -> None:
    table = Table(title=f"simulated events sent ({via})")
    table.add_column("source")
    table.add_column("events", justify="right")
    for source, count in sorted(result.by_source.items()):
        table.add_row(source, f"{count:,}")
    table.add_row("[bold]total[/bold]", f"[bold]{result.events:,}[/bold]")
    console.print(table)
    console.print(
        f"stored {result.stored:,}, duplicates {result.duplicates:,}, rejected {result.rejected:,} "
        f"in {result.seconds:.1f} s; ground truth: {result.ground_truth}"
    )


def register(app: typer.Typer) -> None:
    """Add ``tripwire sim``."""

    @app.command("sim")
    def sim(
        days: Annotated[int, typer.Option(help="Days to simulate.", min=1)] = 14,
        users: Annotated[int, typer.Option(help="Users in the world.", min=1)] = 50_000,
        seed: Annotated[
            int, typer.Option(help="Random seed (same seed and options: same events).")
        ] = 7,
        start: Annotated[
            str | None, typer.Option(help="First simulated instant (ISO, UTC); default 2026-11-02.")
        ] = None,
        end_now: Annotated[
            bool,
            typer.Option("--end-now", help="End the range at the current minute (live demos)."),
        ] = False,
        rate: Annotated[
            float | None, typer.Option(help="Mean sessions per user per day (default 0.25).")
        ] = None,
        turn_latency_sampling: Annotated[
            float,
            typer.Option(help="Share of turns whose per-stage $latency events are sent (0–1)."),
        ] = 1.0,
        via: Annotated[
            str, typer.Option(help="inprocess (buffer of the workspace) or http.")
        ] = "inprocess",
        url: Annotated[
            str, typer.Option(help="Server URL for --via http.")
        ] = "http://127.0.0.1:8787",
        write_key: Annotated[
            list[str] | None,
            typer.Option(
                "--write-key", help="KEY, or SOURCE=KEY per source (app, order-ledger, deploy-bot)."
            ),
        ] = None,
        workspace: WorkspaceOption = None,
    ) -> None:
        """Simulate the synthetic product world and feed it into the workspace."""
        ws = open_workspace(workspace)
        config = world_config(
            days=days,
            users=users,
            seed=seed,
            start=start,
            end_now=end_now,
            rate=rate,
            turn_latency_sampling=turn_latency_sampling,
        )
        sink: Sink
        if via == "inprocess":
            sink = InProcessSink(ws)
        elif via == "http":
            keys = parse_write_keys(write_key or [])
            if not keys:
                raise typer.BadParameter(
                    "--via http needs --write-key (see `tripwire keys create`)"
                )
            sink = HttpSink(url, keys)
        else:
            raise typer.BadParameter(f"--via must be inprocess or http, got {via!r}")
        try:
            result = run_feed(ws, config, sink)
        except SimFeedError as error:
            err_console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(1) from error
        print_feed(result, via)
