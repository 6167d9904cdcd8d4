"""Simulator benchmark: events generated per second, and the demo's wall time.

``python -m bench.sim [--quick] [--demo]``

- ``generate``: 14 days × 50,000 users (the issue's target: ≤ 60 s on 2 cores), built into
  Segment message dicts, without ``sentAt`` (as the feeders send) and with it. Median of 3
  runs (1 with ``--quick``, on 14 days × 5,000 users).
- ``--demo-ingest``: the demo's generate / simulate + ingest / archive steps alone, at the
  demo's default size, wall and CPU each (:func:`bench_demo_ingest`).
- ``--demo``: also times ``tripwire demo`` end to end (simulate + ingest + archive + summary)
  with its default size, once.

What bounds it: building one Python dict per event (plus its properties dict) under the
GIL; the numpy draws are < 15% of the time. One core is used. Wall time on a shared machine
is noisy, so CPU time (user + sys) of the process is reported next to it.

Results go to ``bench/results/sim.json``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tripwire.sim import World, WorldConfig

RESULTS = Path(__file__).parent / "results" / "sim.json"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_generate(users: int, days: int, *, sent_at: bool, repeats: int) -> dict[str, Any]:
    walls, cpus, events = [], [], 0
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), _cpu()
        world = World(WorldConfig(seed=7, users=users, days=days), sent_at=sent_at)
        events = sum(len(batch) for batch in world.batches())
        walls.append(time.perf_counter() - wall)
        cpus.append(_cpu() - cpu)
    wall_s, cpu_s = statistics.median(walls), statistics.median(cpus)
    return {
        "users": users,
        "days": days,
        "sent_at": sent_at,
        "events": events,
        "wall_s": round(wall_s, 2),
        "cpu_s": round(cpu_s, 2),
        "events_per_s_wall": round(events / wall_s),
        "events_per_s_cpu": round(events / cpu_s),
        "runs": repeats,
    }


def bench_demo() -> dict[str, Any]:
    from typer.testing import CliRunner

    from tripwire.cli.demo import DEFAULT_USERS
    from tripwire.cli.main import app

    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), _cpu()
        result = CliRunner().invoke(app, ["demo", "--dir", str(Path(tmp) / "demo")])
        if result.exit_code != 0:
            raise RuntimeError(result.output)
        return {
            "users": DEFAULT_USERS,
            "days": 14,
            "wall_s": round(time.perf_counter() - wall, 1),
            "cpu_s_main_process": round(_cpu() - cpu, 1),
        }


def bench_demo_ingest(users: int | None = None) -> dict[str, Any]:
    """The demo's first steps alone, at its default size: the world generated without a
    destination, then simulate + ingest (in process, durable), then archive to the lake.
    Wall and CPU (this process, all threads) of each; the ingest cost is the difference
    between the second and the first."""
    from tripwire.cli.demo import (
        DEFAULT_USERS,
        DEMO_SESSIONS_PER_USER_DAY,
        DEMO_TURN_LATENCY_SAMPLING,
    )
    from tripwire.ingest.archiver import Archiver
    from tripwire.sim.feed import InProcessSink, feed
    from tripwire.store.buffer import Buffer
    from tripwire.store.workspace import init_workspace

    config = WorldConfig(
        seed=7,
        users=users or DEFAULT_USERS,
        days=14,
        sessions_per_user_day=DEMO_SESSIONS_PER_USER_DAY,
        turn_latency_sampling=DEMO_TURN_LATENCY_SAMPLING,
    )
    result: dict[str, Any] = {"users": config.users, "days": config.days}

    def timed(name: str, step: Any) -> Any:
        wall, cpu = time.perf_counter(), _cpu()
        value = step()
        result[f"{name}_wall_s"] = round(time.perf_counter() - wall, 2)
        result[f"{name}_cpu_s"] = round(_cpu() - cpu, 2)
        return value

    world = World(config, sent_at=False)
    result["events"] = timed("generate_only", lambda: sum(len(b) for b in world.batches()))
    with tempfile.TemporaryDirectory() as tmp:
        ws = init_workspace(Path(tmp) / "ws")
        fed = timed("simulate_and_ingest", lambda: feed(config, InProcessSink(ws), ws))
        assert fed.stored == result["events"], (fed, result)

        def archive() -> Any:
            with Buffer.for_workspace(ws) as buffer:
                return Archiver.for_workspace(ws, buffer).run()

        archived = timed("archive", archive)
        assert archived.events == result["events"]
    for name in ("simulate_and_ingest", "archive"):
        result[f"{name}_events_per_cpu_s"] = round(result["events"] / result[f"{name}_cpu_s"])
    ingest_cpu = result["simulate_and_ingest_cpu_s"] - result["generate_only_cpu_s"]
    result["ingest_only_events_per_cpu_s"] = round(result["events"] / max(ingest_cpu, 1e-9))
    result["load_average_1min"] = os.getloadavg()[0]
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    quick = "--quick" in argv
    users, repeats = (5_000, 1) if quick else (50_000, 3)
    results: dict[str, Any] = {"machine": "2 cores, shared", "generate": []}
    for sent_at in (False, True):
        row = bench_generate(users, 14, sent_at=sent_at, repeats=repeats)
        results["generate"].append(row)
        print(
            f"   generate {row['users']:,} users × {row['days']} d (sentAt={sent_at}): {row['events']:,} events, "
            f"median {row['wall_s']} s wall / {row['cpu_s']} s CPU "
            f"({row['events_per_s_wall']:,} ev/s wall, {row['events_per_s_cpu']:,} ev/s CPU)",
            flush=True,
        )
    if "--demo-ingest" in argv:
        results["demo_ingest"] = bench_demo_ingest()
        print(f"   demo ingest steps: {results['demo_ingest']}", flush=True)
    if "--demo" in argv:
        results["demo"] = bench_demo()
        print(f"   demo (default size): {results['demo']['wall_s']} s wall", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
