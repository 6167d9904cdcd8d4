"""The planner against independent computations on a live lake."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pytest

from tripwire.experiments.planner import (
    PlanningError,
    information_fractions,
    plan_experiment,
    sequential_design,
    traffic_fraction,
)
from tripwire.experiments.spec import parse_spec
from tripwire.stats.power import sample_size_means
from tripwire.store.lake import create_events_view

from . import live_world as LW


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return LW.build_lake(tmp_path_factory.mktemp("plain") / "lake", users=250, seed=9)


def _per_user(lake: Path, start: datetime, end: datetime, pre_days: int | None) -> np.ndarray:
    """Independent per-user (adds, pre-period adds) for users entering in [start, end)."""
    con = duckdb.connect()
    create_events_view(con, lake)
    rows = con.execute(
        """
        WITH units AS (
            SELECT user_id, min(timestamp) AS t0 FROM events
            WHERE event = 'Session Started' AND timestamp >= ? AND timestamp < ?
            GROUP BY 1)
        SELECT u.user_id,
               count(*) FILTER (WHERE e.event = 'Product Added'
                                AND e.timestamp >= u.t0 AND e.timestamp < ?),
               count(*) FILTER (WHERE e.event = 'Product Added'
                                AND CAST(e.timestamp AS DATE) >= CAST(u.t0 AS DATE) - ?
                                AND CAST(e.timestamp AS DATE) < CAST(u.t0 AS DATE))
        FROM units u LEFT JOIN events e ON e.user_id = u.user_id
        GROUP BY 1
        """,
        [start, end, end, pre_days or 0],
    ).fetchall()
    con.close()
    return np.array([(r[1], r[2]) for r in rows], dtype=float)


def test_baseline_sizes_and_cohorts_match_independent_numbers(lake: Path, tmp_path: Path) -> None:
    ws = LW.workspace_on(tmp_path / "ws", lake)
    plan = plan_experiment(ws, LW.EXPERIMENT)
    end = LW.START + timedelta(days=LW.EXPERIMENT_DAY)
    assert plan.window_end == end and plan.window_start < LW.START + timedelta(hours=1)
    values = _per_user(lake, plan.window_start, end, None)[:, 0]
    assert plan.eligible_units == len(values) == plan.primary.units
    assert plan.primary.value == pytest.approx(values.mean(), rel=1e-12)
    assert plan.primary.unit_variance == pytest.approx(values.var(ddof=1), rel=1e-9)
    assert plan.primary.kind == "mean"

    # CUPED: measured on units entering once a whole 3-day pre-period is in the lake
    both = _per_user(lake, LW.START + timedelta(days=3), end, 3)
    rho = float(np.corrcoef(both[:, 0], both[:, 1])[0, 1])
    assert plan.primary.cuped_correlation == pytest.approx(rho, abs=0.02)
    assert rho > 0.2  # persistent activity: the pre-period predicts

    design = sequential_design(parse_spec_of(ws))
    assert design is not None and design.information_fractions == (0.5, 1.0)
    expected = sample_size_means(
        math.sqrt(plan.primary.unit_variance), 0.10, mean=plan.primary.value, relative=True,
        cuped_correlation=plan.primary.cuped_correlation or 0.0, design=design,
    )  # fmt: skip
    assert plan.n_per_arm == expected.n_per_arm
    assert plan.sequential_inflation > 1.0
    assert plan.runtime_days >= 1 and plan.planned_days == 6.0

    shares = [c.share for c in plan.cohorts]
    assert {c.value for c in plan.cohorts} == set(LW.LOCALES)
    assert sum(shares) == pytest.approx(1.0)
    smallest = min(plan.cohorts, key=lambda c: c.share)
    largest = max(plan.cohorts, key=lambda c: c.share)
    assert smallest.mde_relative is not None and largest.mde_relative is not None
    assert smallest.mde_relative > largest.mde_relative  # fewer units, larger MDE
    for c in plan.cohorts:
        assert c.underpowered == (c.mde_relative is not None and c.mde_relative > 0.10)
        assert c.inconclusive_relative is not None and c.mde_relative is not None
        assert c.inconclusive_relative < c.mde_relative  # the MDE at 50% power is smaller
    message = smallest.message()
    assert message.startswith(f"locale={smallest.value} cohort: MDE ")
    assert "will be inconclusive" in message
    assert plan.to_dict()["n_per_arm"] == list(plan.n_per_arm)


def parse_spec_of(ws):  # type: ignore[no-untyped-def]
    from tripwire.experiments.spec import load_spec

    return load_spec(ws, LW.EXPERIMENT, check_metrics=False).spec


def test_ratio_primary_and_explicit_window(lake: Path, tmp_path: Path) -> None:
    text = LW.spec_yaml(primary="primary:\n  metric: turns_per_session\n  mde: 2%\n", cuped="")
    ws = LW.workspace_on(tmp_path / "ws", lake, text)
    end = LW.START + timedelta(days=3)
    plan = plan_experiment(ws, LW.EXPERIMENT, baseline_end=end, baseline_days=2)
    assert plan.window_start == end - timedelta(days=2) and plan.window_end == end
    assert plan.primary.kind == "ratio" and plan.primary.cuped_correlation is None
    assert 1.5 < plan.primary.value < 4.0  # 1 + Poisson(1.5) turns per session


def test_planning_errors(lake: Path, tmp_path: Path) -> None:
    empty = LW.workspace_on(tmp_path / "empty", None)
    with pytest.raises(PlanningError, match="no events yet"):
        plan_experiment(empty, LW.EXPERIMENT)
    text = LW.spec_yaml(population="population:\n  eligibility:\n    events: [Never Sent]\n")
    nobody = LW.workspace_on(tmp_path / "nobody", lake, text)
    with pytest.raises(PlanningError, match="no eligible units"):
        plan_experiment(nobody, LW.EXPERIMENT)


def test_information_fractions_and_traffic() -> None:
    spec = parse_spec({
        "name": "x", "arms": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}],
        "primary": {"metric": "m", "mde": 0.05}, "start": "2026-11-05T00:00:00Z",
        "sequential": {"looks": [date(2026, 11, 6), date(2026, 11, 8)]},
        "rollout": {"stages": [{"share": "5%"}, {"share": "50%"}]},
        "assignment": {"layer_range": [0.2, 0.6], "holdout": {"share": "10%"}},
    })  # fmt: skip
    fractions = information_fractions(spec)
    assert fractions is not None and fractions == pytest.approx((0.5, 1.0))
    assert traffic_fraction(spec) == pytest.approx(0.5 * 0.4 * 0.9)
    assert (
        information_fractions(parse_spec({**spec.model_dump(mode="json"), "sequential": None}))
        is None
    )
