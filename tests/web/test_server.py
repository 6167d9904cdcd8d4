"""The server composition: capture + monitor + experiments + dashboard in one app, and
the capture app alone stays free of the areas above ingest (DESIGN's import direction)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from fastapi.testclient import TestClient

from tripwire.cli.workspace import initialize_workspace
from tripwire.ingest.app import create_app
from tripwire.store.keys import KeyStore
from tripwire.web.server import create_server_app


def _served(app: object, paths: list[str]) -> dict[str, bool]:
    """Which of ``paths`` the app routes (not 404/405 for GET or POST), app not started."""
    client = TestClient(app)  # type: ignore[arg-type]
    return {
        p: any(
            client.request(m, p, follow_redirects=False).status_code not in (404, 405)
            for m in ("GET", "POST")
        )
        for p in paths
    }


def test_the_capture_app_imports_nothing_above_ingest() -> None:
    code = (
        "import sys, tripwire.ingest.app, tripwire.ingest.archiver\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['tripwire', 'monitor'], ['tripwire', 'web'], ['tripwire', 'metrics'],"
        " ['tripwire', 'experiments'], ['tripwire', 'rca'], ['tripwire', 'cli']))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_capture_app_alone_has_only_capture_routes(tmp_path: Path) -> None:
    ws = initialize_workspace(tmp_path / "ws")
    served = _served(create_app(ws), ["/v1/batch", "/v1/track", "/batch/", "/healthz",
                                      "/", "/v1/changes", "/metrics", "/v1/assign"])  # fmt: skip
    assert [p for p, ok in served.items() if ok] == [
        "/v1/batch",
        "/v1/track",
        "/batch/",
        "/healthz",
    ]


def test_server_app_composes_every_face_and_stops_its_threads(tmp_path: Path) -> None:
    ws = initialize_workspace(tmp_path / "ws")
    with KeyStore.for_workspace(ws) as keys:
        key = keys.create("app", ("write", "read")).secret
    before = {t.ident for t in threading.enumerate()}
    app = create_server_app(ws, rollout_guard=True)
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as client:
        assert app.state.experiments.guard is not None
        assert client.get("/healthz").json()["status"] == "ok"
        assert client.get("/metrics").status_code == 200
        assert client.get("/v1/changes", headers=auth).status_code == 200
        assert client.get("/v1/assign?experiment=nope&unit_id=u1", headers=auth).status_code == 404
        assert client.get("/changes").status_code == 200
        assert client.post("/v1/batch", json={"batch": []}, headers=auth).status_code in (200, 400)
    # the lifespan stopped every thread it started (guard, warm-up, change sync, buffers)
    threading.Event().wait(0.2)
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert left == []


def test_server_app_without_dashboard_or_monitor(tmp_path: Path) -> None:
    ws = initialize_workspace(tmp_path / "ws")
    app = create_server_app(ws, dashboard=False)
    served = _served(app, ["/v1/changes", "/v1/assign", "/", "/changes"])
    assert served == {"/v1/changes": True, "/v1/assign": True, "/": False, "/changes": False}
    with TestClient(app) as client:
        assert app.state.monitor is None and app.state.experiments.guard is None
        assert client.get("/healthz").status_code == 200


def test_change_events_in_the_lake_reach_the_dashboard_without_a_cli_step(tmp_path: Path) -> None:
    """A ``$change`` event that was captured and archived shows on /changes and in the
    change log: the server's background loop syncs the lake (no ``tripwire monitor`` run)."""
    import tripwire
    from tripwire.ingest.archiver import Archiver
    from tripwire.monitor.changes import ChangeLog
    from tripwire.store.buffer import Buffer

    ws = initialize_workspace(tmp_path / "ws")
    with tripwire.open(ws.root) as tw:
        tw.track("Session Started", {"session_id": "s1"}, user_id="u1")
        tw.track("$change", {"kind": "deploy", "service": "payments-token", "version": "7.7.7",
                             "scope": {"locale": "en-GB"}, "author": "ci"}, user_id="deploy-bot")  # fmt: skip
    with Buffer.for_workspace(ws) as buffer:
        assert Archiver.for_workspace(ws, buffer).run().events == 2
    with ChangeLog.for_workspace(ws) as log:
        assert log.query() == []
    app = create_server_app(ws, warm=False)
    with TestClient(app) as client:
        assert app.state.dashboard_data.warmed.wait(60)
        page = client.get("/changes?days=3650")
        assert page.status_code == 200 and "payments-token" in page.text and "7.7.7" in page.text
    with ChangeLog.for_workspace(ws) as log:
        (change,) = log.query()
    assert change.origin == "event" and change.scope == {"locale": "en-GB"}
