"""Scoring detectors on labelled series, and a generator of synthetic labelled series.

Input format (the NAB / Yahoo S5 conventions, so public benchmarks load as they are):
a directory of CSV files with a header ``timestamp,value`` (ISO-8601 UTC or integer epoch
seconds), optionally ``numerator,denominator`` (then value = numerator/denominator is scored
as a proportion) and optionally ``is_anomaly``/``label`` (0/1, turned into windows when no
labels file names the series); labels in ``labels.json`` (or ``combined_windows.json``):
``{"<file>.csv": [["<start>", "<end>"], ...]}``, keyed by path relative to the directory,
file name or stem.

Scoring per series (after a probation period used for calibration, as in NAB):
per-window detection (first alarm inside the window), detection delay, false alarms per
day (alarms outside every window), and the NAB score (Lavin & Ahmad 2015, "Evaluating
Real-time Anomaly Detection Algorithms — the Numenta Anomaly Benchmark", IEEE ICMLA): a
detection at relative position ``y`` of a window (−1 = start, 0 = end) earns
``A_TP · σ(y)`` with ``σ(y) = 2/(1+e^{5y}) − 1``; a false positive costs ``A_FP · σ(y)``
(``y`` its distance after the preceding window's end in window lengths, −1 with no preceding
window); a missed window costs ``A_FN``. Totals are normalised to 0 (null detector) .. 100
(detects every window at its start).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from tripwire.monitor.baselines import DAY_SECONDS, BaselineSettings
from tripwire.monitor.calibration import calibrate
from tripwire.monitor.detectors import DetectorConfig, MetricKind

Window = tuple[int, int]  # epoch seconds, inclusive


@dataclass(frozen=True)
class NabProfile:
    """Weights of the NAB score (the "standard" and "reward_low_FP" application profiles)."""

    name: str
    tp: float
    fp: float
    fn: float


NAB_STANDARD = NabProfile("standard", tp=1.0, fp=0.11, fn=1.0)
NAB_LOW_FP = NabProfile("reward_low_FP", tp=1.0, fp=0.22, fn=1.0)


def scaled_sigmoid(y: float) -> float:
    """NAB's ``σ(y) = 2/(1+e^{5y}) − 1`` (clamped to −1 far after a window).

    >>> round(scaled_sigmoid(-1.0), 4), scaled_sigmoid(0.0)
    (0.9866, 0.0)
    """
    if y > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


@dataclass(frozen=True)
class LabelledSeries:
    """One series with its anomaly windows (epoch seconds); proportions carry counts."""

    name: str
    timestamps: NDArray[np.int64]
    values: NDArray[np.float64]
    windows: tuple[Window, ...]
    numerators: NDArray[np.float64] | None = None
    denominators: NDArray[np.float64] | None = None
    description: str = ""

    @property
    def kind(self) -> MetricKind:
        return "value" if self.denominators is None else "proportion"


@dataclass(frozen=True)
class WindowResult:
    start: int
    end: int
    detected: bool
    delay_seconds: float | None


@dataclass(frozen=True)
class SeriesScore:
    """Scores of one detector on one series (alarms counted after probation only)."""

    name: str
    windows: tuple[WindowResult, ...]
    alarms: int
    false_alarms: int
    days: float
    nab_raw: float
    nab_null: float
    nab_perfect: float
    alarm_timestamps: tuple[int, ...] = ()

    @property
    def false_alarms_per_day(self) -> float:
        return self.false_alarms / self.days if self.days > 0 else 0.0


@dataclass(frozen=True)
class EvaluationReport:
    """Scores over a set of series; ``nab_score`` normalised 0 (no detections) … 100 (perfect)."""

    detector: str
    profile: NabProfile
    series: tuple[SeriesScore, ...]

    @property
    def windows(self) -> int:
        return sum(len(s.windows) for s in self.series)

    @property
    def detected(self) -> int:
        return sum(w.detected for s in self.series for w in s.windows)

    @property
    def median_delay_seconds(self) -> float | None:
        delays = [
            w.delay_seconds for s in self.series for w in s.windows if w.delay_seconds is not None
        ]
        return float(np.median(delays)) if delays else None

    @property
    def false_alarms_per_day(self) -> float:
        days = sum(s.days for s in self.series)
        return sum(s.false_alarms for s in self.series) / days if days else 0.0

    @property
    def nab_score(self) -> float:
        raw = sum(s.nab_raw for s in self.series)
        null = sum(s.nab_null for s in self.series)
        perfect = sum(s.nab_perfect for s in self.series)
        return 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0


def score_alarms(
    name: str,
    timestamps: NDArray[np.int64],
    alarm_timestamps: Sequence[int],
    windows: Sequence[Window],
    *,
    probation_end: int,
    profile: NabProfile = NAB_STANDARD,
) -> SeriesScore:
    """Score alarm times against windows (alarms before ``probation_end`` are ignored).

    >>> ts = np.arange(0, 100 * 60, 60)
    >>> s = score_alarms("x", ts, [1200, 4000], [(1140, 1740)], probation_end=600)
    >>> s.windows[0].delay_seconds, s.false_alarms, round(s.nab_raw, 3)
    (60.0, 1, 0.868)
    """
    alarms = sorted(int(a) for a in alarm_timestamps if a >= probation_end)
    ordered = sorted((int(a), int(b)) for a, b in windows)
    results: list[WindowResult] = []
    raw = 0.0
    in_window: set[int] = set()
    for start, end in ordered:
        inside = [a for a in alarms if start <= a <= end]
        in_window.update(inside)
        length = max(end - start, 1)
        if inside:
            first = inside[0]
            results.append(WindowResult(start, end, True, float(first - start)))
            raw += profile.tp * scaled_sigmoid((first - end) / length)
        else:
            results.append(WindowResult(start, end, False, None))
            raw -= profile.fn
    false_alarms = 0
    for a in alarms:
        if a in in_window:
            continue
        false_alarms += 1
        before = [(s, e) for s, e in ordered if e < a]
        if before:
            s, e = before[-1]
            raw += profile.fp * scaled_sigmoid((a - e) / max(e - s, 1))
        else:
            raw -= profile.fp
    span = (
        float(timestamps[-1] - max(probation_end, int(timestamps[0]))) if timestamps.size else 0.0
    )
    return SeriesScore(
        name=name,
        windows=tuple(results),
        alarms=len(alarms),
        false_alarms=false_alarms,
        days=max(span, 0.0) / DAY_SECONDS,
        nab_raw=raw,
        nab_null=-profile.fn * len(ordered),
        nab_perfect=profile.tp * scaled_sigmoid(-1.0) * len(ordered),
        alarm_timestamps=tuple(alarms),
    )


# -- detectors by name ------------------------------------------------------------------------

DETECTORS: dict[str, Callable[[MetricKind, int], DetectorConfig]] = {
    "cusum": lambda kind, step: DetectorConfig(
        method="cusum", kind=kind, baseline=BaselineSettings(step_seconds=step)
    ),
    "ewma": lambda kind, step: DetectorConfig(
        method="ewma", kind=kind, baseline=BaselineSettings(step_seconds=step)
    ),
}


def infer_step_seconds(timestamps: NDArray[np.int64]) -> int:
    """Sampling interval: the median gap between consecutive timestamps (≥ 1 s)."""
    if timestamps.size < 2:
        raise ValueError("need at least two timestamps to infer the sampling interval")
    return max(1, int(np.median(np.diff(timestamps))))


def run_detector(
    series: Sequence[LabelledSeries],
    detector: str = "cusum",
    *,
    probation_fraction: float = 0.15,
    false_alarms_per_day: float = 1.0 / 30.0,
    seed: int = 0,
) -> tuple[list[list[int]], int]:
    """Calibrate on the probation period, stream the rest.

    ``series`` must share timestamps and kind (they run side by side in one bank).
    Returns the alarm timestamps per series and the end of probation.
    """
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; choose from {sorted(DETECTORS)}")
    first = series[0]
    ts = first.timestamps
    if any(s.kind != first.kind or not np.array_equal(s.timestamps, ts) for s in series):
        raise ValueError("series run together must share kind and timestamps")
    step = infer_step_seconds(ts)
    config = DETECTORS[detector](first.kind, step)
    cut = max(int(len(ts) * probation_fraction), 20)
    if cut >= len(ts):
        raise ValueError(f"{first.name}: {len(ts)} points is too short to evaluate")
    probation_seconds = int(ts[cut - 1] - ts[0])
    config = replace(config, warmup_seconds=min(config.warmup_seconds, probation_seconds // 2))

    def stack(name: str) -> NDArray[np.float64] | None:
        cols = [getattr(s, name) for s in series]
        return None if cols[0] is None else np.stack(cols, axis=1)

    values, nums, dens = stack("values"), stack("numerators"), stack("denominators")
    is_value = first.kind == "value"
    head = slice(0, cut)
    tail = slice(cut, None)

    def part(a: NDArray[np.float64] | None, sl: slice) -> NDArray[np.float64] | None:
        return None if a is None else a[sl]

    run = calibrate(
        config,
        ts[head],
        part(values, head) if is_value else None,
        part(nums, head),
        part(dens, head),
        false_alarms_per_day=false_alarms_per_day,
        seed=seed,
    )
    out = run.bank.run_batch(
        ts[tail], part(values, tail) if is_value else None, part(nums, tail), part(dens, tail)
    )
    alarms = [[int(t) for t in out.timestamps[out.fired[:, j]]] for j in range(len(series))]
    return alarms, int(ts[cut])


def evaluate(
    series: Sequence[LabelledSeries],
    detector: str = "cusum",
    *,
    profile: NabProfile = NAB_STANDARD,
    probation_fraction: float = 0.15,
    false_alarms_per_day: float = 1.0 / 30.0,
    seed: int = 0,
) -> EvaluationReport:
    """Run ``detector`` on every series (calibrated on its probation period) and score it.

    Series that share timestamps and kind are run side by side in one bank (same results,
    faster); every series is calibrated on its own history.
    """
    groups: dict[tuple[str, bytes], list[int]] = {}
    for i, s in enumerate(series):
        groups.setdefault((s.kind, s.timestamps.tobytes()), []).append(i)
    scores: dict[int, SeriesScore] = {}
    for members in groups.values():
        group = [series[i] for i in members]
        alarms, probation_end = run_detector(
            group,
            detector,
            probation_fraction=probation_fraction,
            false_alarms_per_day=false_alarms_per_day,
            seed=seed,
        )
        for i, s, a in zip(members, group, alarms, strict=True):
            scores[i] = score_alarms(
                s.name, s.timestamps, a, s.windows, probation_end=probation_end, profile=profile
            )
    return EvaluationReport(
        detector=detector, profile=profile, series=tuple(scores[i] for i in range(len(series)))
    )


# -- reading and writing series directories -----------------------------------------------------


def _parse_timestamp(text: str, where: str) -> int:
    text = text.strip()
    try:
        return int(float(text)) if text.replace(".", "", 1).lstrip("-").isdigit() else _iso(text)
    except ValueError as error:
        raise ValueError(f"{where}: bad timestamp {text!r} ({error})") from None


def _iso(text: str) -> int:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def _iso_out(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def read_series_csv(path: Path, windows: Sequence[Window] | None = None) -> LabelledSeries:
    """Read one CSV; windows from ``windows`` or else from an ``is_anomaly``/``label`` column."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        if "timestamp" not in fields or not (
            {"value"} <= set(fields) or {"numerator", "denominator"} <= set(fields)
        ):
            raise ValueError(
                f"{path}: line 1: header must have timestamp and value "
                f"(or numerator,denominator); got {fields}"
            )
        label_col = next((c for c in ("is_anomaly", "label") if c in fields), None)
        has_counts = {"numerator", "denominator"} <= set(fields)
        ts, vals, nums, dens, flags = [], [], [], [], []
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            ts.append(_parse_timestamp(row["timestamp"], f"{path}: line {line}: timestamp"))
            try:
                if has_counts:
                    nums.append(float(row["numerator"]) if row["numerator"] else math.nan)
                    dens.append(float(row["denominator"]) if row["denominator"] else math.nan)
                    vals.append(nums[-1] / dens[-1] if dens[-1] and dens[-1] > 0 else math.nan)
                else:
                    vals.append(float(row["value"]) if row["value"] else math.nan)
                if label_col:
                    flags.append(int(float(row[label_col] or 0)))
            except ValueError as error:
                raise ValueError(f"{path}: line {line}: {error}") from None
    stamps = np.asarray(ts, dtype=np.int64)
    if stamps.size < 2:
        raise ValueError(f"{path}: fewer than two rows")
    if np.any(np.diff(stamps) <= 0):
        bad = int(np.argmax(np.diff(stamps) <= 0))
        raise ValueError(f"{path}: line {bad + 3}: timestamps must strictly increase")
    if windows is None:
        windows = _windows_from_flags(stamps, np.asarray(flags)) if label_col else ()
    return LabelledSeries(
        name=path.name,
        timestamps=stamps,
        values=np.asarray(vals, float),
        windows=tuple(windows),
        numerators=np.asarray(nums, float) if has_counts else None,
        denominators=np.asarray(dens, float) if has_counts else None,
    )


def _windows_from_flags(ts: NDArray[np.int64], flags: NDArray[np.int64]) -> list[Window]:
    out: list[Window] = []
    start = None
    for i, f in enumerate(flags):
        if f and start is None:
            start = i
        if not f and start is not None:
            out.append((int(ts[start]), int(ts[i - 1])))
            start = None
    if start is not None:
        out.append((int(ts[start]), int(ts[-1])))
    return out


def load_series_dir(directory: Path, labels: Path | None = None) -> list[LabelledSeries]:
    """Load every ``*.csv`` under ``directory`` with windows from the labels JSON."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{directory}: not a directory")
    label_file = labels or next(
        (
            directory / n
            for n in ("labels.json", "combined_windows.json")
            if (directory / n).exists()
        ),
        None,
    )
    table: dict[str, list[Window]] = {}
    if label_file is not None:
        try:
            raw = json.loads(Path(label_file).read_text())
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{label_file}: line {error.lineno}: invalid JSON ({error.msg})"
            ) from None
        if not isinstance(raw, dict):
            raise ValueError(f"{label_file}: expected an object of series → windows")
        for key, wins in raw.items():
            parsed = []
            for j, w in enumerate(wins):
                if not isinstance(w, list | tuple) or len(w) != 2:
                    raise ValueError(f"{label_file}: {key}[{j}]: a window is [start, end]")
                a = _parse_timestamp(str(w[0]), f"{label_file}: {key}[{j}][0]")
                b = _parse_timestamp(str(w[1]), f"{label_file}: {key}[{j}][1]")
                if b < a:
                    raise ValueError(f"{label_file}: {key}[{j}]: end before start")
                parsed.append((a, b))
            table[key] = parsed
    files = sorted(p for p in directory.rglob("*.csv"))
    if not files:
        raise ValueError(f"{directory}: no .csv files")
    out = []
    for path in files:
        rel = path.relative_to(directory).as_posix()
        wins = next((table[k] for k in (rel, path.name, path.stem) if k in table), None)
        out.append(replace(read_series_csv(path, wins), name=rel))
    return out


def write_series_dir(directory: Path, series: Sequence[LabelledSeries]) -> None:
    """Write series as CSVs plus ``labels.json`` (the format :func:`load_series_dir` reads)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    labels: dict[str, list[list[str]]] = {}
    for s in series:
        path = directory / (s.name if s.name.endswith(".csv") else f"{s.name}.csv")
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            if s.denominators is None:
                writer.writerow(["timestamp", "value"])
                for t, v in zip(s.timestamps, s.values, strict=True):
                    writer.writerow([_iso_out(int(t)), "" if math.isnan(v) else repr(float(v))])
            else:
                assert s.numerators is not None
                writer.writerow(["timestamp", "value", "numerator", "denominator"])
                for t, v, a, b in zip(
                    s.timestamps, s.values, s.numerators, s.denominators, strict=True
                ):
                    writer.writerow(
                        [
                            _iso_out(int(t)),
                            "" if math.isnan(v) else repr(float(v)),
                            "" if math.isnan(a) else int(a),
                            "" if math.isnan(b) else int(b),
                        ]
                    )
        labels[path.name] = [[_iso_out(a), _iso_out(b)] for a, b in s.windows]
    (directory / "labels.json").write_text(json.dumps(labels, indent=1))


# -- synthetic labelled series ---------------------------------------------------------------

SHAPES = ("level_drop", "level_rise", "spike", "variance", "proportion_drop", "low_traffic", "none")


@dataclass(frozen=True)
class GeneratorSettings:
    """Knobs of :func:`generate_labelled_series` (defaults: 14 days of minute data)."""

    days: float = 14.0
    step_seconds: int = 60
    start: int = 1_767_225_600  # 2026-01-01 00:00 UTC
    site_sessions_per_minute: float = 2000.0
    segment_share: float = 0.05
    window_seconds: int = 2 * 3600
    missing_fraction: float = 0.01
    shapes: tuple[str, ...] = field(default=SHAPES)


def generate_labelled_series(
    seed: int, n_series: int = 7, settings: GeneratorSettings | None = None
) -> list[LabelledSeries]:
    """Synthetic labelled series of varied shapes, one anomaly (or none) each, seeded.

    Every series has a daily (and weekly) pattern of random strength, a slow trend, noise,
    ~1% missing points in short gaps, and one anomaly after the first 30% of the data:
    ``level_drop``/``level_rise`` (a 3–6σ persistent shift), ``spike`` (one 8σ point),
    ``variance`` (σ ×4 for two hours), ``proportion_drop`` (conversion 22% → −25% relative
    for a segment with ``segment_share`` of ``site_sessions_per_minute``), ``low_traffic``
    (a proportion at ~2 sessions/min at night, 0.4 by day: labelled with no window, must not
    page), ``none``. Shapes cycle through ``settings.shapes``.
    """
    cfg = settings or GeneratorSettings()
    rng = np.random.default_rng(seed)
    steps = int(cfg.days * DAY_SECONDS / cfg.step_seconds)
    ts = cfg.start + np.arange(steps, dtype=np.int64) * cfg.step_seconds
    tod = (ts % DAY_SECONDS) / DAY_SECONDS
    dow = ((ts // DAY_SECONDS) + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    daily_shape = np.sin(2 * np.pi * (tod - 0.3))  # peak mid-afternoon, trough at night
    weekend = (dow >= 5).astype(float)
    out: list[LabelledSeries] = []
    for i in range(n_series):
        shape = cfg.shapes[i % len(cfg.shapes)]
        onset = int(rng.integers(int(0.35 * steps), int(0.9 * steps)))
        windows: list[Window] = []
        nums = dens = None
        if shape in ("proportion_drop", "low_traffic"):
            base_traffic = (
                (
                    cfg.site_sessions_per_minute * cfg.segment_share
                    if shape == "proportion_drop"
                    else 1.0
                )
                * cfg.step_seconds
                / 60.0
            )
            traffic = base_traffic * (1.0 + 0.6 * daily_shape) * (1.0 - 0.15 * weekend)
            p = 0.22 * (1.0 + 0.05 * daily_shape)
            if shape == "proportion_drop":
                onset = _daytime(ts, onset)
                end = min(steps, onset + int(rng.integers(60, 240) * 60 / cfg.step_seconds))
                p = p.copy()
                p[onset:end] *= 0.75
                windows.append((int(ts[onset]), int(ts[onset]) + cfg.window_seconds))
            dens = rng.poisson(traffic).astype(float)
            nums = rng.binomial(dens.astype(np.int64), p).astype(float)
            with np.errstate(invalid="ignore", divide="ignore"):
                values = np.where(dens > 0, nums / np.maximum(dens, 1), np.nan)
            description = f"{shape}: proportion at ~{base_traffic:.0f} sessions/step"
        else:
            level = float(rng.uniform(50, 500))
            sigma = level * float(rng.uniform(0.01, 0.05))
            amp_d = sigma * float(rng.choice([0.0, 2.0, 8.0]))
            amp_w = sigma * float(rng.choice([0.0, 3.0]))
            trend = sigma * float(rng.uniform(-1, 1)) * np.arange(steps) / steps
            noise = rng.standard_normal(steps) * sigma
            values = level + amp_d * daily_shape - amp_w * weekend + trend + noise
            if shape in ("level_drop", "level_rise"):
                sign = -1.0 if shape == "level_drop" else 1.0
                values[onset:] += sign * float(rng.uniform(3, 6)) * sigma
                windows.append((int(ts[onset]), int(ts[onset]) + cfg.window_seconds))
            elif shape == "spike":
                values[onset] += float(rng.choice([-1, 1])) * 8 * sigma
                windows.append((int(ts[onset]), int(ts[onset]) + cfg.window_seconds))
            elif shape == "variance":
                end = min(steps, onset + int(2 * 3600 / cfg.step_seconds))
                values[onset:end] = values[onset:end] + rng.standard_normal(end - onset) * 3 * sigma
                windows.append((int(ts[onset]), int(ts[onset]) + cfg.window_seconds))
            description = f"{shape}: level {level:.0f}, sigma {sigma:.1f}, daily {amp_d:.1f}"
        missing = _missing_mask(rng, steps, cfg.missing_fraction)
        values = np.where(missing, np.nan, values)
        if nums is not None and dens is not None:
            nums = np.where(missing, np.nan, nums)
            dens = np.where(missing, np.nan, dens)
        out.append(
            LabelledSeries(
                name=f"s{seed}_{i:02d}_{shape}",
                timestamps=ts,
                values=values,
                windows=tuple(windows),
                numerators=nums,
                denominators=dens,
                description=description,
            )
        )
    return out


def _daytime(ts: NDArray[np.int64], index: int) -> int:
    """Move ``index`` forward to the next 09:00–18:00 UTC point (traffic near its daily mean+)."""
    hours = (ts[index:] % DAY_SECONDS) // 3600
    ok = np.flatnonzero((hours >= 9) & (hours < 18))
    return int(index + ok[0]) if ok.size else index


def _missing_mask(rng: np.random.Generator, steps: int, fraction: float) -> NDArray[np.bool_]:
    mask = np.zeros(steps, dtype=bool)
    gaps = int(fraction * steps / 5)
    for start in rng.integers(0, steps, size=gaps):
        mask[start : start + int(rng.integers(1, 10))] = True
    return mask
