"""Dashboard routes through Starlette's TestClient: auth, CSRF, status codes, recording.

Fast tests run on an empty workspace (no lake: the pages that only read the state database
and the auth/CSRF machinery); page tests run on the session's demo workspace.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tripwire.cli.workspace import initialize_workspace
from tripwire.monitor.alerts import AlertStore
from tripwire.monitor.changes import ChangeLog
from tripwire.store.keys import KeyStore
from tripwire.web.app import create_dashboard, plotly_js_path
from tripwire.web.security import CSRF_COOKIE
from tripwire.web.server import create_server_app

pytestmark = pytest.mark.xdist_group("web")


@pytest.fixture
def empty(tmp_path: Path) -> Iterator[tuple[FastAPI, str, str]]:
    ws = initialize_workspace(tmp_path / "ws")
    keys = KeyStore.for_workspace(ws)
    write = keys.create("ops", ("write",)).secret
    read = keys.create("viewer", ("read",)).secret
    app = FastAPI()
    app.include_router(create_dashboard(ws, keys=keys))
    app.state.workspace = ws
    yield app, write, read
    keys.close()


def _csrf(client: TestClient, path: str = "/changes") -> str:
    response = client.get(path)
    assert response.status_code == 200, response.text
    token = client.cookies.get(CSRF_COOKIE)
    assert token and f'value="{token}"' in response.text
    return token


def test_plotly_js_is_served_from_the_installed_package(empty: tuple[FastAPI, str, str]) -> None:
    app, _, _ = empty
    response = TestClient(app).get("/static/plotly.min.js")
    assert response.status_code == 200
    assert len(response.content) == plotly_js_path().stat().st_size
    assert TestClient(app).get("/static/dashboard.css").status_code == 200
    assert TestClient(app).get("/static/..%2Fapp.py").status_code == 404


def test_remote_clients_must_log_in(empty: tuple[FastAPI, str, str]) -> None:
    app, write, read = empty
    remote = TestClient(app, client=("203.0.113.9", 40000))
    response = remote.get("/changes", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=/changes")
    assert remote.get("/changes", headers={"Authorization": f"Bearer {read}"}).status_code == 200
    bad_key = remote.get(
        "/changes", headers={"Authorization": "Bearer tw_nope"}, follow_redirects=False
    )
    assert bad_key.status_code == 303
    # login form: a session cookie, then pages load
    token = _csrf(remote, "/login")
    bad = remote.post("/login", data={"key": "tw_wrong_wrong_wrong", "csrf": token})
    assert bad.status_code == 401 and "key refused" in bad.text
    ok = remote.post("/login", data={"key": read, "csrf": token, "next": "/changes"},
                     follow_redirects=False)  # fmt: skip
    assert ok.status_code == 303 and ok.headers["location"] == "/changes"
    assert remote.get("/changes").status_code == 200
    assert "(read-only)" in remote.get("/changes").text
    # no open redirect
    evil = remote.post("/login", data={"key": read, "csrf": token, "next": "https://evil.example"},
                       follow_redirects=False)  # fmt: skip
    assert evil.headers["location"] == "/"
    assert write  # the write key is used by the write tests


def test_loopback_reads_without_a_key_but_require_login_asks(tmp_path: Path) -> None:
    ws = initialize_workspace(tmp_path / "ws")
    with KeyStore.for_workspace(ws) as keys:
        open_app, closed_app = FastAPI(), FastAPI()
        open_app.include_router(create_dashboard(ws, keys=keys))
        closed_app.include_router(create_dashboard(ws, keys=keys, require_login=True))
        assert TestClient(open_app).get("/changes").status_code == 200
        assert TestClient(closed_app).get("/changes", follow_redirects=False).status_code == 303


def test_recording_a_change_needs_write_key_and_csrf(empty: tuple[FastAPI, str, str]) -> None:
    app, write, read = empty
    client = TestClient(app)
    token = _csrf(client)
    form = {"kind": "deploy", "service": "payments-token", "version": "9.9.9",
            "scope": "locale=en-GB, device=Echo Show", "at": "2026-11-03T18:00", "csrf": token}  # fmt: skip
    # no key
    assert client.post("/changes", data=form, follow_redirects=False).status_code == 401
    # read key: forbidden
    denied = client.post("/changes", data=form, headers={"Authorization": f"Bearer {read}"})
    assert denied.status_code == 403
    # write key, wrong CSRF token
    auth = {"Authorization": f"Bearer {write}"}
    forged = client.post("/changes", data={**form, "csrf": "x" * 43}, headers=auth)
    assert forged.status_code == 403 and "CSRF" in forged.text
    # write key without the cookie (cross-site form): refused
    fresh = TestClient(app)
    assert fresh.post("/changes", data=form, headers=auth).status_code == 403
    # accepted and recorded with who did it
    done = client.post("/changes", data={**form, "who": "Ana"}, headers=auth,
                       follow_redirects=False)  # fmt: skip
    assert done.status_code == 303
    with ChangeLog.for_workspace(app.state.workspace) as log:
        (change,) = log.query(service="payments-token")
    assert change.version == "9.9.9" and change.origin == "dashboard"
    assert change.scope == {"locale": "en-GB", "device": "Echo Show"}
    assert change.author.startswith("Ana (ops:")
    # bad input: a clear 400
    bad = client.post("/changes", data={**form, "kind": "meteor"}, headers=auth)
    assert bad.status_code == 400 and "kind" in bad.text


def test_unknown_things_are_404(world: Any) -> None:
    with TestClient(create_server_app(world.workspace, warm=False)) as client:
        assert client.get("/alerts/999999").status_code == 404
        assert client.get("/catalog/no_such_metric").status_code == 404
        assert client.get("/experiments/no_such_experiment").status_code == 404
        assert client.get("/?kpi=no_such_metric").status_code == 404
        assert client.get("/?window=3y").status_code == 400
        assert client.get("/funnels?metric=orders").status_code == 404


def test_every_page_renders_on_the_demo_workspace(world: Any) -> None:
    """Each page answers at once; the lake-backed sections it defers (not computed yet:
    the warm-up is off) load from their fragment URLs, and with ``defer=0`` the same
    sections are inline."""
    with TestClient(create_server_app(world.workspace, warm=False)) as client:
        with AlertStore.for_workspace(world.workspace) as alerts:
            alert = alerts.query()[0]
        deferred = 0
        for path in ("/", "/?window=60m", "/?window=7d&tenure=new", "/funnels",
                     "/funnels?dimension=locale&value=en-GB", "/experiments",
                     "/experiments/ranker_v2", "/catalog", "/catalog/orders?by=locale&days=7",
                     "/catalog/voice_checkout_funnel", "/changes?kind=deploy",
                     f"/alerts/{alert.id}"):  # fmt: skip
            response = client.get(path)
            assert response.status_code == 200, (path, response.text[:500])
            assert "<main" in response.text
            for url in re.findall(r'data-fragment="([^"]+)"', response.text):
                deferred += 1
                fragment = client.get(url.replace("&amp;", "&"))
                assert fragment.status_code == 200, (url, fragment.text[:500])
                assert "data-figure=" in fragment.text or "plotly-graph-div" in fragment.text, url
        assert deferred >= 4  # at least the overview's four sections were deferred once
        full = client.get("/?window=24h&defer=0")
        assert "data-fragment=" not in full.text
        assert full.text.count("data-figure=") == 7
        # computed sections are now cached: the page carries them inline
        again = client.get("/?window=60m")
        assert "data-fragment=" not in again.text and again.text.count("data-figure=") == 7


def test_ack_and_silence_are_recorded_with_the_actor(world: Any) -> None:
    with TestClient(create_server_app(world.workspace, warm=False)) as client:
        with AlertStore.for_workspace(world.workspace) as alerts:
            alert = next(a for a in alerts.query(status="firing"))
        token = _csrf(client, f"/alerts/{alert.id}")
        auth = {"Authorization": f"Bearer {world.write_key}"}
        ack = client.post(f"/alerts/{alert.id}/ack", data={"csrf": token, "note": "on it"},
                          headers=auth, follow_redirects=False)  # fmt: skip
        assert ack.status_code == 303
        silence = client.post(f"/alerts/{alert.id}/silence", data={"csrf": token, "hours": "4"},
                              headers=auth, follow_redirects=False)  # fmt: skip
        assert silence.status_code == 303
        with AlertStore.for_workspace(world.workspace) as alerts:
            after = alerts.get(alert.id)
            silences = alerts.silences()
        assert after.status == "acknowledged"
        assert after.acked_by and after.acked_by.startswith("dashboard-test:")
        assert any(s.created_by.startswith("dashboard-test:") and s.rule == alert.rule
                   for s in silences)  # fmt: skip
