"""A small live experiment in a real lake, for planner, rollout-guard and CLI tests.

Not a test module: test files import it relatively (``from . import live_world``).

Users (``u0000``…) in three locales send sessions every day for ``DAYS`` days from
``START``; each session may add products (``Product Added``), has chat turns
(``Turn Completed`` with ``latency_ms``) and sometimes a ``Checkout Error``. A user's
activity rate is persistent, so pre-period adds predict later adds (CUPED has a
covariate). From ``EXPERIMENT_DAY`` on, each user's first session logs a ``$exposure``
to ``EXPERIMENT`` with the arm tripwire's own hashing gives, and treatment may carry
planted harms: slower turns (``latency_factor``) and more checkout errors
(``error_factor``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from tripwire.experiments.assignment import Allocation, assign
from tripwire.store.lake import write_events
from tripwire.store.workspace import Workspace, init_workspace

START = datetime(2026, 3, 2, tzinfo=UTC)
DAYS = 10
EXPERIMENT_DAY = 4
EXPERIMENT = "live"
LOCALES = ("en-US", "de-DE", "ja-JP")
SHARES = (0.6, 0.25, 0.15)

METRICS_YAML = """\
metrics:
  - name: adds
    type: mean
    per: unit
    events: [Product Added]
  - name: purchasers
    type: proportion
    events: [Product Added]
  - name: turns_per_session
    type: ratio
    numerator: {events: [Turn Completed]}
    denominator: {events: [Session Started]}
  - name: error_rate
    type: ratio
    numerator: {events: [Checkout Error]}
    denominator: {events: [Session Started]}
  - name: turn_latency_p99
    type: quantile
    events: [Turn Completed]
    value: properties.latency_ms
    q: 0.99
"""


def spec_yaml(**overrides: str) -> str:
    """The experiment's spec; ``overrides`` replace whole top-level sections (YAML text)."""
    sections = {
        "header": f"name: {EXPERIMENT}\ndescription: a live test experiment\n",
        "hypothesis": (
            "hypothesis:\n  h0: no change in adds\n  h1: adds up 10%\n"
            "  prior: unsure\n  disconfirming: adds flat\n"
        ),
        "population": "population:\n  eligibility:\n    events: [Session Started]\n",
        "arms": (
            "unit: user\narms:\n  - {name: control, weight: 1}\n  - {name: treatment, weight: 1}\n"
        ),
        "primary": "primary:\n  metric: adds\n  mde: 10%\n",
        "guardrails": (
            "guardrails:\n  - metric: error_rate\n    harm: increase\n    threshold: 10%\n"
        ),
        "cohorts": "cohorts: [locale]\n",
        "cuped": "cuped:\n  pre_period: 3d\n",
        "sequential": "sequential:\n  information_fractions: [0.5, 1.0]\n",
        "dates": (
            f"start: {(START + timedelta(days=EXPERIMENT_DAY)).isoformat()}\n"
            f"end: {(START + timedelta(days=DAYS)).isoformat()}\n"
        ),
        "rollout": (
            "rollout:\n  stages:\n"
            "    - share: 10%\n      min_duration: 1d\n      abort:\n"
            '        - {metric: turn_latency_p99, op: ">", threshold: 900}\n'
            "    - share: 50%\n    - share: 100%\n"
        ),
        "owners": "owners: [Ana]\n",
    }
    sections.update(overrides)
    return "".join(sections.values())


@dataclass(frozen=True)
class Harm:
    """Planted effects of treatment."""

    latency_factor: float = 1.0
    error_factor: float = 1.0
    adds_lift: float = 0.0


def _ts(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def envelopes(users: int = 250, seed: int = 5, harm: Harm = Harm()) -> list[dict[str, Any]]:
    """The world's events (deterministic)."""
    rng = np.random.default_rng(seed)
    allocation = Allocation(EXPERIMENT, ("control", "treatment"), (1, 1))
    locale = rng.choice(len(LOCALES), size=users, p=SHARES)
    rate = rng.gamma(2.0, 0.5, size=users)  # sessions per day
    taste = rng.beta(2, 5, size=users)  # P(add) per session
    out: list[dict[str, Any]] = []
    experiment_start = START + timedelta(days=EXPERIMENT_DAY)

    def emit(user: int, event: str, ts: datetime, props: dict[str, Any]) -> None:
        out.append(
            {
                "messageId": f"m{len(out)}",
                "type": "track",
                "event": event,
                "userId": f"u{user:04d}",
                "timestamp": _ts(ts),
                "receivedAt": _ts(ts + timedelta(seconds=1)),
                "properties": props,
                "context": {"locale": LOCALES[locale[user]], "device": {"model": "web"}},
            }
        )

    arms = [assign(allocation, f"u{u:04d}").arm for u in range(users)]
    exposed = [False] * users
    for day in range(DAYS):
        for user in range(users):
            for _ in range(rng.poisson(rate[user])):
                ts = START + timedelta(days=day, seconds=float(rng.uniform(0, 86_000)))
                session = f"s{len(out)}"
                treated = False
                if ts >= experiment_start:
                    if not exposed[user]:
                        exposed[user] = True
                        emit(user, "$exposure", ts - timedelta(seconds=1),
                             {"experiment": EXPERIMENT, "variant": arms[user],
                              "unit_id": f"u{user:04d}"})  # fmt: skip
                    treated = arms[user] == "treatment"
                emit(user, "Session Started", ts, {"session_id": session})
                p_add = min(1.0, taste[user] * (1 + (harm.adds_lift if treated else 0.0)))
                if rng.random() < p_add:
                    emit(user, "Product Added", ts + timedelta(seconds=30),
                         {"session_id": session, "price": 10.0})  # fmt: skip
                for k in range(1 + rng.poisson(1.5)):
                    factor = harm.latency_factor if treated else 1.0
                    latency = math.exp(rng.normal(6.0, 0.3)) * factor
                    emit(user, "Turn Completed", ts + timedelta(seconds=5 + k),
                         {"session_id": session, "latency_ms": round(latency, 1)})  # fmt: skip
                p_error = 0.05 * (harm.error_factor if treated else 1.0)
                if rng.random() < p_error:
                    emit(user, "Checkout Error", ts + timedelta(seconds=60),
                         {"session_id": session, "stage": "payment"})  # fmt: skip
    return out


def build_lake(lake_dir: Path, *, users: int = 250, seed: int = 5, harm: Harm = Harm()) -> Path:
    """Write the world into ``lake_dir``; returns it."""
    write_events(lake_dir, envelopes(users, seed, harm))
    return lake_dir


def workspace_on(root: Path, lake_dir: Path | None, spec_text: str | None = None) -> Workspace:
    """A fresh workspace at ``root`` with the metrics and spec, reading ``lake_dir``
    (symlinked, so many tests share one lake while each has its own state database)."""
    ws = init_workspace(root)
    (ws.metrics_dir / "live.yaml").write_text(METRICS_YAML)
    (ws.experiments_dir / f"{EXPERIMENT}.yaml").write_text(spec_text or spec_yaml())
    if lake_dir is not None:
        ws.lake_dir.symlink_to(lake_dir, target_is_directory=True)
    return ws
