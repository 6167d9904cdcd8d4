"""The top-level command: lazy areas that still list and run every command."""

from __future__ import annotations

import importlib
import subprocess
import sys

import typer
from typer.testing import CliRunner

from tripwire.cli.main import AREAS, COMMANDS, app, area_commands

runner = CliRunner()


def test_command_map_matches_what_the_areas_register() -> None:
    registered: dict[str, str] = {}
    for area in AREAS:
        for name in area_commands(area):
            assert name not in registered, f"{name} registered by {registered.get(name)} and {area}"
            registered[name] = area
    assert registered == {name: entry.area for name, entry in COMMANDS.items()}
    # every area module is listed, so no area's commands are unreachable
    cli_modules = {
        "workspace",
        "ingest",
        "store",
        "sim",
        "metrics",
        "experiments",
        "monitor",
        "rca",
        "web",
        "demo",
    }
    assert set(AREAS) == cli_modules
    for area in AREAS:
        assert callable(importlib.import_module(f"tripwire.cli.{area}").register)


def test_top_level_help_lists_every_command_without_importing_areas() -> None:
    code = (
        "import sys\n"
        "from tripwire.cli.main import app\n"
        "try:\n"
        "    app(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('tripwire.cli.experiments', 'duckdb', 'ibis', 'scipy') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "HEAVY []" in out
    for name in COMMANDS:
        assert name in out


def test_area_commands_run_and_unknown_commands_fail() -> None:
    result = runner.invoke(app, ["metrics", "--help"])
    assert result.exit_code == 0, result.output
    assert "query" in result.output
    result = runner.invoke(app, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command" in result.output


def test_area_command_help_has_one_line_per_command() -> None:
    for name, entry in COMMANDS.items():
        assert entry.help.endswith("."), name
        assert "\n" not in entry.help
    assert isinstance(app, typer.Typer)


def test_a_command_runs_with_the_cli_gc_thresholds(tmp_path) -> None:
    """Commands run with larger cyclic-GC batches (query building allocates millions of
    short-lived objects); the process's thresholds are restored after the check."""
    import gc

    from tripwire.cli.main import GC_THRESHOLDS

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        result = runner.invoke(app, ["init", str(tmp_path / "ws")])
        assert result.exit_code == 0, result.output
        assert gc.get_threshold() == GC_THRESHOLDS
    finally:
        gc.set_threshold(*before)
