"""Dashboard page load times on a workspace: cold (fresh server) and warm, per page.

    python -m bench.web --workspace tripwire-demo        # the demo workspace
    python -m bench.web --workspace tripwire-demo --quick

The app runs in process (Starlette's TestClient: no network in the measurement), the way
``tripwire serve`` runs it: the lifespan opens the query engine before the first request
is served; the warm-up is off for the cold columns. For each page:

* ``page``: the HTML a browser receives first (alerts and forms, plus every section that
  is already computed). A lake-backed section that is not computed yet is sent as a
  placeholder that the page's script fetches after first paint (``/fragments/...``).
* ``complete``: ``page`` plus each deferred fragment fetched one after the other (the
  browser fetches them in parallel, but they share one DuckDB connection, so sequential
  is what the server does): when every chart is drawn.
* ``warm``: the median full load (page and fragments) once the server's warm-up ran and
  the page was visited once (the stale-while-revalidate cache answers).

Each cold page gets a fresh app (empty cache), so cold pages do not profit from each
other. An experiment scorecard's analysis is stored in the workspace once computed
(``<data dir>/dashboard/``, reused while its inputs are unchanged), as a restarted server
finds it; ``--recompute`` deletes the stored ones first, so the scorecard's cold complete
load is its first analysis (from the per-day partials, or a full scan). Wall and CPU seconds of this process (the server's work) are reported; the machine
is shared, so wall times are inflated by the load average printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tripwire.monitor.alerts import AlertStore
from tripwire.store.workspace import Workspace
from tripwire.web.app import create_dashboard

RESULTS = Path(__file__).parent / "results"
FRAGMENT = re.compile(r'data-fragment="([^"]+)"')


def pages(workspace: Workspace) -> list[str]:
    with AlertStore.for_workspace(workspace) as alerts:
        found = alerts.query()
    paths = ["/", "/?window=60m", "/?window=7d", "/funnels", "/funnels?dimension=locale",
             "/experiments", "/experiments/ranker_v2", "/catalog", "/catalog/orders?by=locale",
             "/changes"]  # fmt: skip
    if found:
        paths.append(f"/alerts/{found[0].id}")
    return paths


def _load(client: TestClient, path: str) -> tuple[float, float, float, float, int, int]:
    """(page wall, page CPU, complete wall, complete CPU, HTTP status, fragments)."""
    wall, cpu = time.perf_counter(), time.process_time()
    response = client.get(path)
    page = (time.perf_counter() - wall, time.process_time() - cpu)
    fragments = [f.replace("&amp;", "&") for f in FRAGMENT.findall(response.text)]
    status = response.status_code
    for fragment in fragments:
        answer = client.get(fragment)
        status = max(status, answer.status_code)
    return (*page, time.perf_counter() - wall, time.process_time() - cpu, status, len(fragments))


def _app(workspace: Workspace, *, warm: bool) -> FastAPI:
    app = FastAPI()
    app.include_router(create_dashboard(workspace, warm=warm, sync_every=None))
    return app


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("tripwire-demo"))
    parser.add_argument("--quick", action="store_true", help="3 warm loads instead of 10")
    parser.add_argument(
        "--recompute",
        action="store_true",
        help="delete the stored scorecard analyses first (measure a first analysis)",
    )
    args = parser.parse_args(argv)
    if not (args.workspace / "tripwire.yaml").exists():
        print(f"   skipped: no demo workspace at {args.workspace} (run `make demo` first)")
        return {}
    workspace = Workspace.load(args.workspace)
    repeats = 3 if args.quick else 10
    if args.recompute:
        for stored in (workspace.data_dir / "dashboard").glob("*.pickle"):
            stored.unlink()
    results: dict[str, dict[str, float | int]] = {}
    print(f"{'page':34} {'cold page s':>12} {'cold complete s':>16} {'warm s':>8}  (wall / CPU)")
    paths = pages(workspace)
    for path in paths:
        with TestClient(_app(workspace, warm=False)) as client:
            page_wall, page_cpu, full_wall, full_cpu, status, deferred = _load(client, path)
        results[path] = {
            "cold_page_wall_s": page_wall,
            "cold_page_cpu_s": page_cpu,
            "cold_complete_wall_s": full_wall,
            "cold_complete_cpu_s": full_cpu,
            "deferred_sections": deferred,
            "status": status,
        }
    app = _app(workspace, warm=True)
    with TestClient(app) as client:
        started = time.perf_counter()
        _wait_for_warm_up(app)
        warm_up = time.perf_counter() - started
        for path in paths:
            _load(client, path)  # first visit fills what the warm-up does not cover
            walls, cpus = [], []
            for _ in range(repeats):
                _, _, wall, cpu, _, _ = _load(client, path)
                walls.append(wall)
                cpus.append(cpu)
            results[path]["warm_wall_s"] = statistics.median(walls)
            results[path]["warm_cpu_s"] = statistics.median(cpus)
    for path, r in results.items():
        print(
            f"{path:34} {r['cold_page_wall_s']:5.2f} / {r['cold_page_cpu_s']:4.2f}"
            f"  {r['cold_complete_wall_s']:6.2f} / {r['cold_complete_cpu_s']:5.2f}"
            f"   {r['warm_wall_s']:5.3f} / {r['warm_cpu_s']:5.3f}"
            f"  ({r['deferred_sections']} deferred, HTTP {r['status']})"
        )
    load = os.getloadavg()[0]
    print(f"warm-up at start: {warm_up:.1f} s wall; load average {load:.1f}")
    summary = {
        "workspace": str(args.workspace),
        "pages": results,
        "warm_up_wall_s": warm_up,
        "load_average": load,
    }
    RESULTS.mkdir(exist_ok=True)
    name = "web-quick.json" if args.quick else "web.json"
    (RESULTS / name).write_text(json.dumps(summary, indent=2))
    return summary


def _wait_for_warm_up(app: FastAPI, timeout: float = 600.0) -> None:
    """Until the dashboard's background warm-up finished (its first pass)."""
    data = app.state.dashboard_data
    deadline = time.monotonic() + timeout
    while not data.warmed.is_set() and time.monotonic() < deadline:
        time.sleep(0.1)


if __name__ == "__main__":
    main()
