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

The lead mounts it in the server app: ``app.include_router(assign_router(service))`` with
``service = AssignService.for_workspace(workspace)``, and calls ``service.close()`` on
shutdown.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.requests import Request

from tripwire.api import Tripwire
from tripwire.experiments.exposure_log import Assigner, tripwire_sender
from tripwire.experiments.spec import ExperimentSpecError, SpecNotFound
from tripwire.ingest.app import header_write_key
from tripwire.ingest.errors import IngestError
from tripwire.store.keys import AuthenticationError, KeyStore
from tripwire.store.workspace import Workspace

ASSIGN_SOURCE = "assign-api"
_RESERVED = frozenset({"experiment", "unit_id", "writeKey"})


class AssignService:
    """The assigner, its event client and the key store behind ``/v1/assign``."""

    def __init__(
        self, assigner: Assigner, keys: KeyStore | None, client: Tripwire | None = None
    ) -> None:
        self.assigner = assigner
        self.keys = keys
        self.client = client

    @classmethod
    def for_workspace(
        cls, workspace: Workspace, *, require_key: bool = True, state_ttl_s: float = 1.0
    ) -> AssignService:
        client = Tripwire(workspace, source=ASSIGN_SOURCE)
        assigner = Assigner(workspace, tripwire_sender(client), state_ttl_s=state_ttl_s)
        keys = KeyStore.for_workspace(workspace) if require_key else None
        return cls(assigner, keys, client)

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
        if self.keys is not None:
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
