"""`tripwire sim` and `tripwire demo` on tiny worlds."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tripwire.cli.main import app
from tripwire.store.workspace import init_workspace

runner = CliRunner()


def test_sim_feeds_the_workspace(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    result = runner.invoke(
        app, ["sim", "--days", "1", "--users", "60", "--seed", "3", "-w", str(ws.root)]
    )
    assert result.exit_code == 0, result.output
    assert "total" in result.output
    truth = json.loads((ws.data_dir / "sim" / "ground_truth.json").read_text())
    assert truth["seed"] == 3 and truth["config"]["users"] == 60


def test_sim_rejects_bad_options(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    result = runner.invoke(
        app, ["sim", "--via", "carrier-pigeon", "--days", "1", "--users", "5", "-w", str(ws.root)]
    )
    assert result.exit_code != 0 and "inprocess or http" in result.output
    result = runner.invoke(
        app, ["sim", "--via", "http", "--days", "1", "--users", "5", "-w", str(ws.root)]
    )
    assert result.exit_code != 0 and "write-key" in result.output
    result = runner.invoke(
        app, ["sim", "--start", "yesterday", "--days", "1", "--users", "5", "-w", str(ws.root)]
    )
    assert result.exit_code != 0


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--dir", str(target), "--days", "2", "--users", "80"])
    assert result.exit_code == 0, result.output
    for text in (
        "events per day",
        "events per type",
        "voice checkout funnel",
        "demo timings",
        "Voice Utterance",
    ):
        assert text in result.output
    assert list((target / ".tripwire" / "lake" / "events").glob("date=*/event=*/*.parquet"))
