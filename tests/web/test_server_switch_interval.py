"""``tripwire serve`` shortens the GIL's switch interval while the app runs (the event loop
and the buffer's writer hand every acknowledgement across threads) and restores it at
shutdown; off unless asked for."""

from __future__ import annotations

import sys
from pathlib import Path

from fastapi.testclient import TestClient

from tripwire.store.workspace import init_workspace
from tripwire.web.server import SERVING_SWITCH_INTERVAL_S, create_server_app


def test_the_switch_interval_is_short_while_the_app_serves(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    before = sys.getswitchinterval()
    assert before != SERVING_SWITCH_INTERVAL_S
    with TestClient(create_server_app(ws, dashboard=False, assign=False)) as client:
        assert client.get("/healthz").status_code == 200
        assert sys.getswitchinterval() == before  # not asked for
    app = create_server_app(ws, dashboard=False, assign=False, tune_gc=True)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert sys.getswitchinterval() == SERVING_SWITCH_INTERVAL_S
    assert sys.getswitchinterval() == before
