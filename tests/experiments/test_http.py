"""``GET /v1/assign`` through FastAPI's test client."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tripwire.experiments.http import AssignService, assign_router
from tripwire.store.keys import KeyStore
from tripwire.store.workspace import Workspace, init_workspace

SPEC = """\
name: exp
population:
  where: {locale: en-US}
arms:
  - {name: control, weight: 1}
  - {name: treatment, weight: 1}
primary: {metric: m, mde: 5%}
"""


@pytest.fixture
def setup(tmp_path: Path) -> Any:
    ws: Workspace = init_workspace(tmp_path / "ws")
    (ws.experiments_dir / "exp.yaml").write_text(SPEC)
    (ws.experiments_dir / "broken.yaml").write_text("name: broken\narms: []\n")
    with KeyStore.for_workspace(ws) as keys:
        secret = keys.create("backend", permissions=["write"]).secret
        reader = keys.create("dashboard", permissions=["read"]).secret
    service = AssignService.for_workspace(ws, state_ttl_s=0)
    app = FastAPI()
    app.include_router(assign_router(service))
    with TestClient(app) as client:
        yield ws, client, secret, reader, service
    service.close()


def basic(secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{secret}:".encode()).decode()}


def test_assign_returns_the_arm_and_logs_the_first_exposure(setup: Any) -> None:
    _, client, secret, _, service = setup
    url = "/v1/assign?experiment=exp&unit_id=u1&locale=en-US&device=web"
    first = client.get(url, headers=basic(secret))
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["arm"] in ("control", "treatment") and body["first_exposure"] is True
    assert body["reason"] == "assigned"
    again = client.get(url + f"&writeKey={secret}")
    assert again.json() == {**body, "first_exposure": False}
    other = client.get("/v1/assign?experiment=exp&unit_id=u2&locale=de-DE",
                       headers={"Authorization": f"Bearer {secret}"})  # fmt: skip
    assert other.status_code == 200 and other.json()["arm"] is None
    assert other.json()["reason"].startswith("not_eligible")
    assert service.client is not None
    service.client.flush()
    rows = service.client.sql(
        "SELECT user_id, prop_variant, device, source FROM events WHERE event = '$exposure'"
    ).to_pylist()
    assert rows == [{"user_id": "u1", "prop_variant": body["arm"], "device": "web",
                     "source": "assign-api"}]  # fmt: skip


@pytest.mark.parametrize(
    ("query", "auth", "status", "code"),
    [
        ("experiment=exp&unit_id=u1", None, 401, "unauthorized"),
        ("experiment=exp&unit_id=u1", "reader", 403, "unauthorized"),
        ("experiment=exp&unit_id=u1", "bogus", 401, "unauthorized"),
        ("unit_id=u1", "writer", 400, "bad_request"),
        ("experiment=nope&unit_id=u1", "writer", 404, "unknown_experiment"),
        ("experiment=broken&unit_id=u1", "writer", 409, "invalid_spec"),
    ],
)
def test_bad_requests(setup: Any, query: str, auth: str | None, status: int, code: str) -> None:
    _, client, secret, reader, _ = setup
    key = {"writer": secret, "reader": reader, "bogus": "tw_nope"}.get(auth or "")
    response = client.get(f"/v1/assign?{query}", headers=basic(key) if key else {})
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    if code == "invalid_spec":
        assert any("broken.yaml:2: arms" in e for e in response.json()["errors"])


# --------------------------------------------------------------------------- the server's part


def _live_world() -> Any:
    from . import live_world

    return live_world


def test_experiments_server_serves_assign_and_runs_the_guard(tmp_path: Path) -> None:
    """The composition the server makes: the router in the app, the guard started and
    stopped by the app's lifespan. The guard's first pass pauses a harmed rollout, after
    which /v1/assign enrols no new unit (reason ``paused``)."""
    import time as clock
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    from tripwire.experiments.http import experiments_server
    from tripwire.experiments.registry import Registry
    from tripwire.experiments.spec import load_spec

    lw = _live_world()
    lake = lw.build_lake(tmp_path / "lake", harm=lw.Harm(latency_factor=1.6, error_factor=3.0))
    ws = lw.workspace_on(tmp_path / "ws", lake)
    loaded = load_spec(ws, lw.EXPERIMENT)
    with Registry.open(ws) as registry:
        registry.lock(lw.EXPERIMENT, loaded.hash, loaded.spec.model_dump(mode="json"))
    keys = KeyStore.for_workspace(ws)
    secret = keys.create("backend", permissions=["write"]).secret
    breaches: list[Any] = []
    experiments = experiments_server(ws, keys=keys, notify=breaches.append)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        experiments.start()
        try:
            yield
        finally:
            experiments.stop()

    app = FastAPI(lifespan=lifespan)
    app.include_router(experiments.router)
    with TestClient(app) as client:
        guard = experiments.guard
        assert guard is not None
        deadline = clock.monotonic() + 60
        while guard.passes == 0 and clock.monotonic() < deadline:
            clock.sleep(0.05)
        assert guard.passes >= 1 and guard.last_error is None
        assert [b.experiment for b in breaches] == [lw.EXPERIMENT]
        experiments.service.assigner.state_ttl_s = 0
        response = client.get(
            f"/v1/assign?experiment={lw.EXPERIMENT}&unit_id=brand-new-unit", headers=basic(secret)
        )
        assert response.status_code == 200, response.text
        assert response.json()["arm"] is None and response.json()["reason"] == "paused"
    with Registry.open(ws) as registry:
        state = registry.rollout_state(lw.EXPERIMENT)
        assert state is not None and state.status == "paused"
    # the server's shared key store is left open for the rest of the app
    assert keys.authenticate(secret, "write") is not None
    keys.close()
