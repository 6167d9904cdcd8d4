"""Staged rollouts: allocation per state, advance/resume/kill, and the guard on a live lake."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tripwire.experiments.registry import Registry
from tripwire.experiments.rollout import (
    CheckResult,
    RolloutError,
    RolloutGuard,
    advance,
    allocation,
    check,
    check_running,
    current_rollout,
    kill,
    resume,
)
from tripwire.experiments.spec import load_spec, parse_spec
from tripwire.metrics.loader import load_metrics
from tripwire.store.engine import connect
from tripwire.store.workspace import Workspace, init_workspace

from . import live_world as LW

SPEC = parse_spec({
    "name": "exp",
    "arms": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 3}],
    "primary": {"metric": "m", "mde": 0.05},
    "assignment": {"layer": "ranking", "layer_range": [0, 0.5], "holdout": {"share": "10%"}},
    "rollout": {"stages": [{"share": "1%", "min_duration": "1d"}, {"share": "25%"},
                           {"share": "100%"}]},
})  # fmt: skip


@pytest.fixture
def reg(tmp_path: Path) -> Any:
    with Registry.open(init_workspace(tmp_path / "ws")) as registry:
        yield registry


def test_allocation_follows_the_state(reg: Registry) -> None:
    fresh = allocation(SPEC, None)
    assert (fresh.rollout, fresh.killed, fresh.weights) == (0.01, False, (1.0, 3.0))
    assert (fresh.layer, fresh.layer_range, fresh.holdout_share) == ("ranking", (0.0, 0.5), 0.1)
    paused = reg.set_rollout_state("exp", 1, "paused", "breach")
    assert allocation(SPEC, paused).rollout == 0.0 and not allocation(SPEC, paused).killed
    running = reg.set_rollout_state("exp", 1, "running", "resumed")
    assert allocation(SPEC, running).rollout == 0.25
    killed = reg.set_rollout_state("exp", 1, "killed", "kill switch")
    assert allocation(SPEC, killed).killed and current_rollout(SPEC, killed).share == 0.0
    no_stages = parse_spec({**SPEC.model_dump(mode="json"), "rollout": None})
    assert allocation(no_stages, None).rollout == 1.0


def test_advance_respects_min_duration_and_completes(reg: Registry) -> None:
    with pytest.raises(RolloutError, match="must run at least 1 day"):
        advance(reg, SPEC, now=datetime.now(UTC))
    forced = advance(reg, SPEC, force=True, author="ana")
    assert (forced.stage, forced.status) == (1, "running") and "forced" in forced.reason
    second = advance(reg, SPEC, now=datetime.now(UTC) + timedelta(seconds=1))
    assert second.stage == 2 and second.reason == "advanced 25% → 100%"
    done = advance(reg, SPEC)
    assert done.status == "completed" and allocation(SPEC, done).rollout == 1.0
    with pytest.raises(RolloutError, match="already fully rolled out"):
        advance(reg, SPEC)
    assert [d.details["stage"] for d in reg.decisions("exp", kind="rollout")] == [0, 1, 2, 2]


def test_pause_resume_and_kill(reg: Registry) -> None:
    with pytest.raises(RolloutError, match="not paused"):
        resume(reg, SPEC, "why not")
    reg.set_rollout_state("exp", 0, "paused", "p99 breach")
    with pytest.raises(RolloutError, match="resume it before advancing"):
        advance(reg, SPEC, force=True)
    with pytest.raises(RolloutError, match="needs a reason"):
        resume(reg, SPEC, " ")
    assert resume(reg, SPEC, "cache warmed").status == "running"
    with pytest.raises(RolloutError, match="needs a reason"):
        kill(reg, SPEC, "")
    killed = kill(reg, SPEC, "corrupting carts", author="oncall")
    assert killed.status == "killed" and killed.author == "oncall"
    with pytest.raises(RolloutError, match="was killed"):
        advance(reg, SPEC, force=True)
    with pytest.raises(RolloutError, match="no rollout stages"):
        advance(reg, parse_spec({**SPEC.model_dump(mode="json"), "rollout": None}))


# --------------------------------------------------------------------------- the guard


@pytest.fixture(scope="module")
def harmed_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Treatment turns 1.6× slower and checkout errors 3× more frequent."""
    return LW.build_lake(
        tmp_path_factory.mktemp("harmed") / "lake",
        harm=LW.Harm(latency_factor=1.6, error_factor=3.0),
    )


def _check(ws: Workspace, **kwargs: Any) -> tuple[CheckResult, Registry]:
    catalog = load_metrics(ws, check_lake=False)
    loaded = load_spec(ws, LW.EXPERIMENT, catalog=catalog)
    registry = Registry.open(ws)
    try:
        return check(ws, loaded, registry, catalog, connect(ws), **kwargs), registry
    except BaseException:
        registry.close()
        raise


def test_a_breach_pauses_the_rollout_and_is_recorded(harmed_lake: Path, tmp_path: Path) -> None:
    ws = LW.workspace_on(tmp_path / "ws", harmed_lake)
    notified: list[CheckResult] = []
    result, registry = _check(ws, notify=notified.append, author="guard")
    with registry:
        assert result.status_before == "running" and result.status_after == "paused"
        by_name = {f.name: f for f in result.findings}
        latency = by_name["turn_latency_p99"]
        assert latency.breached and latency.observed is not None and latency.observed > 900
        assert latency.values["control"] is not None and latency.values["control"] < 900
        errors = by_name["error_rate"]
        assert errors.kind == "guardrail" and errors.breached
        assert errors.observed is not None and errors.observed > 1.0  # ~ +200% relative
        assert set(result.units_per_arm) == {"control", "treatment"}
        assert notified == [result]
        state = registry.rollout_state(LW.EXPERIMENT)
        assert state is not None and state.status == "paused" and state.author == "guard"
        assert "turn_latency_p99 > 900" in state.reason
        (entry,) = registry.decisions(LW.EXPERIMENT, kind="rollout")
        assert any(f["breached"] for f in entry.details["findings"])
        again, _ = _check(ws)  # already paused: recorded as a check, not a second pause
        assert again.status_after == "paused"
        assert registry.decisions(LW.EXPERIMENT, kind="check")[-1].summary.startswith(
            "stage 10%: BREACH"
        )


def test_criteria_that_hold_pass_and_thin_arms_are_not_judged(
    harmed_lake: Path, tmp_path: Path
) -> None:
    relaxed = LW.spec_yaml(
        guardrails="",
        rollout=(
            "rollout:\n  stages:\n    - share: 10%\n      abort:\n"
            '        - {metric: turn_latency_p99, op: ">", threshold: 5000}\n'
            '        - {metric: turn_latency_p99, op: ">", threshold: 10%, compare: relative,'
            " min_events: 1000000}\n"
            "    - share: 100%\n"
        ),
    )
    ws = LW.workspace_on(tmp_path / "ws", harmed_lake, relaxed)
    result, registry = _check(ws)
    with registry:
        assert not result.breached and result.status_after == "running"
        thin = result.findings[1]
        assert not thin.breached and "not judged" in thin.note
        assert registry.rollout_state(LW.EXPERIMENT) is None
        assert registry.decisions(LW.EXPERIMENT, kind="check")[0].summary.endswith("pass")


def test_no_exposures_yet_is_an_error(harmed_lake: Path, tmp_path: Path) -> None:
    ws = LW.workspace_on(tmp_path / "ws", harmed_lake)
    before = LW.START + timedelta(days=LW.EXPERIMENT_DAY - 1)
    with pytest.raises(RolloutError, match="no exposures of 'live'"):
        _check(ws, at=before)


def test_scheduled_pass_guards_running_locked_experiments(
    harmed_lake: Path, tmp_path: Path
) -> None:
    ws = LW.workspace_on(tmp_path / "ws", harmed_lake)
    (ws.experiments_dir / "draft.yaml").write_text(
        LW.spec_yaml(header="name: draft\n").replace(f"name: {LW.EXPERIMENT}\n", "")
    )
    (ws.experiments_dir / "broken.yaml").write_text("name: broken\narms: 1\n")
    assert check_running(ws) == {
        "broken": "skipped: not locked", "draft": "skipped: not locked",
        "live": "skipped: not locked",
    }  # fmt: skip
    loaded = load_spec(ws, LW.EXPERIMENT)
    with Registry.open(ws) as reg:
        reg.lock(LW.EXPERIMENT, loaded.hash, loaded.spec.model_dump(mode="json"))
        reg.lock("broken", "00" * 32, {})
    results = check_running(ws)
    live = results["live"]
    assert isinstance(live, CheckResult) and live.status_after == "paused"
    assert isinstance(results["broken"], str) and "broken.yaml:2: arms" in results["broken"]
    assert check_running(ws)["live"] == "skipped: rollout paused"


def test_the_guard_thread_runs_passes_until_stopped(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    seen: list[dict[str, Any]] = []
    first = threading.Event()

    def on_pass(results: dict[str, Any]) -> None:
        seen.append(results)
        first.set()

    guard = RolloutGuard(ws, interval=timedelta(hours=1), on_pass=on_pass)
    guard.start()
    guard.start()  # idempotent
    assert first.wait(60)
    guard.stop()
    assert guard.passes == 1 and seen == [{}] and guard.last_error is None
