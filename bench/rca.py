"""Root-cause analysis benchmarks (``python -m bench.rca [--quick] [--workspace DIR]``).

1. Localization over 5 dimensions with 100,000 leaf combinations (cardinalities
   10 × 10 × 10 × 10 × 10; one to three injected causes): target ≤ 2 s. Bound by the
   per-cuboid ``bincount`` passes (C(5,1)+C(5,2)+C(5,3) = 25 cuboids, several greedy rounds).
2. A whole ``tripwire rca`` investigation on a demo workspace (``tripwire demo``; pass its
   folder with ``--workspace``): target ≤ 10 s. Bound by the one-off materialisation of the
   investigated days in DuckDB and a dozen grouped scans over them.

Each measurement runs several times; the medians are printed and returned. Machine: 2 cores
shared with other jobs, so the numbers are noisy — compare medians, not single runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from tripwire.rca.localize import localize
from tripwire.rca.synthetic import f1_score, generate_case


def bench_localize(repeats: int, cardinalities: tuple[int, ...]) -> dict[str, float]:
    times, f1s = [], []
    for seed in range(repeats):
        case = generate_case(
            np.random.default_rng(seed),
            cardinalities=cardinalities,
            n_causes=1 + seed % 3,
            depth=1 + seed % 2,
        )
        started = time.perf_counter()
        result = localize(case.columns, case.observed, case.expected)
        times.append(time.perf_counter() - started)
        f1s.append(f1_score([e.conditions for e in result.elements], list(case.causes))[2])
    leaves = int(np.prod(cardinalities))
    return {
        "leaves": leaves,
        "median_seconds": statistics.median(times),
        "mean_f1": float(np.mean(f1s)),
    }


def bench_investigation(workspace: Path, repeats: int) -> dict[str, float]:
    from tripwire.rca.investigation import investigate
    from tripwire.store.workspace import Workspace

    ws = Workspace.load(workspace)
    truth = json.loads((ws.data_dir / "sim" / "ground_truth.json").read_text())["incidents"]
    out: dict[str, float] = {}
    for incident in truth:
        at = datetime.fromisoformat(incident["start"].replace("Z", "+00:00")) + timedelta(
            minutes=60
        )
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            investigate(ws, incident["metric"], at)
            times.append(time.perf_counter() - started)
        out[incident["id"]] = statistics.median(times)
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
    if args.workspace:
        results["investigation_seconds"] = bench_investigation(
            args.workspace, 1 if args.quick else 3
        )
        print(f"tripwire rca per incident (median s): {results['investigation_seconds']}")
    return results


if __name__ == "__main__":
    main()
