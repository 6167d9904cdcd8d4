"""HTTP face of the monitor area: ``POST /v1/changes`` and ``GET /metrics`` (Prometheus).

:func:`monitor_router` returns a FastAPI router the server includes::

    app.include_router(monitor_router(workspace))

* ``POST /v1/changes`` records a change (JSON body: ``kind``, ``service``, ``version``,
  ``scope``, ``author``, ``description``, ``rollback_of``, optional ``at`` ISO time,
  default now). It needs a key with ``write`` permission (``Authorization: Bearer KEY`` or
  HTTP Basic, as the capture API). Answers 201 with the stored change, 400 naming the bad
  field, 401/403 for keys.
* ``GET /v1/changes?since=24h&service=...`` lists changes (same key).
* ``GET /metrics`` is the Prometheus exposition (prometheus-client): open alerts by
  monitor, rule and severity (``tripwire_alerts_open``), alerts per state
  (``tripwire_alerts``), the last evaluated value, expected value and interval of every
  watched series of the streaming monitor (``tripwire_kpi_value`` …, labelled by monitor,
  metric and segment) and its progress (events read, late events, evaluated-until).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from tripwire.metrics.definitions import parse_duration
from tripwire.monitor.alerts import AlertStore
from tripwire.monitor.changes import ChangeError, ChangeLog, change_from_properties
from tripwire.store.keys import AuthenticationError, KeyStore
from tripwire.store.workspace import Workspace

#: Something exposing the streaming monitor's latest values (``StreamingMonitor``).
LiveSource = Callable[[], Any]


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def _key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode().partition(":")[0] or None
        except (binascii.Error, ValueError):
            return None
    return None


class _Collector:
    """Reads the state database (and the live monitor) on every scrape."""

    def __init__(self, workspace: Workspace, live: LiveSource | None) -> None:
        self.workspace = workspace
        self.live = live

    def collect(self) -> Any:
        open_alerts = GaugeMetricFamily(
            "tripwire_alerts_open",
            "Open (firing or acknowledged) alerts",
            labels=["monitor", "rule", "severity", "status"],
        )
        states = GaugeMetricFamily("tripwire_alerts", "Alerts by status", labels=["status"])
        with AlertStore.for_workspace(self.workspace) as store:
            rows = store.connection.execute(
                "SELECT monitor, rule, severity, status, count(*) FROM alerts"
                " WHERE status != 'resolved' GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
            ).fetchall()
            totals = dict(
                store.connection.execute(
                    "SELECT status, count(*) FROM alerts GROUP BY 1"
                ).fetchall()
            )
        for monitor, rule, severity, status, count in rows:
            open_alerts.add_metric([monitor, rule, severity, status], count)
        for status in ("firing", "acknowledged", "resolved"):
            states.add_metric([status], totals.get(status, 0))
        yield open_alerts
        yield states
        monitor = self.live() if self.live is not None else None
        if monitor is None:
            return
        labels = ["monitor", "metric", "segment"]
        families = {
            name: GaugeMetricFamily(f"tripwire_kpi_{name}", help_, labels=labels)
            for name, help_ in (
                ("value", "Last evaluated value of a watched series"),
                ("expected", "Expected value of the series (detector baseline)"),
                ("lower", "Lower end of the expected interval"),
                ("upper", "Upper end of the expected interval"),
            )
        }
        for row in monitor.latest():
            for name, family in families.items():
                value = row[name]
                if value == value:  # skip NaN
                    family.add_metric([row["monitor"], row["metric"], row["segment"]], value)
        yield from families.values()
        stats = monitor.stats
        progress = GaugeMetricFamily(
            "tripwire_monitor_events", "Events read by the streaming monitor"
        )
        progress.add_metric([], stats.events)
        yield progress
        late = GaugeMetricFamily(
            "tripwire_monitor_late_events", "Events skipped as later than the lateness window"
        )
        late.add_metric([], stats.late_events)
        yield late
        if stats.evaluated_until is not None:
            until = GaugeMetricFamily(
                "tripwire_monitor_evaluated_until_seconds",
                "Every bucket before this time was evaluated",
            )
            until.add_metric([], stats.evaluated_until.timestamp())
            yield until


def monitor_router(
    workspace: Workspace, *, live: LiveSource | None = None, keys: KeyStore | None = None
) -> APIRouter:
    """The routes of the monitor area for ``workspace``.

    ``live`` returns the running :class:`~tripwire.monitor.runner.StreamingMonitor` (or
    None) so ``/metrics`` can expose live KPI values; ``keys`` is the key store to check
    write keys against (default: the workspace's).
    """
    router = APIRouter()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(workspace, live))  # type: ignore[arg-type]

    def authenticate(request: Request) -> JSONResponse | None:
        store = keys or KeyStore.for_workspace(workspace)
        try:
            store.authenticate(_key(request), "write")
        except AuthenticationError as error:
            return _error(error.status, "unauthorized", error.reason)
        finally:
            if keys is None:
                store.close()
        return None

    @router.post("/v1/changes", status_code=201)
    async def post_change(request: Request) -> Response:
        denied = authenticate(request)
        if denied is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid_json", "the body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "invalid_body", "expected a JSON object")
        try:
            at = body.get("at")
            when = (
                datetime.fromisoformat(at.replace("Z", "+00:00"))
                if isinstance(at, str)
                else datetime.now(UTC)
            )
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            change = change_from_properties(body, when, origin="api")
        except (ChangeError, ValueError) as error:
            return _error(400, "invalid_change", str(error))
        with ChangeLog.for_workspace(workspace) as log:
            new = log.record(change)
        return JSONResponse({"change": change.to_json(), "created": bool(new)}, status_code=201)

    @router.get("/v1/changes")
    async def list_changes(
        request: Request, since: str = "24h", service: str | None = None
    ) -> Response:
        denied = authenticate(request)
        if denied is not None:
            return denied
        try:
            start = datetime.now(UTC) - parse_duration(since)
        except ValueError as error:
            return _error(400, "invalid_since", str(error))
        with ChangeLog.for_workspace(workspace) as log:
            changes = log.query(since=start, service=service)
        return JSONResponse({"changes": [c.to_json() for c in changes]})

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
