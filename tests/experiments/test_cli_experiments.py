"""``tripwire experiment list|plan|lock|show|check|rollout …`` and ``tripwire decisions``,
through the real CLI app, including the failure paths."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tripwire.cli import common
from tripwire.cli.main import app
from tripwire.store.workspace import Workspace

from . import live_world as LW

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console() -> Iterator[None]:
    """Rich wraps at the terminal width; keep table cells on one line for assertions."""
    saved = common.console.width, common.err_console.width
    common.console.width = common.err_console.width = 250
    yield
    common.console.width, common.err_console.width = saved


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return LW.build_lake(
        tmp_path_factory.mktemp("cli") / "lake",
        users=250,
        harm=LW.Harm(latency_factor=1.6, error_factor=3.0),
    )


def run(ws: Workspace, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "-w", str(ws.root)], env={"TRIPWIRE_AUTHOR": "ana"})
    return result.exit_code, result.output


def test_plan_lock_show_check_and_rollout(lake: Path, tmp_path: Path) -> None:
    ws = LW.workspace_on(tmp_path / "ws", lake)
    code, out = run(ws, "experiment", "list")
    assert code == 0 and "live" in out and "draft" in out

    code, out = run(ws, "experiment", "plan", "live")
    assert code == 0, out
    for text in ("units per arm", "sequential inflation", "CUPED correlation", "runtime"):
        assert text in out
    assert "underpowered: locale=" in out and "will be inconclusive" in out
    code, out = run(ws, "experiment", "plan", "live", "--json")
    assert code == 0 and json.loads(out)["metric"] == "adds"

    code, out = run(ws, "experiment", "lock", "live")
    assert code == 0 and "locked live: sha256" in out and "by ana" in out
    code, out = run(ws, "experiment", "lock", "live")
    assert code == 0 and "already locked" in out
    code, out = run(ws, "experiment", "show", "live")
    assert code == 0 and "matches the pre-registration" in out and "status" in out

    # change the spec after lock: show flags it, lock and check refuse without --amend
    spec_file = ws.experiments_dir / "live.yaml"
    spec_file.write_text(spec_file.read_text().replace("mde: 10%", "mde: 12%"))
    code, out = run(ws, "experiment", "show", "live")
    assert code == 0 and "CHANGED since lock" in out
    code, out = run(ws, "experiment", "lock", "live")
    assert code == 1 and "already locked" in out and "--amend" in out
    code, out = run(ws, "experiment", "check", "live")
    assert code == 1 and "changed after it was locked" in out

    code, out = run(ws, "experiment", "check", "live", "--amend", "MDE agreed with finance")
    assert code == 3, out  # the planted latency and error harms breach
    assert "recorded amendment of live: MDE agreed with finance" in out
    assert "BREACH" in out and "turn_latency_p99 > 900" in out and "rollout paused" in out
    code, out = run(ws, "experiment", "show", "live")
    assert "matches the pre-registration" in out and "MDE agreed with finance" in out
    assert "paused" in out

    code, out = run(ws, "experiment", "rollout", "advance", "live")
    assert code == 1 and "is paused" in out
    code, out = run(ws, "experiment", "rollout", "resume", "live", "--reason", "fixed p99")
    assert code == 0 and "resumed: fixed p99" in out
    code, out = run(ws, "experiment", "rollout", "advance", "live")
    assert code == 1 and "must run at least 1 day" in out
    code, out = run(ws, "experiment", "rollout", "advance", "live", "--force")
    assert code == 0 and "advanced 10% → 50% (forced before min_duration)" in out
    code, out = run(ws, "experiment", "rollout", "kill", "live", "--reason", "cart bug")
    assert code == 0 and "killed: cart bug" in out

    code, out = run(ws, "decisions")
    assert code == 0
    for kind in ("lock", "amendment", "rollout"):
        assert kind in out
    code, out = run(ws, "decisions", "--kind", "amendment", "--json")
    (entry,) = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert entry["details"]["reason"] == "MDE agreed with finance" and entry["author"] == "ana"
    code, out = run(ws, "decisions", "-e", "live", "--limit", "1")
    assert code == 0 and "killed: cart bug" in out and "locked spec" not in out
    code, out = run(ws, "decisions", "--finished")
    assert code == 0 and "finished experiments" in out
    code, out = run(ws, "experiment", "list")
    assert "locked" in out or "running" in out


def test_failure_paths(lake: Path, tmp_path: Path) -> None:
    missing_metric = LW.spec_yaml(primary="primary:\n  metric: adds_per_user\n  mde: 10%\n")
    ws = LW.workspace_on(tmp_path / "metric", lake, missing_metric)
    code, out = run(ws, "experiment", "plan", "live")
    assert code == 1
    assert "experiments/live.yaml:16: primary.metric: unknown metric 'adds_per_user'" in out

    bad_yaml = LW.workspace_on(tmp_path / "yaml", lake, "name: live\narms: [\n")
    code, out = run(bad_yaml, "experiment", "lock", "live")
    assert code == 1 and "experiments/live.yaml:3: YAML syntax error" in out

    code, out = run(ws, "experiment", "show", "nope")
    assert code == 2 and "no spec" in out and "experiments: live" in out

    fine = LW.workspace_on(tmp_path / "fine", lake)
    code, out = run(fine, "experiment", "check", "live", "--at", "2026-03-04")
    assert code == 1 and "no exposures of 'live'" in out
    assert "not pre-registered" in out
    code, out = run(fine, "experiment", "check", "live", "--window", "soon")
    assert code == 2 and "--window" in out
    code, out = run(fine, "experiment", "check", "live", "--at", "next tuesday")
    assert code == 2 and "--at" in out

    empty = LW.workspace_on(tmp_path / "empty", None)
    code, out = run(empty, "experiment", "plan", "live")
    assert code == 1 and "no events yet" in out
    code, out = run(empty, "experiment", "rollout", "kill", "live", "--reason", " ")
    assert code == 1 and "needs a reason" in out
    code, out = run(empty, "decisions")
    assert code == 0 and "no decisions recorded yet" in out
