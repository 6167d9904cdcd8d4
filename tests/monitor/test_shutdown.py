"""``tripwire serve`` shuts down promptly while the streaming monitor is preparing.

The monitor's setup runs one lake query and a calibration per monitor (13 by default,
~20 s wall on a loaded 2-core machine even with an empty lake). Before the fix ``stop()``
could only wait for all of them (then its 30 s join timeout), so the server took that long
to exit. Now the stop flag is checked between monitors and the running DuckDB query is
interrupted: setup is cut short (no evaluator is ever built) and the thread ends at once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tripwire.metrics.catalog import install_catalog
from tripwire.monitor import runner
from tripwire.monitor.defaults import install_default_monitors
from tripwire.monitor.runner import StreamingMonitor
from tripwire.store.workspace import Workspace, init_workspace
from tripwire.web.server import create_server_app


@pytest.fixture
def default_workspace(tmp_path: Path) -> Workspace:
    """A fresh workspace as ``tripwire init`` leaves it: catalog, default monitors, no data."""
    ws = init_workspace(tmp_path / "ws")
    install_catalog(ws)
    install_default_monitors(ws)
    return ws


def _stopped_promptly(monitor: StreamingMonitor, elapsed: float) -> None:
    assert monitor._thread is not None and not monitor._thread.is_alive()
    assert monitor._evaluator is None, "setup ran to completion: the stop flag was not checked"
    assert elapsed < 10.0, f"shutdown took {elapsed:.1f} s (the 30 s join timeout?)"
    assert monitor.stats.errors == []  # a requested stop (and its interrupt) is not an error


def test_server_with_monitor_shuts_down_promptly(default_workspace: Workspace) -> None:
    app = create_server_app(default_workspace, monitor=True, rollout_guard=False, dashboard=False)
    with TestClient(app):
        monitor = app.state.monitor
        assert isinstance(monitor, StreamingMonitor)
        time.sleep(0.5)  # setup is under way (its first lake queries)
        began = time.monotonic()
    _stopped_promptly(monitor, time.monotonic() - began)


@pytest.mark.slow
def test_stop_interrupts_setup_on_data(
    small_world: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With data in the lake, a stop mid-setup ends it before the next monitor.

    The world's one monitor prepares in well under 0.3 s on an idle machine, so the test
    makes setup long enough to stop inside it: three copies of the monitor, each slowed by
    0.5 s before its real preparation (lake query and calibration).
    """
    real_load, real_prepare = runner.load_definitions, runner.prepare

    def three_monitors(workspace: Workspace):  # type: ignore[no-untyped-def]
        monitors, catalog = real_load(workspace)
        return list(monitors) * 3, catalog

    def slow_prepare(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(0.5)
        return real_prepare(*args, **kwargs)

    monkeypatch.setattr(runner, "load_definitions", three_monitors)
    monkeypatch.setattr(runner, "prepare", slow_prepare)
    monitor = StreamingMonitor(small_world, notify=False, use_wall_clock=False).start()
    time.sleep(0.3)
    began = time.monotonic()
    monitor.stop(timeout=10.0)
    _stopped_promptly(monitor, time.monotonic() - began)
