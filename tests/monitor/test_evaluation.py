"""Evaluation: NAB scoring by hand, the series directory format, the generator, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tripwire.cli.main import app
from tripwire.monitor.evaluation import (
    NAB_STANDARD,
    GeneratorSettings,
    LabelledSeries,
    evaluate,
    generate_labelled_series,
    load_series_dir,
    scaled_sigmoid,
    score_alarms,
    write_series_dir,
)

FAST = GeneratorSettings(days=5, step_seconds=300)


def test_nab_score_by_hand():
    ts = np.arange(0, 1000 * 60, 60)
    windows = [(6000, 12000), (30000, 36000)]
    # first window: detected 1/6 of the way in; second missed; one FP 3000 s after window 1,
    # one FP before any window
    s = score_alarms(
        "x", ts, [1000, 7000, 8000, 15000], windows, probation_end=600, profile=NAB_STANDARD
    )
    tp = scaled_sigmoid((7000 - 12000) / 6000)
    fp_after = 0.11 * scaled_sigmoid((15000 - 12000) / 6000)
    assert s.nab_raw == pytest.approx(tp - 1.0 + fp_after - 0.11)
    assert [w.detected for w in s.windows] == [True, False]
    assert s.windows[0].delay_seconds == 1000
    assert s.false_alarms == 2  # 8000 is a second detection inside the window, not an FP
    assert s.nab_null == -2 and s.nab_perfect == pytest.approx(2 * scaled_sigmoid(-1))


def test_probation_alarms_are_ignored():
    ts = np.arange(0, 100 * 60, 60)
    s = score_alarms("x", ts, [60, 120], [], probation_end=600)
    assert s.alarms == 0 and s.false_alarms == 0


def test_directory_round_trip_and_flag_labels(tmp_path):
    series = generate_labelled_series(1, 3, FAST)
    write_series_dir(tmp_path, series)
    loaded = load_series_dir(tmp_path)
    assert [s.name for s in loaded] == sorted(f"{s.name}.csv" for s in series)
    by_name = {s.name: s for s in loaded}
    for s in series:
        got = by_name[f"{s.name}.csv"]
        assert np.array_equal(got.timestamps, s.timestamps)
        assert np.allclose(got.values, s.values, equal_nan=True)
        assert got.windows == s.windows
    # Yahoo S5 style: integer timestamps and an is_anomaly column
    (tmp_path / "yahoo").mkdir()
    (tmp_path / "yahoo" / "real_1.csv").write_text(
        "timestamp,value,is_anomaly\n"
        + "".join(f"{1000 + 3600 * i},{i % 3},{int(i in (5, 6))}\n" for i in range(10))
    )
    yahoo = load_series_dir(tmp_path / "yahoo")[0]
    assert yahoo.windows == ((1000 + 5 * 3600, 1000 + 6 * 3600),)


def test_bad_files_name_file_and_line(tmp_path):
    (tmp_path / "a.csv").write_text(
        "timestamp,value\n2026-01-01 00:00:00,1\n2026-01-01 00:01:00,x\n"
    )
    with pytest.raises(ValueError, match=r"a.csv: line 3"):
        load_series_dir(tmp_path)
    (tmp_path / "a.csv").write_text("time,value\n1,2\n")
    with pytest.raises(ValueError, match=r"a.csv: line 1: header"):
        load_series_dir(tmp_path)
    (tmp_path / "a.csv").write_text("timestamp,value\n10,1\n5,2\n")
    with pytest.raises(ValueError, match=r"a.csv: line 3: timestamps must strictly increase"):
        load_series_dir(tmp_path)
    (tmp_path / "a.csv").write_text("timestamp,value\n10,1\n20,2\n")
    (tmp_path / "labels.json").write_text('{"a.csv": [["2026-01-01"]]}')
    with pytest.raises(ValueError, match=r"labels.json: a.csv\[0\]: a window is \[start, end\]"):
        load_series_dir(tmp_path)
    (tmp_path / "labels.json").write_text('{"a.csv": [')
    with pytest.raises(ValueError, match=r"labels.json: line 1: invalid JSON"):
        load_series_dir(tmp_path)


def test_generator_is_seeded_and_varied():
    a = generate_labelled_series(4, 7, FAST)
    b = generate_labelled_series(4, 7, FAST)
    assert all(
        np.array_equal(x.values, y.values, equal_nan=True) for x, y in zip(a, b, strict=True)
    )
    shapes = {s.name.split("_", 2)[2] for s in a}
    assert shapes == {
        "level_drop",
        "level_rise",
        "spike",
        "variance",
        "proportion_drop",
        "low_traffic",
        "none",
    }
    assert all(np.isnan(s.values).any() for s in a)  # missing points everywhere
    assert sum(len(s.windows) for s in a) == 5
    low = next(s for s in a if "low_traffic" in s.name)
    assert low.denominators is not None and np.nanmean(low.denominators) < 10


def test_evaluate_detects_planted_anomalies():
    """8 days of 5-minute data, 30% probation (≥ 2 days, so the daily profile is modelled)."""
    series = generate_labelled_series(2, 7, GeneratorSettings(days=8, step_seconds=300))
    report = evaluate(series, "cusum", probation_fraction=0.3)
    assert report.detected == report.windows == 5
    assert report.median_delay_seconds is not None and report.median_delay_seconds <= 20 * 60
    assert report.false_alarms_per_day < 0.5
    assert report.nab_score > 70
    low = next(s for s in report.series if "low_traffic" in s.name)
    assert low.alarms == 0


def test_evaluate_rejects_unknown_detector():
    s = LabelledSeries("x", np.arange(100) * 60, np.zeros(100), ())
    with pytest.raises(ValueError, match="unknown detector 'magic'"):
        evaluate([s], "magic")


def test_eval_command_end_to_end(tmp_path):
    runner = CliRunner()
    made = runner.invoke(
        app,
        [
            "eval",
            "make-series",
            "--out",
            str(tmp_path),
            "--seed",
            "3",
            "--n-series",
            "3",
            "--days",
            "8",
            "--step-seconds",
            "300",
        ],
    )
    assert made.exit_code == 0, made.output
    result = runner.invoke(
        app,
        [
            "eval",
            "detectors",
            "--series",
            str(tmp_path),
            "--detector",
            "cusum",
            "--probation",
            "0.3",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload[0]["detector"] == "cusum" and payload[0]["windows"] == 3
    assert len(payload[0]["series"]) == 3
    assert payload[0]["detected"] >= 2 and payload[0]["false_alarms_per_day"] < 1.0
    table = runner.invoke(
        app, ["eval", "detectors", "--series", str(tmp_path), "--detector", "ewma", "--per-series"]
    )
    assert table.exit_code == 0 and "NAB score" in table.output and "ewma" in table.output
    bad = runner.invoke(
        app, ["eval", "detectors", "--series", str(tmp_path), "--detector", "magic"]
    )
    assert bad.exit_code == 2 and "unknown detector" in bad.output
