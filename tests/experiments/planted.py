"""Experiments with planted true effects, for analysis and decision tests.

Two ways to the same numbers:

* :func:`write_lake` writes the units' events (``$exposure``, ``Product Added``,
  ``Checkout Error``, with pre-period activity for CUPED) into a real lake with
  :func:`tripwire.store.lake.write_table`, for end-to-end tests through the engine;
* :func:`unit_stats_of` sums the same per-unit values straight into a
  :class:`~tripwire.metrics.unit_stats.UnitStats`, for the many-seed error-rate tests that
  would take too long through the lake.

The world: users in locales (``en-US`` 50%, ``de-DE`` 30%, ``ja-JP`` 20%), a user-level
activity rate (gamma) that drives both pre-period and in-experiment adds (so CUPED has a
covariate with ρ ≈ 0.5), the primary ``adds`` (Product Added per user) multiplied by
``1 + effect[locale]`` in treatment, and the guardrail ``errored`` (a user saw a Checkout
Error) multiplied by ``1 + error_effect``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tripwire.experiments.spec import ExperimentSpec, parse_spec
from tripwire.metrics.definitions import parse_metric
from tripwire.metrics.exposures import ExposureSummary
from tripwire.metrics.unit_stats import ALL, RESULT_SCHEMA, UnitStats
from tripwire.store.lake import ENVELOPE_FIELDS, PROPERTY_TYPES_FILE, events_dir, write_table

LOCALES = ("en-US", "de-DE", "ja-JP")
SHARES = (0.5, 0.3, 0.2)
START = datetime(2026, 3, 2, tzinfo=UTC)
EXPOSURE_DAYS = 7
PRE_DAYS = 7
BASE_ADDS = 1.0  # expected adds per user over the analysis window
BASE_ERROR = 0.10  # P(a user sees a checkout error)

METRICS = {
    "adds": parse_metric(
        {"name": "adds", "type": "mean", "per": "unit", "events": ["Product Added"]}
    ),
    "errored": parse_metric(
        {"name": "errored", "type": "proportion", "events": ["Checkout Error"]}
    ),
}
METRIC_TYPES = {name: str(m.type) for name, m in METRICS.items()}


@dataclass(frozen=True)
class Planted:
    """A planted truth: relative effect on adds per locale, on the error rate, and SRM."""

    adds: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(LOCALES, 0.0))
    errors: float = 0.0
    treatment_share: float = 0.5  # != 0.5 plants a sample-ratio mismatch

    @classmethod
    def uniform(cls, effect: float, errors: float = 0.0) -> Planted:
        return cls(dict.fromkeys(LOCALES, effect), errors)


@dataclass(frozen=True)
class Units:
    """Per-unit values of one simulated experiment."""

    arm: np.ndarray  # 0 control, 1 treatment
    locale: np.ndarray  # index into LOCALES
    t0: np.ndarray  # exposure time, seconds after START + PRE_DAYS
    adds: np.ndarray
    pre_adds: np.ndarray
    errored: np.ndarray
    pre_errored: np.ndarray


def simulate(n: int, planted: Planted, seed: int) -> Units:
    """Vectorised per-unit outcomes with the planted effects."""
    rng = np.random.default_rng(seed)
    arm = (rng.random(n) < planted.treatment_share).astype(np.int64)
    locale = rng.choice(len(LOCALES), size=n, p=SHARES)
    rate = rng.gamma(2.0, BASE_ADDS / 2.0, size=n)
    lift = np.array([planted.adds[name] for name in LOCALES])[locale]
    adds = rng.poisson(rate * (1.0 + arm * lift))
    pre_adds = rng.poisson(rate)
    p_error = np.clip(BASE_ERROR * (1.0 + arm * planted.errors), 0.0, 1.0)
    errored = (rng.random(n) < p_error).astype(np.int64)
    pre_errored = (rng.random(n) < BASE_ERROR).astype(np.int64)
    t0 = rng.uniform(0, EXPOSURE_DAYS * 86_400 - 3_600, size=n)
    return Units(arm, locale, t0, adds, pre_adds, errored, pre_errored)


def spec(**overrides: Any) -> ExperimentSpec:
    """The spec these experiments pre-register (fixed horizon unless overridden)."""
    data: dict[str, Any] = {
        "name": "planted",
        "arms": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}],
        "primary": {"metric": "adds", "mde": "5%"},
        "guardrails": [
            {"metric": "errored", "harm": "increase", "threshold": "10%"},
            {"metric": "adds", "name": "adds_by_locale", "harm": "decrease",
             "threshold": "-5%", "cohorts": ["locale"]},
        ],
        "cohorts": ["locale"],
    }  # fmt: skip
    data.update(overrides)
    return parse_spec(data)


# --------------------------------------------------------------------------- statistics


_NONE = ("y", "yy", "xy", "d", "dd", "cd", "xd", "yc", "yd")


def unit_stats_of(units: Units, *, cuped: bool = False, multi_arm: int = 0) -> UnitStats:
    """The :class:`UnitStats` the engine would return for these units (locale cohorts):
    per (arm, locale) cell sums by ``bincount``, rolled up to locale and overall rows."""
    cell = units.arm * len(LOCALES) + units.locale
    size = 2 * len(LOCALES)
    n = np.bincount(cell, minlength=size).reshape(2, -1)
    sums: dict[str, dict[str, np.ndarray]] = {}
    for metric, x, c in (
        ("adds", units.adds, units.pre_adds),
        ("errored", units.errored, units.pre_errored),
    ):
        xf, cf = x.astype(np.float64), c.astype(np.float64)
        moments = {"x": xf, "xx": xf * xf, "c": cf, "cc": cf * cf, "xc": xf * cf}
        sums[metric] = {
            k: np.bincount(cell, weights=v, minlength=size).reshape(2, -1)
            for k, v in moments.items()
        }
    rows: list[dict[str, Any]] = []
    for a, arm in enumerate(("control", "treatment")):
        cells = [(ALL, ALL, slice(None))] + [
            ("locale", name, slice(i, i + 1)) for i, name in enumerate(LOCALES)
        ]
        for dimension, value, part in cells:
            for metric in ("adds", "errored"):
                m = sums[metric]
                row: dict[str, Any] = {"metric": metric, "arm": arm, "dimension": dimension}
                row |= {"value": value, "kind": "mean", "n": int(n[a, part].sum())}
                row |= {"zero_den": None} | {f"sum_{k}": None for k in _NONE}
                for k in ("x", "xx", "c", "cc", "xc"):
                    use = k in ("x", "xx") or cuped
                    row[f"sum_{k}"] = float(m[k][a, part].sum()) if use else None
                rows.append(row)
    per_arm = {"control": int(n[0].sum()), "treatment": int(n[1].sum())}
    summary = ExposureSummary("planted", per_arm, multi_arm, START, START)
    table = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
    return UnitStats("planted", summary, table, ("locale",))


def subset(units: Units, mask: np.ndarray) -> Units:
    """The units selected by ``mask`` (e.g. those exposed before a look's cut-off)."""
    return Units(*(getattr(units, f)[mask] for f in Units.__dataclass_fields__))


# --------------------------------------------------------------------------- the lake


def write_lake(lake_dir: Path, units: Units, *, experiment: str = "planted") -> date:
    """Write the units' events into ``lake_dir``; returns the last day with data."""
    n = units.arm.size
    origin = START + timedelta(days=PRE_DAYS)
    ids = np.array([f"u{i}" for i in range(n)], dtype=object)
    locales = np.array(LOCALES, dtype=object)[units.locale]
    t0 = units.t0
    rng = np.random.default_rng(int(n))
    columns: dict[str, list[np.ndarray]] = {
        k: [] for k in ("event", "user", "ts", "locale", "exp", "variant")
    }

    def add(event: str, index: np.ndarray, seconds: np.ndarray, with_variant: bool = False) -> None:
        columns["event"].append(np.full(index.size, event, dtype=object))
        columns["user"].append(ids[index])
        columns["ts"].append(seconds)
        columns["locale"].append(locales[index])
        columns["exp"].append(
            np.full(index.size, experiment if with_variant else None, dtype=object)
        )
        variant = np.array(["control", "treatment"], dtype=object)[units.arm[index]]
        columns["variant"].append(
            variant if with_variant else np.full(index.size, None, dtype=object)
        )

    everyone = np.arange(n)
    add("$exposure", everyone, t0, with_variant=True)
    # in-experiment events: within 3 days after exposure (all before the last day's end)
    for event, counts in (("Product Added", units.adds), ("Checkout Error", units.errored)):
        index = np.repeat(everyone, counts)
        add(event, index, t0[index] + 60 + rng.uniform(0, 3 * 86_400, index.size))
    # pre-period events: in the PRE_DAYS whole days before the exposure day
    for event, counts in (("Product Added", units.pre_adds), ("Checkout Error", units.pre_errored)):
        index = np.repeat(everyone, counts)
        day0 = np.floor(t0[index] / 86_400) * 86_400
        add(event, index, day0 - rng.uniform(1, PRE_DAYS * 86_400 - 1, index.size))
    seconds = np.concatenate(columns["ts"])
    stamps = np.datetime64(origin.replace(tzinfo=None), "us") + (seconds * 1e6).astype(
        "timedelta64[us]"
    )
    size = seconds.size
    table = pa.table(
        {
            "message_id": pa.array([f"m{i}" for i in range(size)]),
            "type": pa.array(["track"] * size),
            "event": pa.array(np.concatenate(columns["event"]).tolist()),
            "user_id": pa.array(np.concatenate(columns["user"]).tolist()),
            "timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC")),
            "received_at": pa.array(stamps, pa.timestamp("us", tz="UTC")),
            "locale": pa.array(np.concatenate(columns["locale"]).tolist()),
            "prop_experiment": pa.array(np.concatenate(columns["exp"]).tolist(), pa.string()),
            "prop_variant": pa.array(np.concatenate(columns["variant"]).tolist(), pa.string()),
        }
    )
    full = {f.name: pa.nulls(size, f.type) for f in ENVELOPE_FIELDS}
    full |= {name: table[name] for name in table.column_names}
    write_table(lake_dir, pa.table(full), file_id=experiment)
    types = events_dir(lake_dir) / PROPERTY_TYPES_FILE
    types.parent.mkdir(parents=True, exist_ok=True)
    types.write_text(json.dumps({"prop_experiment": "string", "prop_variant": "string"}))
    last = origin + timedelta(seconds=float(seconds.max()))
    return last.date()
