"""Root-cause analysis benchmarks (``python -m bench.rca [--quick] [--workspace DIR]``).

1. Localization over 5 dimensions with 100,000 leaf combinations (cardinalities
   10 × 10 × 10 × 10 × 10; one to three injected causes): target ≤ 2 s. Bound by the
   per-cuboid ``bincount`` passes (C(5,1)+C(5,2)+C(5,3) = 25 cuboids, several greedy rounds).
2. A whole ``tripwire rca`` investigation on a demo workspace (``tripwire demo``; pass its
   folder with ``--workspace``): target ≤ 10 s. Measured twice: the investigation in this
   process, and the CLI as a user runs it (a fresh process: imports, investigation, both
   reports; it records the incident in the workspace like ``tripwire rca`` does). Bound by
   the imports (scipy.stats, Ibis, pandas: ~3 CPU-s), the one-off materialisation of the
   investigated days in DuckDB and a dozen grouped scans over them.

3. Localization accuracy on generated cases (``tripwire.rca.synthetic``): precision, recall
   and F1 against the injected causes per number of causes (1–3) × depth (1–3), for an
   additive measure and a ratio measure (with a traffic-mix decoy), at two noise levels.

Each measurement runs several times; the medians are printed and returned, wall-clock and
CPU seconds (``time.process_time``, all threads of the process). Machine: 2 cores shared
with other jobs, so wall-clock numbers are noisy — compare CPU seconds and medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from tripwire.rca.localize import localize, localize_ratio
from tripwire.rca.synthetic import f1_score, generate_case, generate_ratio_case


def bench_localize(repeats: int, cardinalities: tuple[int, ...]) -> dict[str, float]:
    times, cpus, f1s = [], [], []
    for seed in range(repeats):
        case = generate_case(
            np.random.default_rng(seed),
            cardinalities=cardinalities,
            n_causes=1 + seed % 3,
            depth=1 + seed % 2,
        )
        started, cpu = time.perf_counter(), time.process_time()
        result = localize(case.columns, case.observed, case.expected)
        times.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
        f1s.append(f1_score([e.conditions for e in result.elements], list(case.causes))[2])
    leaves = int(np.prod(cardinalities))
    return {
        "leaves": leaves,
        "median_seconds": statistics.median(times),
        "median_cpu_seconds": statistics.median(cpus),
        "mean_f1": float(np.mean(f1s)),
    }


def bench_f1(seeds: int) -> dict[str, dict[str, float]]:
    """Mean precision/recall/F1 per setting and per (causes, depth) cell."""
    settings: dict[str, tuple[str, dict[str, Any]]] = {
        "additive noise 5%": ("additive", {"noise": 0.05}),
        "additive noise 10%, effects 15-40%": (
            "additive",
            {"noise": 0.1, "magnitude": (0.15, 0.4)},
        ),
        "additive noise 20%, effects 20-50%": (
            "additive",
            {"noise": 0.2, "magnitude": (0.2, 0.5)},
        ),
        "ratio": ("ratio", {}),
        "ratio thin, effects 15-40%": ("ratio", {"magnitude": (0.15, 0.4), "volume": 2.0}),
    }
    out: dict[str, dict[str, float]] = {}
    for name, (measure, options) in settings.items():
        cells: dict[str, float] = {}
        all_scores = []
        for causes in (1, 2, 3):
            for depth in (1, 2, 3):
                scores = []
                for seed in range(seeds):
                    rng = np.random.default_rng(10_000 + 1000 * causes + 100 * depth + seed)
                    if measure == "ratio":
                        rc = generate_ratio_case(rng, n_causes=causes, depth=depth, **options)
                        result = localize_ratio(
                            rc.columns,
                            rc.numerator,
                            rc.denominator,
                            rc.baseline_numerator,
                            rc.baseline_denominator,
                        )
                        truth = list(rc.causes)
                    else:
                        case = generate_case(rng, n_causes=causes, depth=depth, **options)
                        result = localize(case.columns, case.observed, case.expected)
                        truth = list(case.causes)
                    scores.append(f1_score([e.conditions for e in result.elements], truth))
                cells[f"c{causes}d{depth}"] = float(np.mean([s[2] for s in scores]))
                all_scores += scores
        p, r, f = (float(x) for x in np.mean(all_scores, axis=0))
        out[name] = {"precision": p, "recall": r, "f1": f, **cells}
    return out


def bench_investigation(workspace: Path, repeats: int) -> dict[str, dict[str, float]]:
    from tripwire.rca.investigation import investigate
    from tripwire.store.workspace import Workspace

    ws = Workspace.load(workspace)
    truth = json.loads((ws.data_dir / "sim" / "ground_truth.json").read_text())["incidents"]
    out: dict[str, dict[str, float]] = {}
    for incident in truth:
        at = datetime.fromisoformat(incident["start"].replace("Z", "+00:00")) + timedelta(
            minutes=60
        )
        walls, cpus = [], []
        for _ in range(repeats):
            started, cpu = time.perf_counter(), time.process_time()
            investigate(ws, incident["metric"], at)
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu)
        out[incident["id"]] = {
            "wall_seconds": statistics.median(walls),
            "cpu_seconds": statistics.median(cpus),
        }
    return out


def bench_cli(workspace: Path, repeats: int) -> dict[str, dict[str, float]]:
    """``tripwire rca METRIC --at TIME`` per planted incident, each run a fresh process."""
    import resource
    import subprocess
    import sys

    from tripwire.store.workspace import Workspace

    data_dir = Workspace.load(workspace).data_dir
    truth = json.loads((data_dir / "sim" / "ground_truth.json").read_text())
    out: dict[str, dict[str, float]] = {}
    for incident in truth["incidents"]:
        at = datetime.fromisoformat(incident["start"].replace("Z", "+00:00")) + timedelta(
            minutes=60
        )
        command = [
            sys.executable,
            "-c",
            "from tripwire.cli.main import app; app()",
            "rca",
            incident["metric"],
            "--at",
            at.isoformat(),
            "--workspace",
            str(workspace),
        ]
        walls, cpus = [], []
        for _ in range(repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            walls.append(time.perf_counter() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        out[incident["id"]] = {
            "wall_seconds": statistics.median(walls),
            "cpu_seconds": statistics.median(cpus),
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument(
        "--workspace", type=Path, help="a `tripwire demo` workspace for the end-to-end timing"
    )
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else 5
    cards = (6, 6, 6, 6, 6) if args.quick else (10, 10, 10, 10, 10)
    results: dict[str, object] = {"localize": bench_localize(repeats, cards)}
    print(f"localize: {results['localize']}")
    f1 = bench_f1(2 if args.quick else 5)
    results["f1"] = f1
    for name, row in f1.items():
        cells = " ".join(f"{k}={v:.2f}" for k, v in row.items() if k.startswith("c"))
        print(
            f"F1 {name}: P={row['precision']:.2f} R={row['recall']:.2f} F1={row['f1']:.2f} [{cells}]"
        )
    if args.workspace:
        results["investigation_seconds"] = bench_investigation(
            args.workspace, 1 if args.quick else 3
        )
        print(f"investigation per incident (median s): {results['investigation_seconds']}")
        results["cli_seconds"] = bench_cli(args.workspace, 1 if args.quick else 3)
        print(f"tripwire rca CLI per incident (median s): {results['cli_seconds']}")
        print(f"load average: {os.getloadavg()}")
    return results


if __name__ == "__main__":
    main()
