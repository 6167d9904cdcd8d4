"""``tripwire serve``'s collector tuning: frozen heap and a higher first-generation threshold
while the app runs, both undone at shutdown; off unless asked for."""

from __future__ import annotations

import gc
from pathlib import Path

from fastapi.testclient import TestClient

from tripwire.store.workspace import init_workspace
from tripwire.web.server import SERVING_GC_THRESHOLD, create_server_app


def test_gc_tuning_lasts_as_long_as_the_app(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    before = gc.get_threshold()
    assert before != SERVING_GC_THRESHOLD
    with TestClient(create_server_app(ws, dashboard=False, assign=False)) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_threshold() == before  # not asked for
    app = create_server_app(ws, dashboard=False, assign=False, tune_gc=True)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_threshold() == SERVING_GC_THRESHOLD
        assert gc.get_freeze_count() > 10_000  # the imported modules' objects
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
