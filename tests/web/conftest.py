"""Fixtures of the dashboard tests: one small demo workspace per test session.

The workspace is built with the demo's own steps (:mod:`tripwire.cli.demo`) at a small
size: a few days and users, enough for the planted incidents to fire alerts and for the
experiments to have looks. Building takes most of the web tests' time, so it happens once
(``scope="session"``); tests that write (ack, record a change) use their own alert or
change so their order does not matter.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tripwire.cli.demo import (
    DEMO_SESSIONS_PER_USER_DAY,
    DEMO_TURN_LATENCY_SAMPLING,
    DemoContext,
    step_archive,
    step_experiments,
    step_simulate,
    step_workspace,
)
from tripwire.metrics.query import Metrics
from tripwire.monitor.alerts import AlertDraft, AlertStore
from tripwire.monitor.changes import ChangeLog
from tripwire.sim.config import WorldConfig
from tripwire.store.keys import KeyStore
from tripwire.store.workspace import Workspace

#: Days and users of the fixture world: the three incidents land on days 2, 3 and 4.
FIXTURE_DAYS = 5
FIXTURE_USERS = 1000


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def record_planted_alerts(ws: Workspace) -> None:
    """The alerts of the world's planted incidents, as the monitors would record them.

    At this size the detectors do not fire (measured: the demo's monitor step finds 0 of
    the 3 incidents at 1,500 users x 6 days, and a backfill costs ~1 min per monitor), so
    the fixture records each incident's alert through the monitor's own
    :meth:`AlertStore.fire`, with the observed value of the incident window and the
    expected value of the same window a day earlier, both computed from the lake. The
    change log is synced from the lake's ``$change`` events, as the monitor step does.
    """
    truth = json.loads((ws.data_dir / "sim" / "ground_truth.json").read_text())
    metrics = Metrics.open(ws, check_lake=False)
    with AlertStore.for_workspace(ws) as alerts, ChangeLog.for_workspace(ws) as log:
        log.sync_lake(metrics.backend)
        for incident in truth["incidents"]:
            start, end = _at(incident["start"]), _at(incident["end"])
            segment = {k: str(v) for seg in incident["segments"] for k, v in seg.items()}
            where = [f"{k}={v}" for k, v in segment.items() if k in ("locale", "device")]

            def value(
                since: datetime,
                until: datetime,
                name: str = incident["metric"],
                where: list[str] = where,
            ) -> float:
                rows = metrics.query(name, grain=None, since=since, until=until, where=where)
                return float(rows["value"][0].as_py() or 0.0) if rows.num_rows else 0.0

            observed = value(start, end)
            expected = value(start - timedelta(days=1), end - timedelta(days=1))
            alerts.fire(
                AlertDraft(
                    monitor=incident["metric"], rule="planted_incident", metric=incident["metric"],
                    severity="P1" if incident["id"] == "payments-deploy" else "P2",
                    segment={k: v for k, v in segment.items() if k in ("locale", "device")},
                    at=start + timedelta(minutes=30), onset=start, observed=observed,
                    expected=expected, lower=expected * 0.9, upper=expected * 1.1,
                    direction=-1 if observed < expected else 1,
                    condition="fixture: planted incident window vs the day before",
                )
            )  # fmt: skip


@dataclass(frozen=True)
class DashboardWorld:
    workspace: Workspace
    write_key: str
    read_key: str


def _build(root: Path) -> DashboardWorld:
    config = WorldConfig(
        days=FIXTURE_DAYS,
        users=FIXTURE_USERS,
        seed=11,
        sessions_per_user_day=DEMO_SESSIONS_PER_USER_DAY,
        turn_latency_sampling=DEMO_TURN_LATENCY_SAMPLING,
        incident_days=(2, 3, 4),
    )
    ctx = DemoContext(directory=root, config=config)
    for step in (step_workspace, step_simulate, step_archive, step_experiments):
        step(ctx)
    record_planted_alerts(ctx.ws)
    with KeyStore.for_workspace(ctx.ws) as keys:
        write = keys.create("dashboard-test", ("write", "read")).secret
        read = keys.create("dashboard-reader", ("read",)).secret
    return DashboardWorld(ctx.ws, write, read)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> DashboardWorld:
    """The session's demo workspace (built once; reused via TRIPWIRE_WEB_FIXTURE if set)."""
    reuse = os.environ.get("TRIPWIRE_WEB_FIXTURE")
    if reuse and (Path(reuse) / ".tripwire").exists():
        ws = Workspace.load(Path(reuse))
        with KeyStore.for_workspace(ws) as keys:
            write = keys.create("dashboard-test", ("write", "read")).secret
            read = keys.create("dashboard-reader", ("read",)).secret
        return DashboardWorld(ws, write, read)
    return _build(tmp_path_factory.mktemp("dashboard") / "ws")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def server(world: DashboardWorld) -> Iterator[str]:
    """A real ``tripwire serve`` on a free loopback port; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tripwire.cli.main", "serve", "--port", str(port), "--no-monitor",
         "-w", str(world.workspace.root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                err = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"tripwire serve did not start: {err[-2000:]}")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
