"""Fixtures of the dashboard tests: one small demo workspace per test session.

The workspace is built with the demo's own steps (:mod:`tripwire.cli.demo`) at a small
size: a few days and users, enough for the planted incidents to fire alerts and for the
experiments to have looks. Building takes most of the web tests' time, so it happens once
(``scope="session"``); tests that write (ack, record a change) use their own alert or
change so their order does not matter.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tripwire.cli.common import console
from tripwire.cli.demo import (
    DEMO_SESSIONS_PER_USER_DAY,
    DEMO_TURN_LATENCY_SAMPLING,
    DemoContext,
    step_archive,
    step_experiments,
    step_simulate,
    step_workspace,
)
from tripwire.monitor.demo_step import run_monitor_step
from tripwire.sim.config import WorldConfig
from tripwire.store.keys import KeyStore
from tripwire.store.workspace import Workspace

#: Days and users of the fixture world: the three incidents land on days 3, 4 and 5.
FIXTURE_DAYS = 6
FIXTURE_USERS = 1500
#: The monitors backfilled (each costs one pass over the range): conversion (the payments
#: incident) and telemetry vs ledger (the measurement incident).
FIXTURE_MONITORS = ("voice_checkout_conversion", "telemetry_ledger_order_ratio")


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
        incident_days=(3, 4, 5),
    )
    ctx = DemoContext(directory=root, config=config)
    for step in (step_workspace, step_simulate, step_archive, step_experiments):
        step(ctx)
    run_monitor_step(ctx.ws, console, only=FIXTURE_MONITORS)
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
