"""Dashboard page load times on a workspace: first (cold) load and warm loads (median).

    python -m bench.web --workspace tripwire-demo        # the demo workspace
    python -m bench.web --workspace tripwire-demo --quick

The app runs in process (Starlette's TestClient: no network in the measurement); the
warm-up thread is disabled so the cold column is the honest first-visitor cost of each
page without the cache. Warm loads are served from the stale-while-revalidate cache, which
is what visitors see after the server has warmed up (the server warms the overview and the
scorecards at start). Measured on a shared 2-core machine: cold numbers are bound by DuckDB
scans of the lake under CPU contention and are noisy; warm numbers by Jinja rendering.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tripwire.monitor.alerts import AlertStore
from tripwire.store.workspace import Workspace
from tripwire.web.app import create_dashboard


def pages(workspace: Workspace) -> list[str]:
    with AlertStore.for_workspace(workspace) as alerts:
        found = alerts.query()
    paths = ["/", "/?window=60m", "/?window=7d", "/funnels", "/experiments",
             "/experiments/ranker_v2", "/catalog", "/catalog/orders?by=locale", "/changes"]  # fmt: skip
    if found:
        paths.append(f"/alerts/{found[0].id}")
    return paths


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("tripwire-demo"))
    parser.add_argument("--quick", action="store_true", help="3 warm loads instead of 15")
    args = parser.parse_args(argv)
    workspace = Workspace.load(args.workspace)
    app = FastAPI()
    app.include_router(create_dashboard(workspace, warm=False))
    client = TestClient(app)
    repeats = 3 if args.quick else 15
    results: dict[str, tuple[float, float]] = {}
    print(f"{'page':40} {'cold s':>8} {'warm median s':>14}")
    for path in pages(workspace):
        started = time.perf_counter()
        status = client.get(path).status_code
        cold = time.perf_counter() - started
        warm = []
        for _ in range(repeats):
            started = time.perf_counter()
            client.get(path)
            warm.append(time.perf_counter() - started)
        results[path] = (cold, statistics.median(warm))
        print(f"{path:40} {cold:8.2f} {statistics.median(warm):14.3f}  (HTTP {status})")
    return results


if __name__ == "__main__":
    main()
