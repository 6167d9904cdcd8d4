"""``tripwire demo``: one command from nothing to a workspace full of events and a summary.

The demo is a list of steps (:data:`STEPS`), each a function of a shared
:class:`DemoContext`; later capabilities (experiments, monitors, root cause) add their steps
to the list. Every step is timed and the total printed, so the "under 2 minutes on 2 cores"
promise is visible on every run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import duckdb
import typer
from rich.table import Table

from tripwire.cli.common import console, err_console
from tripwire.cli.sim import run_feed
from tripwire.cli.workspace import initialize_workspace
from tripwire.ingest.archiver import Archiver
from tripwire.sim.config import WorldConfig
from tripwire.sim.feed import FeedResult, InProcessSink, SimFeedError
from tripwire.sim.funnel import STAGES, STEP_EVENTS
from tripwire.sim.truth import GroundTruth
from tripwire.store.buffer import Buffer
from tripwire.store.lake import create_events_view
from tripwire.store.workspace import Workspace

#: Default world size: 14 days × 10,000 users at 0.35 sessions per user-day ≈ 49,000
#: sessions and ≈ 1.1 M events, which keeps simulate + ingest + archive under 2 minutes on
#: 2 cores (ingest and archive cost ~15× the simulation per event). A quarter of the turns
#: report per-stage latency (tracing-style sampling) so that the budget buys sessions,
#: which is what makes the planted incidents visible, rather than latency spans.
DEFAULT_USERS = 10_000
DEMO_SESSIONS_PER_USER_DAY = 0.35
DEMO_TURN_LATENCY_SAMPLING = 0.25


def demo_world_config(days: int = 14, users: int = DEFAULT_USERS, seed: int = 7) -> WorldConfig:
    """The world ``tripwire demo`` simulates (its defaults: seed 7, 10,000 users, 14 days)."""
    return WorldConfig(
        days=days,
        users=users,
        seed=seed,
        sessions_per_user_day=DEMO_SESSIONS_PER_USER_DAY,
        turn_latency_sampling=DEMO_TURN_LATENCY_SAMPLING,
    )


@dataclass
class DemoContext:
    """What the steps share."""

    directory: Path
    config: WorldConfig
    workspace: Workspace | None = None
    feed: FeedResult | None = None
    truth: GroundTruth | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ws(self) -> Workspace:
        if self.workspace is None:
            raise RuntimeError("the workspace step has not run")
        return self.workspace


def step_workspace(ctx: DemoContext) -> None:
    ctx.workspace = initialize_workspace(ctx.directory)
    console.print(f"workspace: {ctx.ws.root}")


def step_simulate(ctx: DemoContext) -> None:
    ctx.feed = run_feed(ctx.ws, ctx.config, InProcessSink(ctx.ws))
    ctx.truth = GroundTruth.read(ctx.feed.ground_truth)
    console.print(
        f"simulated {ctx.feed.events:,} events ({ctx.config.users:,} users × {ctx.config.days} days, "
        f"seed {ctx.config.seed}); stored {ctx.feed.stored:,}, duplicates {ctx.feed.duplicates:,}"
    )


def step_archive(ctx: DemoContext) -> None:
    buffer = Buffer.for_workspace(ctx.ws)
    try:
        result = Archiver.for_workspace(ctx.ws, buffer).run()
    finally:
        buffer.close()
    console.print(f"archived {result.events:,} events into {result.files:,} Parquet files")


def _query(ctx: DemoContext, sql: str) -> list[tuple[Any, ...]]:
    connection = duckdb.connect()
    try:
        create_events_view(connection, ctx.ws.lake_dir)
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def step_summary(ctx: DemoContext) -> None:
    per_day = _query(
        ctx,
        "SELECT CAST(timestamp AS DATE) AS day, count(*) AS events,"
        " count(*) FILTER (WHERE source = 'app') AS app,"
        " count(*) FILTER (WHERE source = 'order-ledger') AS ledger,"
        " count(*) FILTER (WHERE source = 'deploy-bot') AS changes,"
        " count(DISTINCT session_id) FILTER (WHERE event = 'Session Started') AS sessions"
        " FROM events GROUP BY 1 ORDER BY 1",
    )
    table = Table(title="events per day")
    for name in ("day", "events", "app", "order-ledger", "deploy-bot", "sessions"):
        table.add_column(name, justify="right" if name != "day" else "left")
    for day, *counts in per_day:
        table.add_row(str(day), *(f"{c:,}" for c in counts))
    console.print(table)

    per_type = _query(ctx, "SELECT event, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC, 1")
    table = Table(title="events per type")
    table.add_column("event")
    table.add_column("events", justify="right")
    for event, count in per_type:
        table.add_row(event, f"{count:,}")
    console.print(table)

    names = ", ".join("'" + e.replace("'", "''") + "'" for e in STEP_EVENTS)
    reached = dict(
        _query(
            ctx,
            f"SELECT event, count(DISTINCT session_id) FROM events WHERE event IN ({names}) GROUP BY 1",
        )
    )
    table = Table(title="voice checkout funnel (sessions reaching each step)")
    for name in ("#", "stage", "event", "sessions", "from previous", "from start"):
        table.add_column(
            name,
            justify="right" if name in ("#", "sessions", "from previous", "from start") else "left",
        )
    first = reached.get(STEP_EVENTS[0], 0) or 1
    previous = None
    for index, (stage, event) in enumerate(zip(STAGES, STEP_EVENTS, strict=True), start=1):
        count = reached.get(event, 0)
        step = "" if previous is None else f"{count / previous:.1%}" if previous else "–"
        table.add_row(str(index), stage, event, f"{count:,}", step, f"{count / first:.1%}")
        previous = count
    console.print(table)

    if ctx.truth is not None:
        console.print("[bold]incidents planted[/bold] (ground truth)")
        for incident in ctx.truth.incidents:
            segment = (
                " × ".join(f"{k}={v}" for seg in incident.segments for k, v in seg.items())
                or "every segment (global)"
            )
            change = incident.change
            console.print(
                f"  [bold]{incident.id}[/bold] {incident.start[5:16]} → {incident.end[11:16]} UTC"
                f" · {segment} · {incident.metric}"
                f" · cause: {change['kind']} {change['service']} {change['version']} ({incident.category})"
            )
        console.print(f"ground truth: {ctx.feed.ground_truth if ctx.feed else '(not written)'}")


def step_experiments(ctx: DemoContext) -> None:
    from tripwire.experiments.demo_step import run_experiments_step

    run_experiments_step(ctx.ws, console)


def step_monitors(ctx: DemoContext) -> None:
    from tripwire.monitor.demo_step import run_monitor_step

    run_monitor_step(ctx.ws, console)


def step_rca(ctx: DemoContext) -> None:
    from tripwire.rca.demo_step import run_rca_step

    run_rca_step(ctx.ws, console)


#: The demo, in order. Later capabilities append their steps here.
def step_dashboard(ctx: DemoContext) -> None:
    """Store the experiments' scorecards so the dashboard's first view reads them back."""
    from tripwire.web.experiments import store_scorecards

    stored = store_scorecards(ctx.ws)
    console.print(f"dashboard scorecards stored: {', '.join(stored) or 'none'}")


STEPS: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("create workspace", step_workspace),
    ("simulate and ingest", step_simulate),
    ("archive to the lake", step_archive),
    ("summary", step_summary),
    ("experiments: plan, lock, analyse, decide", step_experiments),
    ("monitors: backfill and alerts", step_monitors),
    ("root-cause analysis of each incident", step_rca),
    ("dashboard: store scorecards", step_dashboard),
]


def run_demo(
    ctx: DemoContext, steps: list[tuple[str, Callable[[DemoContext], None]]] | None = None
) -> DemoContext:
    """Run the steps in order, timing each."""
    for name, step in steps or STEPS:
        console.rule(f"[bold]{name}")
        started = time.perf_counter()
        step(ctx)
        ctx.timings[name] = time.perf_counter() - started
    return ctx


def register(app: typer.Typer) -> None:
    """Add ``tripwire demo``."""

    @app.command("demo")
    def demo(
        directory: Annotated[
            Path, typer.Option("--dir", help="Workspace folder to create.")
        ] = Path("tripwire-demo"),
        days: Annotated[int, typer.Option(help="Days to simulate.", min=1)] = 14,
        users: Annotated[int, typer.Option(help="Users in the world.", min=1)] = DEFAULT_USERS,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
        serve: Annotated[
            bool, typer.Option("--serve", help="Serve the dashboard when the demo is done.")
        ] = False,
        port: Annotated[int, typer.Option(help="Port for --serve.")] = 8787,
    ) -> None:
        """Create a workspace, simulate the synthetic world, ingest, archive and summarise."""
        config = demo_world_config(days=days, users=users, seed=seed)
        ctx = DemoContext(directory=directory, config=config)
        started = time.perf_counter()
        try:
            run_demo(ctx)
        except SimFeedError as error:
            err_console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(1) from error
        table = Table(title="demo timings")
        table.add_column("step")
        table.add_column("seconds", justify="right")
        for name, seconds in ctx.timings.items():
            table.add_row(name, f"{seconds:.1f}")
        table.add_row("[bold]total[/bold]", f"[bold]{time.perf_counter() - started:.1f}[/bold]")
        console.print(table)
        root = ctx.ws.root
        console.print(
            f"next: [bold]tripwire status -w {root}[/bold] · "
            f'[bold]tripwire sql "SELECT event, count(*) FROM events GROUP BY 1" -w {root}[/bold]'
        )
        url = f"http://127.0.0.1:{port}/"
        if serve:
            from tripwire.web.server import serve as run_server

            console.print(f"dashboard: [bold]{url}[/bold] (Ctrl-C to stop)")
            run_server(ctx.ws, port=port, monitor=False)
        else:
            console.print(
                f"dashboard: [bold]tripwire serve -w {root} --port {port}[/bold], then open {url}"
                " (or run the demo with --serve)"
            )
