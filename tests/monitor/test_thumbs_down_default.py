"""The shipped thumbs-down monitor stays quiet at a normal share and catches a real rise.

The previous default, "> 15% for 2h", sat a hair above the demo world's ~14% base rate: an
hourly share at ~100 ratings swings by ±3.5 points on binomial noise alone, so it fired on
most incident-free days. The default is now a calibrated detector on the share (binomial
noise at each hour's volume) plus a static backstop at 25%, well above normal variation.
Simulated at the level the monitor sees: hourly ratings ~ Poisson(117 × the world's
diurnal/weekly profile), thumbs-down ~ Binomial(ratings, 14%).
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from tripwire.metrics.catalog import install_catalog
from tripwire.metrics.definitions import MetricBase
from tripwire.monitor.defaults import install_default_monitors
from tripwire.monitor.definitions import MonitorSpec, parse_monitor
from tripwire.monitor.rules import Trigger
from tripwire.monitor.runner import load_definitions, prepare
from tripwire.monitor.series import Ticks, split
from tripwire.sim.config import DEFAULT_START
from tripwire.sim.traffic import minute_profile
from tripwire.store.workspace import init_workspace

DAY_HOURS = 24
CALIBRATION_DAYS, EVAL_DAYS = 4, 30
BASE, RATINGS_PER_HOUR = 0.14, 117.0


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> tuple[MonitorSpec, MetricBase]:
    ws = init_workspace(tmp_path_factory.mktemp("defaults") / "ws")
    install_catalog(ws)
    install_default_monitors(ws)
    monitors, catalog = load_definitions(ws)
    spec = monitors["thumbs_down_rate"]
    return spec, catalog[spec.metric]


def _hourly(seed: int, rise: tuple[int, int, float] | None = None) -> Ticks:
    """Aggregate hourly ratings and thumbs-down; ``rise`` = (first hour, hours, share)."""
    rng = np.random.default_rng(seed)
    days = CALIBRATION_DAYS + EVAL_DAYS
    start = int(DEFAULT_START.timestamp())
    minutes = np.concatenate([minute_profile((start + d * 86_400) * 1000, 0) for d in range(days)])
    profile = minutes.reshape(-1, 60).sum(axis=1)
    profile = profile / profile.mean()
    ratings = rng.poisson(profile * RATINGS_PER_HOUR).astype(float)
    share = np.full(profile.size, BASE)
    if rise is not None:
        first, hours, level = rise
        share[first : first + hours] = level
    down = rng.binomial(ratings.astype(int), share).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(ratings > 0, down / ratings, np.nan)
    stamps = start + 3600 * np.arange(profile.size, dtype=np.int64)
    col = lambda a: a[:, None]  # noqa: E731
    return Ticks(stamps, col(down), col(ratings), col(values), col(ratings))


def _triggers(spec: MonitorSpec, metric: MetricBase, ticks: Ticks) -> list[Trigger]:
    history, rest = split(ticks, CALIBRATION_DAYS * DAY_HOURS)
    end = datetime.fromtimestamp(int(rest.timestamps[0]), UTC)
    evaluator = prepare(None, spec, metric, end, segments=[{}], history=history)  # type: ignore[arg-type]
    return [e.item for e in evaluator.feed(rest) if isinstance(e.item, Trigger)]


def test_quiet_at_a_normal_share(shipped: tuple[MonitorSpec, MetricBase]) -> None:
    spec, metric = shipped
    old = parse_monitor(
        {
            "name": "thumbs_down_rate",
            "metric": "thumbs_down_rate",
            "grain": "hour",
            "detector": {"calibration": "4d"},
            "rules": [
                {
                    "name": "thumbs_down_over_15pct",
                    "severity": "P3",
                    "above": 0.15,
                    "for": "2h",
                    "min_volume": 50,
                    "scope": "aggregate",
                }
            ],
        }
    )
    seeds = range(3)
    new_fired = sum(len(_triggers(spec, metric, _hourly(s))) for s in seeds)
    old_fired = sum(len(_triggers(old, metric, _hourly(s))) for s in seeds)
    days = len(seeds) * EVAL_DAYS
    assert old_fired >= days / 10, "the old default should fire often here (the trap shown)"
    assert new_fired <= 2 * days / 30, f"{new_fired} P3s on {days} incident-free days"


def test_catches_a_real_rise(shipped: tuple[MonitorSpec, MetricBase]) -> None:
    spec, metric = shipped
    caught = 0
    for seed in range(3):
        first = (CALIBRATION_DAYS + 5 + 4 * seed) * DAY_HOURS + 14  # 14:00 UTC, busy hours
        fired = _triggers(spec, metric, _hourly(seed, rise=(first, 3, 0.24)))
        start = int(DEFAULT_START.timestamp()) + 3600 * first
        caught += any(start <= t.timestamp < start + 3 * 3600 for t in fired)
    assert caught == 3
