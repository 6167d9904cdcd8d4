"""POST /v1/changes and GET /metrics through the router, with write keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tripwire.monitor.alerts import AlertDraft, AlertStore
from tripwire.monitor.changes import ChangeLog
from tripwire.monitor.http import monitor_router
from tripwire.store.keys import KeyStore
from tripwire.store.workspace import init_workspace


def test_changes_endpoint_and_prometheus(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    with KeyStore.for_workspace(ws) as keys:
        secret = keys.create("deploy-bot").secret
        read_only = keys.create("dash", ("read",)).secret
    app = FastAPI()
    app.include_router(monitor_router(ws))
    client = TestClient(app)
    body = {
        "kind": "deploy",
        "service": "payments-token",
        "version": "2.3.1",
        "scope": {"locale": "en-GB"},
        "at": "2026-11-07T18:17:00Z",
    }
    assert client.post("/v1/changes", json=body).status_code == 401
    assert (
        client.post(
            "/v1/changes", json=body, headers={"Authorization": f"Bearer {read_only}"}
        ).status_code
        == 403
    )
    auth = {"Authorization": f"Bearer {secret}"}
    created = client.post("/v1/changes", json=body, headers=auth)
    assert created.status_code == 201 and created.json()["created"] is True
    assert client.post("/v1/changes", json=body, headers=auth).json()["created"] is False
    bad = client.post("/v1/changes", json={**body, "scope": "en-GB"}, headers=auth)
    assert bad.status_code == 400 and "scope" in bad.json()["message"]
    assert client.post("/v1/changes", content=b"{", headers=auth).status_code == 400
    with ChangeLog.for_workspace(ws) as log:
        (change,) = log.query()
    assert (change.service, change.origin, change.at) == (
        "payments-token",
        "api",
        datetime(2026, 11, 7, 18, 17, tzinfo=UTC),
    )

    now = datetime.now(UTC)
    with AlertStore.for_workspace(ws) as store:
        store.fire(
            AlertDraft(
                "conv",
                "conversion_down",
                "voice_checkout_conversion",
                "P1",
                {"locale": "en-GB"},
                now,
                now - timedelta(minutes=5),
                0.4,
                0.6,
                0.5,
                0.7,
                -1,
                "detector down",
            )
        )
    text = client.get("/metrics").text
    assert (
        'tripwire_alerts_open{monitor="conv",rule="conversion_down",severity="P1",status="firing"} 1.0'
        in text
    )
    assert 'tripwire_alerts{status="firing"} 1.0' in text
