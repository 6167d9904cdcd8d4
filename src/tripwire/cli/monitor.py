"""CLI commands of the monitor area: ``tripwire eval detectors`` and ``tripwire eval make-series``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tripwire.cli.common import console, err_console

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


def register(app: typer.Typer) -> None:
    """Add the monitor area's commands (``eval`` sub-app) to the main app."""
    app.add_typer(eval_app, name="eval")
