"""The app behind ``tripwire serve``: every HTTP face of a workspace on one server.

The capability areas each provide their own routes; this face composes them (DESIGN:
``web`` and ``cli`` may import everything, nothing imports them, so the composition lives
here and not in :mod:`tripwire.ingest`):

* the capture API (:func:`tripwire.ingest.app.create_app`: Segment/PostHog endpoints,
  ``/healthz``; it opens and closes the buffer and the key store);
* the monitor's routes (:func:`tripwire.monitor.http.monitor_router`: ``POST/GET
  /v1/changes``, ``GET /metrics``) and, with ``monitor=True``, the streaming monitor
  running as a buffer consumer while the server is up;
* the experiments' routes and jobs (:func:`tripwire.experiments.http.experiments_server`:
  ``GET /v1/assign`` and, with ``rollout_guard=True``, the scheduled rollout guard);
* the dashboard (:func:`tripwire.web.app.create_dashboard`), whose router carries its own
  lifespan (warm-up and change-log sync threads, stopped at shutdown).

Every background job (streaming monitor, rollout guard, dashboard warm-up and change-log
sync) starts in the app's lifespan and is stopped there, so an app that is never started
(``TestClient(app)`` without ``with``) runs none of them.

:func:`serve` runs the app under uvicorn; :func:`app_from_environment` is the uvicorn
factory its worker processes call.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI

from tripwire.ingest.app import create_app
from tripwire.store.buffer import Buffer
from tripwire.store.keys import KeyStore
from tripwire.store.workspace import Workspace

log = logging.getLogger("tripwire.web.server")

#: How worker processes learn which workspace to open.
WORKSPACE_ENV = "TRIPWIRE_SERVE_WORKSPACE"
#: ``1`` runs the streaming monitor and the rollout guard inside the server (one worker).
MONITOR_ENV = "TRIPWIRE_SERVE_MONITOR"
#: ``0`` serves the capture, monitor and experiment APIs without the dashboard.
DASHBOARD_ENV = "TRIPWIRE_SERVE_DASHBOARD"


def _streaming_monitor_router(workspace: Workspace) -> APIRouter:
    """No routes: a lifespan that runs the streaming monitor and exposes it as
    ``app.state.monitor`` (read by ``/metrics``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from tripwire.monitor.runner import start_streaming_monitor

        app.state.monitor = start_streaming_monitor(workspace)
        try:
            yield
        finally:
            app.state.monitor.stop()
            app.state.monitor = None

    return APIRouter(lifespan=lifespan)


def _experiments_router(
    workspace: Workspace, keys: KeyStore, *, rollout_guard: bool
) -> tuple[APIRouter, Any]:
    """What the experiments area serves (:func:`tripwire.experiments.http.experiments_server`:
    ``GET /v1/assign`` and, with ``rollout_guard``, the scheduled rollout guard), wrapped in
    a router whose lifespan starts and stops it; also returns the experiments server."""
    from tripwire.experiments.http import experiments_server

    experiments = experiments_server(workspace, keys=keys, guard=rollout_guard)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        experiments.start()
        try:
            yield
        finally:
            await asyncio.to_thread(experiments.stop)

    router = APIRouter(lifespan=lifespan)
    router.include_router(experiments.router)
    return router, experiments


#: The collector's first-generation threshold while serving (CPython's default is 700).
SERVING_GC_THRESHOLD = (50_000, 20, 100)


def _gc_tuning_router() -> APIRouter:
    """No routes: a lifespan that, once everything else has started, moves every object
    alive into the collector's permanent generation (``gc.freeze``) and raises the
    first-generation threshold; both are undone at shutdown.

    Why: a capture request of 100 events allocates ≈ 1,500 containers that mostly die with
    the request. With CPython's defaults the collector runs about once per request, walks
    the requests still in flight, promotes them, and so every few seconds walks the whole
    heap (≈ 190k objects: FastAPI, pyarrow, DuckDB bindings): ≈ 90 ms of CPU on the shared
    test machine, a pause that every request in flight waits out. Measured at 8,000
    events/s over 8 s: ≈ 400 young, 36 middle and one full collection (the loop stalled
    0.5 s) before; none after, and ≈ 0.5 ms less loop CPU per request. Frozen objects are
    never walked; cyclic garbage of requests is still collected (less often).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threshold = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(*SERVING_GC_THRESHOLD)
        try:
            yield
        finally:
            gc.set_threshold(*threshold)
            gc.unfreeze()

    return APIRouter(lifespan=lifespan)


def create_server_app(
    workspace: Workspace,
    *,
    monitor: bool = False,
    rollout_guard: bool | None = None,
    dashboard: bool = True,
    assign: bool = True,
    require_login: bool = False,
    warm: bool = True,
    tune_gc: bool = False,
    buffer: Buffer | None = None,
    keys: KeyStore | None = None,
) -> FastAPI:
    """The whole server of ``workspace`` (see the module docstring for what it composes).

    ``monitor`` runs the streaming monitor while the app is up and ``rollout_guard`` the
    scheduled rollout guard (default: the same as ``monitor``; both are one-process jobs,
    so only one server worker may run them). ``dashboard`` serves the web pages;
    ``require_login`` makes them ask for a key even from loopback; ``warm`` precomputes the
    overview at start. ``assign`` serves ``GET /v1/assign``. ``tune_gc`` freezes the heap
    after start-up and collects young objects less often (:func:`_gc_tuning_router`; a
    process-wide setting, so only for the process that serves: :func:`serve` turns it on).
    ``buffer``/``keys`` are passed to the capture app (used as they are and left open:
    tests, embedding).
    """
    app = create_app(workspace, buffer=buffer, keys=keys)
    the_keys: KeyStore = app.state.capture.keys
    app.title = "tripwire"
    app.state.monitor = None

    from tripwire.monitor.http import monitor_router

    app.include_router(
        monitor_router(workspace, live=lambda: getattr(app.state, "monitor", None), keys=the_keys)
    )
    if monitor:
        app.include_router(_streaming_monitor_router(workspace))
    app.state.experiments = None
    if assign:
        guard = monitor if rollout_guard is None else rollout_guard
        router, app.state.experiments = _experiments_router(
            workspace, the_keys, rollout_guard=guard
        )
        app.include_router(router)
    if dashboard:
        from tripwire.web.app import create_dashboard

        app.include_router(
            create_dashboard(workspace, keys=the_keys, require_login=require_login, warm=warm)
        )
    if tune_gc:  # last: its start-up runs after every other router's
        app.include_router(_gc_tuning_router())
    return app


def app_from_environment() -> FastAPI:
    """uvicorn factory: the server app of the workspace named in ``TRIPWIRE_SERVE_WORKSPACE``."""
    return create_server_app(
        Workspace.load(Path(os.environ[WORKSPACE_ENV])),
        monitor=os.environ.get(MONITOR_ENV) == "1",
        dashboard=os.environ.get(DASHBOARD_ENV, "1") == "1",
        tune_gc=True,
    )


def serve(
    workspace: Workspace,
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    workers: int = 1,
    access_log: bool = False,
    log_level: str = "info",
    monitor: bool = False,
    dashboard: bool = True,
) -> None:
    """Serve ``workspace`` (capture API, monitor and experiment APIs, dashboard) until
    interrupted (blocks).

    uvicorn picks httptools and uvloop when they are installed (``uvicorn[standard]``).
    With ``workers`` > 1 each worker process opens its own buffer writer (SQLite serialises
    their commits); ``monitor`` (the streaming monitor and the rollout guard) only runs
    with one worker, since each worker would otherwise run its own.
    """
    os.environ[WORKSPACE_ENV] = str(workspace.root)
    os.environ[MONITOR_ENV] = "1" if monitor and workers == 1 else "0"
    os.environ[DASHBOARD_ENV] = "1" if dashboard else "0"
    uvicorn.run(
        "tripwire.web.server:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        log_level=log_level,
        timeout_graceful_shutdown=10,
        server_header=False,
    )
