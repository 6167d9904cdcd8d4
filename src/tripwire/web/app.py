"""The dashboard: server-rendered pages (Jinja2) with Plotly charts, as one FastAPI router.

``create_dashboard(workspace)`` returns an :class:`~fastapi.APIRouter` that the capture
server mounts at ``/`` (``tripwire serve``). Pages:

* ``/`` overview (the 3am page): open alerts by severity, a KPI over 60 min / 24 h / 7 d
  with its expected band and change markers, data health, cohort heatmap, latency.
* ``/alerts/{id}``: the alert, ack / resolve / silence, and its root-cause analysis.
* ``/funnels``: step conversion before vs after a time, with segment filters.
* ``/experiments`` and ``/experiments/{name}``: status list and scorecard.
* ``/catalog`` and ``/catalog/{name}``: metric definitions, compiled SQL, quick chart.
* ``/changes``: the change log, filterable, and a form to record a change.

Plotly's JavaScript is served from the installed ``plotly`` package (``/static/plotly.min.js``),
so the dashboard works offline. Access rules and CSRF: :mod:`tripwire.web.security`.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from tripwire.metrics.definitions import FunnelMetric, RetentionMetric
from tripwire.monitor.alerts import AlertError, AlertStore
from tripwire.monitor.changes import CHANGE_KINDS, ChangeError, change_from_properties, parse_scope
from tripwire.monitor.definitions import SEVERITIES
from tripwire.rca.incidents import IncidentStore
from tripwire.store.keys import KeyStore
from tripwire.store.workspace import Workspace
from tripwire.web import charts
from tripwire.web.data import DEFAULT_KPI, TENURES, WINDOWS, DashboardData
from tripwire.web.experiments import experiment_rows, scorecard, warm_scorecards
from tripwire.web.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    SESSION_COOKIE,
    AccessDenied,
    Gate,
    Viewer,
    csrf_ok,
    csrf_token,
)

HERE = Path(__file__).parent
STATIC = HERE / "static"
#: Dimensions offered by the quick chart and the funnel filters (docs/world.md).
DIMENSIONS = ("locale", "device", "trait_tenure", "source", "app_version", "os")
SILENCE_HOURS = (1, 4, 24)
FUNNEL_HOURS = (1, 6, 24, 72, 168)


def plotly_js_path() -> Path:
    """``plotly/package_data/plotly.min.js`` of the installed ``plotly`` package."""
    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda v, d=1: "–" if v is None else f"{v:.{d}%}"
    env.filters["num"] = _fmt_num
    env.filters["when"] = lambda d: "–" if d is None else d.strftime("%Y-%m-%d %H:%M")
    env.filters["tojson_fig"] = lambda fig: jinja2.utils.markupsafe.Markup(
        json.dumps(fig, default=str).replace("</", "<\\/")
    )
    return env


def _fmt_num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if abs(value) < 1:
        return f"{value:.4g}"
    return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"


def _rate_like(data: DashboardData, name: str) -> bool:
    return getattr(data.metric(name), "type", "") in ("ratio", "proportion")


def create_dashboard(
    workspace: Workspace,
    *,
    keys: KeyStore | None = None,
    require_login: bool = False,
    cache_seconds: float = 30.0,
    warm: bool = True,
    sync_every: float | None = 30.0,
) -> APIRouter:
    """The dashboard routes of ``workspace`` (mount at ``/``).

    ``keys`` is the key store to check keys against (default: the workspace's, opened
    now); ``require_login`` asks for a key even from loopback clients (clients beyond
    loopback always need one). The router carries a lifespan (merged into the app's by
    ``include_router``): while the app runs, a background thread syncs the change log from
    the lake's ``$change`` events every ``sync_every`` seconds and, with ``warm``, first
    computes the overview's sections and the scorecards, so the first visitor does not wait
    for the lake (the engine itself is opened before the app serves). Shutdown stops it,
    interrupts a lake query in flight and closes the engine.
    """
    store = keys if keys is not None else KeyStore.for_workspace(workspace)
    gate = Gate(store, require_login=require_login)
    data = DashboardData(workspace, ttl=cache_seconds)
    if warm:
        data.after_warm = lambda: warm_scorecards(data)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        app.state.dashboard_data = data
        await asyncio.to_thread(data.open)
        data.start(warm=warm, sync_every=sync_every)
        try:
            yield
        finally:
            await asyncio.to_thread(data.close)

    env = _environment()
    router = APIRouter(lifespan=lifespan)

    def page(
        request: Request, viewer: Viewer, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        token = csrf_token(request)
        html = env.get_template(template).render(
            request=request,
            viewer=viewer,
            csrf=token,
            csrf_field=CSRF_FIELD,
            path=request.url.path,
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        if request.cookies.get(CSRF_COOKIE) != token:
            response.set_cookie(CSRF_COOKIE, token, httponly=False, samesite="strict")
        response.headers["Cache-Control"] = "no-store"
        return response

    def fragment(template: str, **context: Any) -> HTMLResponse:
        """A page section alone (loaded by the page's script into its placeholder)."""
        html = env.get_template(template).render(**context)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    def denied(request: Request, error: AccessDenied) -> Response:
        if error.status == 401 and request.method == "GET":
            target = quote(
                str(request.url.path) + ("?" + request.url.query if request.url.query else "")
            )
            return RedirectResponse(f"/login?next={target}", status_code=303)
        return page(
            request,
            Viewer(None),
            "error.html",
            status=error.status,
            title="Not allowed",
            message=error.reason,
        )

    def bad_request(request: Request, viewer: Viewer, message: str, status: int = 400) -> Response:
        return page(request, viewer, "error.html", status=status, title="Error", message=message)

    async def form_of(request: Request) -> dict[str, str]:
        form = await request.form()
        return {k: str(v) for k, v in form.items()}

    async def write_guard(request: Request) -> tuple[Viewer, dict[str, str]] | Response:
        """Authenticate a write and check its CSRF token; a Response means refused."""
        try:
            viewer = gate.writer(request)
        except AccessDenied as error:
            return denied(request, error)
        form = await form_of(request)
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return bad_request(
                request, viewer, "CSRF check failed: reload the page and try again", 403
            )
        return viewer, form

    def actor(viewer: Viewer, form: dict[str, str]) -> str:
        name = form.get("who", "").strip()
        return f"{name} ({viewer.actor})" if name else viewer.actor

    # -- static and login -------------------------------------------------------------------
    @router.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> Response:
        return FileResponse(
            plotly_js_path(),
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        path = STATIC / name
        if "/" in name or not path.is_file():
            return Response("not found", status_code=404)
        media = {".css": "text/css", ".svg": "image/svg+xml"}.get(path.suffix, "text/javascript")
        return FileResponse(path, media_type=media, headers={"Cache-Control": "max-age=300"})

    @router.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/") -> Response:
        return page(request, Viewer(None), "login.html", title="Log in", next=_safe_next(next))

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await form_of(request)
        target = _safe_next(form.get("next", "/"))
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return page(
                request, Viewer(None), "login.html", status=403, title="Log in", next=target,
                error="CSRF check failed: reload the page and try again",
            )  # fmt: skip
        try:
            token = gate.login(form.get("key", "").strip())
        except AccessDenied as error:
            return page(
                request, Viewer(None), "login.html", status=error.status, title="Log in",
                next=target, error=f"key refused: {error.reason}",
            )  # fmt: skip
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict")
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        form = await form_of(request)
        if csrf_ok(request, form.get(CSRF_FIELD)):
            gate.logout(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    # -- overview -------------------------------------------------------------------------
    def overview_params(
        request: Request, viewer: Viewer, kpi: str, window: str, tenure: str
    ) -> Response | None:
        scalar = scalar_metrics()
        if kpi not in scalar:
            return bad_request(request, viewer, f"kpi: unknown metric {kpi!r}", 404)
        if window not in WINDOWS:
            return bad_request(request, viewer, f"window: one of {', '.join(WINDOWS)}")
        if tenure and tenure not in TENURES:
            return bad_request(request, viewer, f"tenure: one of {', '.join(TENURES)}")
        return None

    def scalar_metrics() -> list[str]:
        return [
            n
            for n in data.metric_names()
            if not isinstance(data.metric(n), FunnelMetric | RetentionMetric)
        ]

    def kpi_section(kpi: str, window: str, tenure: str) -> dict[str, Any]:
        points = data.kpi_series(kpi, window)
        start = points[0].at if points else data.end()
        stop = points[-1].at + timedelta(hours=1) if points else data.end()
        changes = data.changes(since=start, until=stop)  # fresh: the state db, no lake
        return {
            "figures": {
                "kpi": charts.kpi_figure(kpi, points, changes, percent=_rate_like(data, kpi))
            },
            "changes": changes,
            "latest": points[-1] if points else None,
        }

    def health_section(kpi: str, window: str, tenure: str) -> dict[str, Any]:
        health = data.health()
        sources = sorted({r["source"] for r in health["events_per_minute"]})
        per_source = {
            s: [(r["bucket"], r["value"]) for r in health["events_per_minute"] if r["source"] == s]
            for s in sources
        }
        return {
            "figures": {
                "events": charts.lines_figure(
                    "events per minute by source (hourly mean)", per_source, ytitle="events/min"
                ),
                "shares": charts.lines_figure(
                    "late and rejected shares",
                    {"late (>5 min)": health["late"], "rejected": health["rejected"]},
                    percent=True,
                ),
                "ledger": charts.lines_figure(
                    "orders per hour: ledger vs telemetry",
                    {"ledger": health["ledger_orders"], "telemetry": health["telemetry_orders"]},
                    ytitle="orders",
                ),
            }
        }

    def cohort_section(kpi: str, window: str, tenure: str) -> dict[str, Any]:
        cohort = data.cohort_change(kpi, tenure or None)
        title = f"{kpi}: last 24 h vs the 7 days before" + (f" (tenure {tenure})" if tenure else "")
        return {
            "figures": {
                "cohort": charts.heatmap_figure(
                    title, cohort["devices"], cohort["locales"], cohort["z"]
                )
            }
        }

    def latency_section(kpi: str, window: str, tenure: str) -> dict[str, Any]:
        latency = data.latency()
        return {
            "figures": {
                "latency": charts.bars_figure(
                    "turn pipeline latency by stage (24 h)",
                    latency["stages"],
                    latency["quantiles"],
                    ytitle="ms",
                ),
                "fallback": charts.lines_figure(
                    "fallback engagement", {"fallback rate": latency["fallback"]}, percent=True
                ),
            }
        }

    #: The overview's lake-backed sections: builder and the cache keys it needs.
    Section = Callable[[str, str, str], dict[str, Any]]
    Keys = Callable[[str, str, str], list[tuple[Any, ...]]]
    overview_sections: dict[str, tuple[Section, Keys]] = {
        "kpi": (kpi_section, lambda k, w, t: [("kpi", k, w)]),
        "health": (health_section, lambda k, w, t: [("health",)]),
        "cohort": (cohort_section, lambda k, w, t: [("cohort", k, t or None)]),
        "latency": (latency_section, lambda k, w, t: [("latency",)]),
    }

    @router.get("/", response_class=HTMLResponse)
    def overview(
        request: Request,
        kpi: str = DEFAULT_KPI,
        window: str = "24h",
        tenure: str = "",
        defer: int = 1,
    ) -> Response:
        """The 3am page. Alerts come from the state database; a lake-backed section that is
        not computed yet is deferred (``defer=1``, the default): the page is sent at once
        and the browser fetches the section from ``/fragments/overview/<name>``."""
        try:
            viewer = gate.viewer(request)
        except AccessDenied as error:
            return denied(request, error)
        problem = overview_params(request, viewer, kpi, window, tenure)
        if problem is not None:
            return problem
        with AlertStore.for_workspace(workspace) as alerts:
            open_alerts = alerts.query(status="open")
        by_severity = Counter(a.severity for a in open_alerts)
        sections = {
            name: (
                build(kpi, window, tenure)
                if not defer or all(data.cache.has(k) for k in keys(kpi, window, tenure))
                else None
            )
            for name, (build, keys) in overview_sections.items()
        }
        return page(
            request,
            viewer,
            "overview.html",
            title="Overview",
            alerts=open_alerts,
            by_severity=[(s, by_severity.get(s, 0)) for s in SEVERITIES],
            kpis=scalar_metrics(),
            kpi=kpi,
            window=window,
            windows=list(WINDOWS),
            tenure=tenure,
            tenures=TENURES,
            sections=sections,
            query=urlencode({"kpi": kpi, "window": window, "tenure": tenure}),
            data_end=data.end(),
        )

    @router.get("/fragments/overview/{name}", response_class=HTMLResponse)
    def overview_fragment(
        request: Request, name: str, kpi: str = DEFAULT_KPI, window: str = "24h", tenure: str = ""
    ) -> Response:
        """One section of the overview (what a deferred placeholder loads)."""
        try:
            viewer = gate.viewer(request)
        except AccessDenied as error:
            return denied(request, error)
        if name not in overview_sections:
            return bad_request(request, viewer, f"no overview section {name!r}", 404)
        problem = overview_params(request, viewer, kpi, window, tenure)
        if problem is not None:
            return problem
        build, _ = overview_sections[name]
        return fragment(
            f"overview_{name}.html", s=build(kpi, window, tenure), kpi=kpi, window=window
        )

    # -- alerts ---------------------------------------------------------------------------
    def incident_of(alert_id: int) -> Any:
        with IncidentStore.for_workspace(workspace) as incidents:
            matches = [r for r in incidents.list() if r.alert_id == alert_id]
        return matches[0] if matches else None

    @router.get("/alerts/{alert_id}", response_class=HTMLResponse)
    def alert_page(request: Request, alert_id: int) -> Response:
        try:
            viewer = gate.viewer(request)
        except AccessDenied as error:
            return denied(request, error)
        with AlertStore.for_workspace(workspace) as alerts:
            try:
                alert = alerts.get(alert_id)
            except AlertError as error:
                return bad_request(request, viewer, str(error), 404)
            changes = alerts.changes_for(alert)
        incident = incident_of(alert_id)
        rca = _rca_view(incident) if incident is not None else None
        return page(
            request,
            viewer,
            "alert.html",
            title=f"Alert #{alert.id}",
            alert=alert,
            changes=changes,
            incident=incident,
            rca=rca,
            silence_hours=SILENCE_HOURS,
        )

    @router.post("/alerts/{alert_id}/{action}")
    async def alert_action(request: Request, alert_id: int, action: str) -> Response:
        guarded = await write_guard(request)
        if isinstance(guarded, Response):
            return guarded
        viewer, form = guarded
        who = actor(viewer, form)
        note = form.get("note", "").strip()
        try:
            with AlertStore.for_workspace(workspace) as alerts:
                alert = alerts.get(alert_id)
                if action == "ack":
                    alerts.acknowledge(alert_id, by=who, note=note)
                elif action == "resolve":
                    alerts.resolve(alert_id, by=who, note=note)
                elif action == "silence":
                    hours = int(form.get("hours", "4"))
                    if hours not in SILENCE_HOURS:
                        raise AlertError(f"hours: one of {SILENCE_HOURS}")
                    alerts.silence(
                        until=datetime.now(UTC) + timedelta(hours=hours),
                        monitor=alert.monitor,
                        rule=alert.rule,
                        segment=alert.segment,
                        by=who,
                        reason=note or f"silenced from the dashboard for {hours} h",
                    )
                elif action == "rca":
                    from tripwire.rca.incidents import record_investigation
                    from tripwire.rca.investigation import investigate_alert

                    with data._lock:
                        inv = investigate_alert(workspace, alert_id, backend=data.metrics.backend)
                    record_investigation(workspace, inv)
                else:
                    return bad_request(request, viewer, f"unknown action {action!r}", 404)
        except (AlertError, ValueError) as error:
            return bad_request(request, viewer, str(error))
        return RedirectResponse(f"/alerts/{alert_id}", status_code=303)

    @router.get("/incidents/{incident_id}/report", response_class=HTMLResponse)
    def incident_report(request: Request, incident_id: str) -> Response:
        try:
            viewer = gate.viewer(request)
        except AccessDenied as error:
            return denied(request, error)
        with IncidentStore.for_workspace(workspace) as incidents:
            record = incidents.get_or_none(incident_id)
        if record is None or not record.report_html or not Path(record.report_html).is_file():
            return bad_request(request, viewer, f"no report for incident {incident_id!r}", 404)
        return HTMLResponse(Path(record.report_html).read_text(encoding="utf-8"))

    # -- funnels --------------------------------------------------------------------------
    @router.get("/funnels", response_class=HTMLResponse)
    def funnels(
        request: Request,
        metric: str = "",
        at: str = "",
        hours: int = 24,
        dimension: str = "",
        value: str = "",
        defer: int = 1,
    ) -> Response:
        try:
            viewer = gate.viewer(request)
        except AccessDenied as error:
            return denied(request, error)
        names = data.funnel_metrics()
        if not names:
            return bad_request(request, viewer, "the catalog has no funnel metric", 404)
        metric = metric or names[0]
        if metric not in names:
            return bad_request(request, viewer, f"metric: not a funnel metric: {metric!r}", 404)
        if hours not in FUNNEL_HOURS:
            return bad_request(request, viewer, "hours: one of 1, 6, 24, 72, 168")
        end = data.end()
        try:
            split = (
                datetime.fromisoformat(at).replace(tzinfo=UTC)
                if at
                else end - timedelta(hours=hours)
            )
        except ValueError:
            return bad_request(request, viewer, f"at: not a date-time: {at!r}")
        dims = list(data.metric(metric).dimensions or ()) or list(DIMENSIONS)
        where = []
        if dimension and value:
            if dimension not in dims:
                return bad_request(request, viewer, f"dimension: one of {', '.join(dims)}")
            where = [f"{dimension}={value}"]
        args = (metric, split, hours, dimension, value, tuple(where))
        keys: list[tuple[Any, ...]] = [
            ("funnel", metric, split, timedelta(hours=hours), tuple(where))
        ]
        if dimension:
            keys.append(("values", metric, dimension))
        ready = not defer or all(data.cache.has(k) for k in keys)
        return page(
            request,
            viewer,
            "funnels.html",
            title="Funnel explorer",
            metrics=names,
            metric=metric,
            at=split.strftime("%Y-%m-%dT%H:%M"),
            hours=hours,
            dims=dims,
            dimension=dimension,
            value=value,
            s=funnel_section(*args) if ready else None,
            query=urlencode(
                {
                    "metric": metric,
                    "at": split.strftime("%Y-%m-%dT%H:%M"),
                    "hours": hours,
                    "dimension": dimension,
                    "value": value,
                }
            ),  # fmt: skip
        )

    def funnel_section(
        metric: str, split: datetime, hours: int, dimension: str, value: str, where: tuple[str, ...]
    ) -> dict[str, Any]:
        result = data.funnel_compare(metric, split, timedelta(hours=hours), where)
        steps = [r["step_name"] for r in result["after"]] or [
            r["step_name"] for r in result["before"]
        ]
        before = {r["step_name"]: r["step_conversion"] for r in result["before"]}
        after = {r["step_name"]: r["step_conversion"] for r in result["after"]}
        entered_before = {r["step_name"]: r["entered"] for r in result["before"]}
        entered_after = {r["step_name"]: r["entered"] for r in result["after"]}
        figure = charts.bars_figure(
            f"{metric}: step conversion, {hours} h before vs after {split:%Y-%m-%d %H:%M}",
            steps,
            {"before": [before.get(s) for s in steps], "after": [after.get(s) for s in steps]},
            percent=True,
            ytitle="step conversion",
        )
        return {
            "figure": figure,
            "drill": data.cohort_values(metric, dimension) if dimension else [],
            "rows": [
                {
                    "step": s,
                    "before": before.get(s),
                    "after": after.get(s),
                    "entered_before": entered_before.get(s, 0),
                    "entered_after": entered_after.get(s, 0),
                }
                for s in steps
            ],
        }

    @router.get("/fragments/funnels", response_class=HTMLResponse)
    def funnels_fragment(
        request: Request,
        metric: str = "",
        at: str = "",
        hours: int = 24,
        dimension: str = "",
        value: str = "",
    ) -> Response:
        """The funnel explorer's result (chart, table, drill links) for a deferred page."""
        try:
            viewer = gate.viewer(request)
        except AccessDenied as error:
            return denied(request, error)
        if metric not in data.funnel_metrics():
            return bad_request(request, viewer, f"metric: not a funnel metric: {metric!r}", 404)
        try:
            split = datetime.fromisoformat(at).replace(tzinfo=UTC)
        except ValueError:
            return bad_request(request, viewer, f"at: not a date-time: {at!r}")
        if hours not in FUNNEL_HOURS:
            return bad_request(request, viewer, "hours: one of 1, 6, 24, 72, 168")
        where = (f"{dimension}={value}",) if dimension and value else ()
        return fragment(
            "funnels_result.html",
            s=funnel_section(metric, split, hours, dimension, value, where),
            metric=metric,
            at=split.strftime("%Y-%m-%dT%H:%M"),
            hours=hours,
            dimension=dimension,
        )

    # -- experiments -----------------------------------------------------------------------
    @router.get("/experiments", response_class=HTMLResponse)
    def experiments(request: Request) -> Response:
        try:
            viewer = gate.viewer(request)
        except AccessDenied as error:
            return denied(request, error)
        rows, errors = experiment_rows(data)
        return page(
            request, viewer, "experiments.html", title="Experiments", rows=rows, errors=errors
        )

    @router.get("/experiments/{name}", response_class=HTMLResponse)
    def experiment(request: Request, name: str, defer: int = 1) -> Response:
        """The scorecard; its analysis is deferred (fetched after first paint) until cached."""
        try:
            viewer = gate.viewer(request)
        except AccessDenied as error:
            return denied(request, error)
        rows, _ = experiment_rows(data)
        row = next((r for r in rows if r.name == name), None)
        if row is None:
            return bad_request(request, viewer, f"no experiment {name!r}", 404)
        ready = not defer or data.cache.has(("scorecard", name))
        card = scorecard(data, name) if ready else None
        return page(
            request,
            viewer,
            "experiment.html",
            title=name,
            name=name,
            experiment_status=row.status,
            card=card,
        )

    @router.get("/fragments/experiments/{name}", response_class=HTMLResponse)
    def experiment_fragment(request: Request, name: str) -> Response:
        """The scorecard's body (verdict, tables, figures, plan, decision log)."""
        try:
            viewer = gate.viewer(request)
        except AccessDenied as error:
            return denied(request, error)
        try:
            card = scorecard(data, name)
        except KeyError:
            return bad_request(request, viewer, f"no experiment {name!r}", 404)
        return fragment(
            "experiment_body.html",
            card=card,
            csrf=csrf_token(request),
            csrf_field=CSRF_FIELD,
            viewer=viewer,
        )

    @router.post("/experiments/{name}/override")
    async def override(request: Request, name: str) -> Response:
        from tripwire.experiments.registry import FINAL_VERDICTS, RegistryError, open_registry

        guarded = await write_guard(request)
        if isinstance(guarded, Response):
            return guarded
        viewer, form = guarded
        verdict = form.get("verdict", "")
        if verdict not in FINAL_VERDICTS:
            return bad_request(request, viewer, f"verdict: one of {', '.join(FINAL_VERDICTS)}")
        try:
            with open_registry(workspace) as registry:
                registry.override(name, verdict, form.get("reason", ""), author=actor(viewer, form))
        except RegistryError as error:
            return bad_request(request, viewer, str(error))
        data.cache.clear()
        return RedirectResponse(f"/experiments/{name}", status_code=303)

    # -- metrics catalog -------------------------------------------------------------------
    @router.get("/catalog", response_class=HTMLResponse)
    def catalog(request: Request) -> Response:
        try:
            viewer = gate.viewer(request)
        except AccessDenied as error:
            return denied(request, error)
        return page(
            request, viewer, "catalog.html", title="Metrics catalog", metrics=data.metrics.list()
        )

    @router.get("/catalog/{name}", response_class=HTMLResponse)
    def metric_page(
        request: Request, name: str, by: str = "", days: int = 3, defer: int = 1
    ) -> Response:
        try:
            viewer = gate.viewer(request)
        except AccessDenied as error:
            return denied(request, error)
        problem = metric_params(request, viewer, name, by, days)
        if problem is not None:
            return problem
        metric = data.metric(name)
        chartable = not isinstance(metric, FunnelMetric | RetentionMetric)
        ready = not defer or data.cache.has(("quick", name, by or None, days))
        return page(
            request,
            viewer,
            "metric.html",
            title=name,
            metric=metric,
            definition=metric.model_dump(exclude_none=True)
            if hasattr(metric, "model_dump")
            else {},
            sql=data.metric_sql(name),
            dims=list(metric.dimensions or ()),
            by=by,
            days=days,
            chartable=chartable,
            figure=quick_figure(name, by, days) if chartable and ready else None,
            query=urlencode({"by": by, "days": days}),
        )

    def metric_params(
        request: Request, viewer: Viewer, name: str, by: str, days: int
    ) -> Response | None:
        if name not in data.metric_names():
            return bad_request(request, viewer, f"no metric {name!r}", 404)
        dims = list(data.metric(name).dimensions or ())
        if by and by not in dims:
            return bad_request(request, viewer, f"by: one of {', '.join(dims) or '(none)'}")
        if days not in (1, 3, 7, 14):
            return bad_request(request, viewer, "days: one of 1, 3, 7, 14")
        return None

    def quick_figure(name: str, by: str, days: int) -> dict[str, Any]:
        rows = data.quick_chart(name, by or None, days)
        groups: dict[str, list[tuple[datetime, float | None]]] = {}
        for r in rows:
            groups.setdefault(str(r[by]) if by else name, []).append((r["bucket"], r["value"]))
        return charts.lines_figure(
            f"{name}" + (f" by {by}" if by else ""), groups, percent=_rate_like(data, name)
        )

    @router.get("/fragments/catalog/{name}", response_class=HTMLResponse)
    def metric_fragment(request: Request, name: str, by: str = "", days: int = 3) -> Response:
        """The metric page's quick chart."""
        try:
            viewer = gate.viewer(request)
        except AccessDenied as error:
            return denied(request, error)
        problem = metric_params(request, viewer, name, by, days)
        if problem is not None:
            return problem
        return fragment("metric_chart.html", figure=quick_figure(name, by, days), name=name)

    # -- changes --------------------------------------------------------------------------
    @router.get("/changes", response_class=HTMLResponse)
    def changes_page(
        request: Request, kind: str = "", service: str = "", days: int = 14
    ) -> Response:
        try:
            viewer = gate.viewer(request)
        except AccessDenied as error:
            return denied(request, error)
        if kind and kind not in CHANGE_KINDS:
            return bad_request(request, viewer, f"kind: one of {', '.join(CHANGE_KINDS)}")
        since = data.end() - timedelta(days=days)
        rows = data.changes(since=since, kind=kind or None, service=service or None)
        return page(
            request,
            viewer,
            "changes.html",
            title="Changes",
            changes=list(reversed(rows)),
            kinds=CHANGE_KINDS,
            kind=kind,
            service=service,
            days=days,
            default_at=data.end().strftime("%Y-%m-%dT%H:%M"),
        )

    @router.post("/changes")
    async def record_change(request: Request) -> Response:
        from tripwire.monitor.changes import ChangeLog

        guarded = await write_guard(request)
        if isinstance(guarded, Response):
            return guarded
        viewer, form = guarded
        try:
            at_text = form.get("at", "").strip()
            at = datetime.fromisoformat(at_text) if at_text else datetime.now(UTC)
            at = at if at.tzinfo else at.replace(tzinfo=UTC)
            scope = parse_scope(s for s in form.get("scope", "").split(",") if s.strip())
            change = change_from_properties(
                {
                    "kind": form.get("kind", ""),
                    "service": form.get("service", "").strip(),
                    "version": form.get("version", "").strip(),
                    "scope": scope,
                    "author": actor(viewer, form),
                    "description": form.get("description", "").strip(),
                },
                at,
                origin="dashboard",
            )
        except (ChangeError, ValueError) as error:
            return bad_request(request, viewer, f"change not recorded: {error}")
        with ChangeLog.for_workspace(workspace) as log:
            log.record(change)
        return RedirectResponse("/changes", status_code=303)

    return router


def _safe_next(target: str) -> str:
    """Only same-site paths after login (no open redirect).

    >>> _safe_next("/alerts/3"), _safe_next("https://evil.example/"), _safe_next("//x")
    ('/alerts/3', '/', '/')
    """
    return target if target.startswith("/") and not target.startswith("//") else "/"


def _rca_view(incident: Any) -> dict[str, Any]:
    """What the alert page shows of a stored investigation (its JSON result)."""
    result = incident.result or {}
    problem = result.get("problem", {})
    by_dimension = problem.get("by_dimension", []) if isinstance(problem, dict) else []
    cells = [r for r in by_dimension if isinstance(r, dict) and r.get("relative") is not None]
    cells.sort(key=lambda r: -abs(float(r.get("relative") or 0.0)))
    heat = None
    if cells:
        top = cells[:20][::-1]
        heat = charts.heatmap_figure(
            "relative change by segment (largest 20)",
            ["relative change"],
            [f"{r.get('dimension')}={r.get('value')}" for r in top],
            [[r.get("relative")] for r in top],
        )
    breakpoint = result.get("breakpoint", {}) or {}
    views = breakpoint.get("views", []) if isinstance(breakpoint, dict) else []
    funnel = None
    if views:
        steps = views[-1].get("steps", [])
        funnel = charts.bars_figure(
            f"funnel before/after ({views[-1].get('scope', '')})",
            [str(s.get("step")) for s in steps],
            {
                "before": [s.get("baseline_conversion") for s in steps],
                "after": [s.get("current_conversion") for s in steps],
            },
            percent=True,
        )
    starts = problem.get("series_starts") if isinstance(problem, dict) else None
    series = None
    if starts:
        series = {
            "data": [
                {"type": "scatter", "mode": "lines", "name": name, "x": starts,
                 "y": problem.get(key) or [], "line": {"color": colour, "dash": dash}}
                for name, key, colour, dash in (
                    ("observed", "series_observed", charts.BLUE, "solid"),
                    ("expected", "series_expected", charts.SKY, "dot"),
                )
            ],
            "layout": {"title": {"text": "the metric around the onset"},
                       "margin": {"l": 50, "r": 10, "t": 36, "b": 40},
                       "legend": {"orientation": "h", "y": -0.2}},
        }  # fmt: skip
    return {
        "result": result,
        "series": series,
        "heat": heat,
        "funnel": funnel,
        "integrity": result.get("integrity", {}),
        "segments": incident.segments,
        "changes": result.get("changes", {}),
        "impact": result.get("impact", {}),
        "recommendation": result.get("recommendation", {}),
    }
