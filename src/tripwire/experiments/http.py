"""``GET /v1/assign``: assignment over HTTP for services that are not in Python.

::

    GET /v1/assign?experiment=ranker_v2&unit_id=user-1&locale=ja-JP&device=Echo%20Show
    Authorization: Basic base64(<write key>:)        (or Bearer <key>, or ?writeKey=)

    200 {"experiment": "ranker_v2", "unit_id": "user-1", "arm": "treatment",
         "reason": "assigned", "first_exposure": true}

Query parameters other than ``experiment``, ``unit_id`` and ``writeKey`` are the unit's
attributes (population check, exposure context), exactly as ``tw.assign`` takes them.
The first assignment of a unit logs its ``$exposure`` event (source ``assign-api``), so a
key with the ``write`` permission is needed. Unknown experiment → 404; a spec with errors
→ 409 (the errors are listed); missing parameters → 400; bad key → 401/403.

The server mounts everything experiments serve through :func:`experiments_server`::

    experiments = experiments_server(workspace, keys=the_keys)
    app.include_router(experiments.router)       # GET /v1/assign
    experiments.start()    # on startup: the scheduled rollout guard (every 5 minutes)
    experiments.stop()     # on shutdown: stops the guard, flushes pending exposures

The scheduled guard is :class:`~tripwire.experiments.rollout.RolloutGuard`: each pass runs
``tripwire experiment check`` on every locked experiment whose rollout is running; a breach
pauses that rollout, records why in the decision log and is logged (logger
``tripwire.experiments``) and handed to ``notify``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.requests import Request

from tripwire.api import Tripwire
from tripwire.experiments.exposure_log import Assigner, tripwire_sender
from tripwire.experiments.rollout import CheckResult, Notifier, RolloutGuard
from tripwire.experiments.spec import ExperimentSpecError, SpecNotFound
from tripwire.ingest.app import header_write_key
from tripwire.ingest.errors import IngestError
from tripwire.store.keys import AuthenticationError, KeyStore
from tripwire.store.workspace import Workspace

ASSIGN_SOURCE = "assign-api"
logger = logging.getLogger("tripwire.experiments")
_RESERVED = frozenset({"experiment", "unit_id", "writeKey"})


class AssignService:
    """The assigner, its event client and the key store behind ``/v1/assign``."""

    def __init__(
        self,
        assigner: Assigner,
        keys: KeyStore | None,
        client: Tripwire | None = None,
        *,
        owns_keys: bool = True,
    ) -> None:
        self.assigner = assigner
        self.keys = keys
        self.client = client
        self.owns_keys = owns_keys

    @classmethod
    def for_workspace(
        cls,
        workspace: Workspace,
        *,
        require_key: bool = True,
        state_ttl_s: float = 1.0,
        keys: KeyStore | None = None,
    ) -> AssignService:
        """The service of ``workspace``; ``keys`` (e.g. the server's shared key store) is
        used as is and left open, otherwise the workspace's key store is opened here."""
        client = Tripwire(workspace, source=ASSIGN_SOURCE)
        assigner = Assigner(workspace, tripwire_sender(client), state_ttl_s=state_ttl_s)
        if not require_key:
            return cls(assigner, None, client)
        if keys is not None:
            return cls(assigner, keys, client, owns_keys=False)
        return cls(assigner, KeyStore.for_workspace(workspace), client)

    def authenticate(self, request: Request) -> None:
        if self.keys is None:
            return
        header = header_write_key(request)
        query = request.query_params.get("writeKey")
        self.keys.authenticate(header or query, "write")

    def close(self) -> None:
        """Flush pending exposures and release the databases."""
        self.assigner.close()
        if self.client is not None:
            self.client.close()
        if self.keys is not None and self.owns_keys:
            self.keys.close()


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


def assign_router(service: AssignService) -> APIRouter:
    """The router with ``GET /v1/assign`` (see the module docstring)."""
    router = APIRouter()

    @router.get("/v1/assign")
    def assign_endpoint(request: Request) -> JSONResponse:
        try:
            service.authenticate(request)
        except IngestError as error:
            return _error(error.status, "unauthorized", error.message)
        except AuthenticationError as error:
            return _error(error.status, "unauthorized", error.reason)
        params = request.query_params
        experiment, unit_id = params.get("experiment"), params.get("unit_id")
        missing = [n for n, v in (("experiment", experiment), ("unit_id", unit_id)) if not v]
        if missing:
            return _error(400, "bad_request", f"missing query parameter(s): {', '.join(missing)}")
        assert experiment is not None and unit_id is not None
        attributes = {k: v for k, v in params.items() if k not in _RESERVED}
        try:
            result = service.assigner.assign(experiment, unit_id, attributes)
        except SpecNotFound as error:
            return _error(404, "unknown_experiment", str(error))
        except ExperimentSpecError as error:
            return _error(
                409, "invalid_spec", "the experiment's spec has errors",
                errors=[str(e) for e in error.errors],
            )  # fmt: skip
        return JSONResponse(
            {
                "experiment": experiment,
                "unit_id": unit_id,
                "arm": result.arm,
                "reason": result.assignment.reason,
                "first_exposure": result.logged,
            }
        )

    return router


def _log_pass(results: dict[str, CheckResult | str]) -> None:
    for name, result in results.items():
        if isinstance(result, CheckResult) and result.breached:
            logger.warning("rollout guard paused %s: %s", name, result.summary())
        elif isinstance(result, CheckResult):
            logger.info("rollout guard: %s: %s", name, result.summary())
        else:
            logger.debug("rollout guard: %s: %s", name, result)


@dataclass
class ExperimentsServer:
    """What the server mounts for experiments: the ``/v1/assign`` router, and the scheduled
    rollout guard started and stopped with the app (see the module docstring)."""

    router: APIRouter
    service: AssignService
    guard: RolloutGuard | None

    def start(self) -> None:
        """Start the scheduled guard (its first pass runs at once, in the background)."""
        if self.guard is not None:
            self.guard.start()

    def stop(self) -> None:
        """Stop the guard (waiting for a pass in progress) and close the assign service."""
        if self.guard is not None:
            self.guard.stop()
        self.service.close()


def experiments_server(
    workspace: Workspace,
    *,
    keys: KeyStore | None = None,
    require_key: bool = True,
    guard: bool = True,
    guard_interval: timedelta = timedelta(minutes=5),
    guard_window: timedelta = timedelta(days=1),
    notify: Notifier | None = None,
) -> ExperimentsServer:
    """``GET /v1/assign`` and the scheduled rollout guard of ``workspace`` for the server.

    ``keys``: the server's key store (shared, left open); ``guard_interval``: time between
    guard passes; ``guard_window``: the live data each pass reads; ``notify``: called with
    each breach's :class:`~tripwire.experiments.rollout.CheckResult` (breaches are also
    logged and recorded in the decision log).
    """
    service = AssignService.for_workspace(workspace, require_key=require_key, keys=keys)
    rollout_guard = (
        RolloutGuard(
            workspace,
            interval=guard_interval,
            window=guard_window,
            notify=notify,
            on_pass=_log_pass,
        )
        if guard
        else None
    )
    return ExperimentsServer(assign_router(service), service, rollout_guard)
