"""The series a monitor watches: which segments, and their per-tick numbers as arrays.

A monitor watches the aggregate (series 0) and every combination of its segment dimensions
of size 1..``depth`` whose values carry at least ``min_volume`` per hour over a reference
window (:func:`discover_segments`). :func:`fetch_ticks` computes, with the metrics layer
(:func:`tripwire.metrics.timeseries.timeseries`; the heavy work stays in the engine), one
row per grain bucket and one column per series: numerator, denominator, value and volume.
The same function reads the lake (backfill) and an in-memory table of buffered events
(streaming), so both modes see identical numbers.

Per metric type: counts, sums and distinct counts are values with missing buckets = 0;
ratios, proportions and event means are numerator/denominator pairs (missing = 0/0, which
the detector treats as no data); quantiles are values (missing = NaN) with their event
count as volume.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from ibis.backends import BaseBackend
from numpy.typing import NDArray

from tripwire.metrics.compile import OTHER
from tripwire.metrics.definitions import MetricBase, RatioMetric
from tripwire.metrics.timeseries import Query, timeseries
from tripwire.monitor.definitions import MonitorSpec

Segment = dict[str, str]
ADDITIVE = ("count", "sum", "distinct")


def detector_kind(metric: MetricBase) -> str:
    """``proportion`` for a share, ``ratio`` for other ratios and means, ``value`` for
    counts, sums and quantiles.

    A ratio is a share (binomial: each denominator unit is in the numerator or not) when it
    counts a subset of its denominator's events, or when both sides count distinct values of
    the same unit (sessions with an order / sessions with an utterance). Shares are judged
    against their binomial noise (:mod:`tripwire.monitor.detectors`), so a thin slice's
    hour of three sessions cannot page.

    >>> from tripwire.metrics.definitions import parse_metric
    >>> detector_kind(parse_metric({"name": "conv", "type": "ratio",
    ...     "numerator": {"events": ["Order Completed"], "agg": "distinct", "value": "session_id"},
    ...     "denominator": {"events": ["Voice Utterance"], "agg": "distinct", "value": "session_id"}}))
    'proportion'
    """
    if isinstance(metric, RatioMetric):
        num, den = metric.numerator, metric.denominator
        subset = num.events == den.events and num.agg == den.agg == "count"
        units = num.agg == den.agg == "distinct" and num.value == den.value
        return "proportion" if (subset and bool(den.events)) or units else "ratio"
    if metric.type in ("mean", "proportion"):
        return "ratio"
    return "value"


def counts_numerator(metric: MetricBase) -> bool:
    """Whether a ratio's numerator is a count (events or distinct units), so its value
    moves in steps of one count (the detector's noise floor for ratios)."""
    return isinstance(metric, RatioMetric) and metric.numerator.agg in ("count", "distinct")


def combos(monitor: MonitorSpec) -> list[tuple[str, ...]]:
    """Dimension combinations watched: ``()`` (aggregate) then sizes 1..depth."""
    dims = monitor.segments.dimensions
    out: list[tuple[str, ...]] = [()]
    for size in range(1, min(monitor.segments.depth, len(dims)) + 1):
        out += list(itertools.combinations(dims, size))
    return out


def _query(
    monitor: MonitorSpec,
    dims: tuple[str, ...],
    start: datetime,
    end: datetime,
    values: dict[str, tuple[str, ...]] | None,
    grain: str | None,
) -> Query:
    return Query(
        grain=grain,  # type: ignore[arg-type]
        dimensions=dims,
        start=start,
        end=end,
        top_n=None if values is not None else monitor.segments.top_n,
        dimension_values=values,
    )


def _volume(table: pa.Table, metric: MetricBase) -> pa.Array:
    column = "numerator" if metric.type in ADDITIVE else "denominator"
    return pc.fill_null(table[column], 0.0)


@dataclass(frozen=True)
class Ticks:
    """Per-bucket arrays of shape ``(n_ticks, n_series)``; ``timestamps`` in epoch seconds."""

    timestamps: NDArray[np.int64]
    numerators: NDArray[np.float64]
    denominators: NDArray[np.float64]
    values: NDArray[np.float64]
    volumes: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.timestamps.size)


def _tables(
    backend: BaseBackend,
    monitor: MonitorSpec,
    metric: MetricBase,
    start: datetime,
    end: datetime,
    segments: Sequence[Segment] | None,
) -> list[tuple[tuple[str, ...], pa.Table]]:
    """One grain × dimensions table per watched combination (restricted to ``segments``'
    values when given, else each dimension's top values)."""
    if segments is None:
        wanted = [tuple(sorted(c)) for c in combos(monitor)]
        kept: dict[tuple[str, ...], dict[str, tuple[str, ...]] | None] = {d: None for d in wanted}
    else:
        members: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
        for segment in segments:
            dims = tuple(sorted(segment))
            members.setdefault(dims, set()).add(tuple(segment[d] for d in dims))
        kept = {
            dims: (
                {d: tuple(sorted({k[i] for k in keys})) for i, d in enumerate(dims)}
                if dims
                else None
            )
            for dims, keys in members.items()
        }
    out = []
    for dims, values in kept.items():
        query = _query(monitor, tuple(dims), start, end, values, monitor.grain)
        if not dims:
            query = Query(grain=monitor.grain, start=start, end=end)  # type: ignore[arg-type]
        out.append((tuple(dims), timeseries(backend, [metric], query)[metric.name].table))
    return out


def _epoch_buckets(table: pa.Table) -> NDArray[np.int64]:
    return np.asarray(
        pc.cast(table["bucket"], pa.timestamp("s", tz="UTC")).cast(pa.int64()).to_numpy(),
        dtype=np.int64,
    )


def _key_codes(
    table: pa.Table, dims: tuple[str, ...]
) -> tuple[NDArray[np.int64], list[tuple[str, ...]]]:
    """Each row's segment key as a code into the distinct keys (values as ``str``, null ``""``).

    Dictionary-encoded per dimension, so only the distinct values go through Python (a
    minute-grain table of two weeks holds over a million rows).
    """
    rows = table.num_rows
    if not dims:
        return np.zeros(rows, dtype=np.int64), [()]
    codes = np.zeros(rows, dtype=np.int64)
    names: list[list[str]] = []
    for d in dims:
        encoded = pc.dictionary_encode(table[d]).combine_chunks()
        values = ["" if v is None else str(v) for v in encoded.dictionary.to_pylist()]
        index = pc.fill_null(encoded.indices, len(values)).to_numpy(zero_copy_only=False)
        names.append([*values, ""])  # the last entry stands for null
        codes = codes * len(names[-1]) + index.astype(np.int64)
    distinct, inverse = np.unique(codes, return_inverse=True)
    keys = []
    for code in distinct.tolist():
        parts = []
        for values in reversed(names):
            code, i = divmod(code, len(values))
            parts.append(values[i])
        keys.append(tuple(reversed(parts)))
    return inverse.astype(np.int64).reshape(-1), keys


def _fill(
    tables: list[tuple[tuple[str, ...], pa.Table]],
    metric: MetricBase,
    segments: Sequence[Segment],
    first: int,
    n_ticks: int,
    step: int,
) -> Ticks:
    additive = metric.type in ADDITIVE
    n_series = len(segments)
    num = np.zeros((n_ticks, n_series))
    den = np.zeros((n_ticks, n_series))
    val = np.full((n_ticks, n_series), 0.0 if additive else np.nan)
    index = {(tuple(sorted(s)), tuple(s[d] for d in sorted(s))): i for i, s in enumerate(segments)}
    for dims, table in tables:
        if table.num_rows == 0 or n_ticks == 0:
            continue
        rows = (_epoch_buckets(table) - first) // step
        codes, keys = _key_codes(table, dims)
        lookup = np.array([index.get((dims, k), -1) for k in keys], dtype=np.int64)
        series = lookup[codes]
        ok = (series >= 0) & (rows >= 0) & (rows < n_ticks)
        r, s = rows[ok], series[ok]
        num[r, s] = pc.fill_null(table["numerator"], 0.0).to_numpy(zero_copy_only=False)[ok]
        den[r, s] = pc.fill_null(table["denominator"], 0.0).to_numpy(zero_copy_only=False)[ok]
        val[r, s] = pc.fill_null(table["value"], np.nan).to_numpy(zero_copy_only=False)[ok]
    volume = num if additive else den
    stamps = first + step * np.arange(n_ticks, dtype=np.int64)
    return Ticks(stamps, num, den, val, volume.copy())


def _span(monitor: MonitorSpec, start: datetime, end: datetime) -> tuple[int, int]:
    step = monitor.step_seconds
    first, stop = int(start.timestamp()), int(end.timestamp())
    if first % step or stop % step:
        raise ValueError(f"start and end must fall on {monitor.grain} boundaries: {start}, {end}")
    return first, max(0, (stop - first) // step)


def fetch_ticks(
    backend: BaseBackend,
    monitor: MonitorSpec,
    metric: MetricBase,
    segments: Sequence[Segment],
    start: datetime,
    end: datetime,
) -> Ticks:
    """The watched series over ``[start, end)`` (both on the grain), one row per bucket."""
    first, n_ticks = _span(monitor, start, end)
    tables = _tables(backend, monitor, metric, start, end, segments)
    return _fill(tables, metric, segments, first, n_ticks, monitor.step_seconds)


def discover_and_fetch(
    backend: BaseBackend,
    monitor: MonitorSpec,
    metric: MetricBase,
    start: datetime,
    end: datetime,
    reference_end: datetime,
) -> tuple[list[Segment], Ticks]:
    """Segments meeting the volume floor over ``[start, reference_end)`` and their series
    over ``[start, end)``, with one query per dimension combination.

    Slices come ordered by combination, then volume (largest first). The volume floor is
    ``segments.min_volume`` per hour, averaged over the reference window.
    """
    first, n_ticks = _span(monitor, start, end)
    step = monitor.step_seconds
    tables = _tables(backend, monitor, metric, start, end, None)
    ref = int(reference_end.timestamp())
    hours = max((ref - first) / 3600.0, 1e-9)
    segments: list[Segment] = [{}]
    for dims, table in tables:
        if not dims or table.num_rows == 0:
            continue
        in_ref = _epoch_buckets(table) < ref
        volume = np.asarray(_volume(table, metric).to_numpy(zero_copy_only=False), float)
        codes, keys = _key_codes(table, dims)
        sums = np.bincount(codes[in_ref], weights=volume[in_ref], minlength=len(keys))
        seen = np.bincount(codes[in_ref], minlength=len(keys)) > 0
        totals = {keys[i]: float(sums[i]) for i in np.flatnonzero(seen)}
        for key, total in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])):
            if "" in key or OTHER in key or total <= 0:
                continue
            if total / hours >= monitor.segments.min_volume:
                segments.append(dict(zip(dims, key, strict=True)))
    return segments, _fill(tables, metric, segments, first, n_ticks, step)


def clip_shares(ticks: Ticks) -> Ticks:
    """Numerators capped at their denominators, for a share's detector.

    A share of distinct units can count a unit in a bucket's numerator whose denominator
    event fell in the previous bucket (an order at 18:01 of a session whose utterances ended
    at 17:59); the binomial model needs ``x ≤ n`` per bucket, so the excess is dropped (it
    is at most the handful of units straddling a bucket edge).
    """
    if not np.any(ticks.numerators > ticks.denominators):
        return ticks
    num = np.minimum(ticks.numerators, ticks.denominators)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(ticks.denominators > 0, num / ticks.denominators, ticks.values)
    return Ticks(ticks.timestamps, num, ticks.denominators, values, ticks.volumes)


def split(ticks: Ticks, at: int) -> tuple[Ticks, Ticks]:
    """The ticks before index ``at`` and from it on."""

    def part(sl: slice) -> Ticks:
        return Ticks(
            ticks.timestamps[sl],
            ticks.numerators[sl],
            ticks.denominators[sl],
            ticks.values[sl],
            ticks.volumes[sl],
        )

    return part(slice(0, at)), part(slice(at, None))


def segment_label(segment: Segment) -> str:
    """``locale=en-GB × device=Echo Show`` (``(all)`` for the aggregate)."""
    return " × ".join(f"{k}={v}" for k, v in segment.items()) or "(all)"
