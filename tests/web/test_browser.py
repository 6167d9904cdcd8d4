"""End to end: a real headless Chromium against a real ``tripwire serve`` on the demo world.

Each page renders without console errors (light and dark, and the overview at phone
size), charts carry the expected series (read from Plotly's data in the DOM), the alert
ack/silence flow works and is recorded with the key that did it, the RCA button produces
the analysis, and a change recorded in the form appears on the overview chart.
Screenshots go to ``test-output/screenshots/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tripwire.monitor.alerts import AlertStore
from tripwire.rca.incidents import IncidentStore

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("web"),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="browser tests need Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


class Page:
    """A page that records console errors and uncaught exceptions."""

    def __init__(self, browser: Any, base: str, **context: Any) -> None:
        self.base = base
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on(
            "response",
            lambda r: self.errors.append(f"{r.status} {r.url}") if r.status >= 400 else None,
        )

    def open(self, path: str) -> Any:
        """Go to ``path`` and wait until its deferred sections are in place."""
        self.page.goto(self.base + path, wait_until="load")
        self.page.wait_for_function("document.querySelectorAll('[data-fragment]').length === 0")
        return self.page

    def traces(self, plot_id: str) -> list[dict[str, Any]]:
        """Plotly's trace names and sizes of the plot ``plot_id``."""
        self.page.wait_for_function(
            "id => { const el = document.getElementById(id); return el && el.data; }",
            arg=plot_id,
        )
        return self.page.evaluate(  # type: ignore[no-any-return]
            """id => document.getElementById(id).data.map(t => ({
                name: t.name || "", type: t.type || "scatter",
                n: (t.y || t.z || []).length, text: t.text || []}))""",
            plot_id,
        )

    def login(self, key: str) -> None:
        page = self.open("/login?next=/changes")
        page.fill("#key", key)
        page.click("form[action='/login'] button[type=submit]")
        page.wait_for_url(self.base + "/changes")

    def close(self) -> None:
        self.context.close()


def _alert_paths(world: Any) -> list[int]:
    with AlertStore.for_workspace(world.workspace) as alerts:
        return [a.id for a in alerts.query()]


def test_every_page_renders_without_console_errors(browser: Any, server: str, world: Any) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    alert = _alert_paths(world)[-1]
    pages = {
        "overview": "/",
        "alert": f"/alerts/{alert}",
        "funnels": "/funnels?dimension=locale",
        "experiments": "/experiments",
        "scorecard": "/experiments/ranker_v2",
        "catalog": "/catalog",
        "metric": "/catalog/voice_checkout_conversion?by=locale",
        "changes": "/changes",
    }
    for scheme in ("light", "dark"):
        view = Page(browser, server, color_scheme=scheme, viewport={"width": 1366, "height": 900})
        for name, path in pages.items():
            page = view.open(path)
            assert page.locator("main h1").count() == 1, name
            page.wait_for_timeout(300)
            page.screenshot(path=str(SHOTS / f"{name}-{scheme}.png"), full_page=True)
        assert view.errors == [], view.errors
        view.close()
    phone = Page(browser, server, viewport={"width": 390, "height": 844}, is_mobile=True,
                 has_touch=True, device_scale_factor=2)  # fmt: skip
    phone.open("/")
    phone.page.wait_for_timeout(300)
    phone.page.screenshot(path=str(SHOTS / "overview-phone.png"), full_page=True)
    width = phone.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"the phone overview scrolls sideways ({width} px)"
    assert phone.errors == []
    phone.close()


def test_theme_toggle_switches_and_remembers(browser: Any, server: str) -> None:
    view = Page(browser, server, color_scheme="light")
    page = view.open("/changes")
    page.click("#theme-toggle")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    page.reload()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert page.get_attribute("#theme-toggle", "aria-pressed") == "true"
    view.close()


def test_overview_charts_carry_the_expected_series(browser: Any, server: str) -> None:
    view = Page(browser, server)
    view.open("/?kpi=voice_checkout_conversion&window=7d")
    kpi = {t["name"]: t for t in view.traces("chart-kpi")}
    assert {"voice_checkout_conversion", "expected", "expected band"} <= set(kpi)
    assert kpi["voice_checkout_conversion"]["n"] == 7 * 24
    assert any(name.startswith("change: ") for name in kpi), "no change markers"
    sources = {t["name"] for t in view.traces("chart-events")}
    assert {"app", "order-ledger"} <= sources
    assert {t["name"] for t in view.traces("chart-ledger")} == {"ledger", "telemetry"}
    assert {t["name"] for t in view.traces("chart-shares")} == {"late (>5 min)", "rejected"}
    (heat,) = view.traces("chart-cohort")
    assert heat["type"] == "heatmap" and heat["n"] >= 3
    assert {t["name"] for t in view.traces("chart-latency")} == {"p50", "p95", "p99"}
    assert view.errors == []
    view.close()


def test_ack_and_silence_flow_is_recorded(browser: Any, server: str, world: Any) -> None:
    with AlertStore.for_workspace(world.workspace) as alerts:
        alert = next(a for a in alerts.query(status="firing") if not a.acked_by)
    view = Page(browser, server)
    view.login(world.write_key)
    page = view.open(f"/alerts/{alert.id}")
    page.fill("#ack-note", "looking at it from the browser")
    page.fill("#ack-who", "Night Owl")
    page.click("#ack")
    page.wait_for_load_state("load")
    assert page.inner_text("#alert-status") == "acknowledged"
    assert "Night Owl" in page.inner_text("#acked-by")
    page.select_option("#sil-hours", "1")
    page.click("#silence")
    page.wait_for_load_state("load")
    with AlertStore.for_workspace(world.workspace) as alerts:
        stored = alerts.get(alert.id)
        silences = alerts.silences()
    assert stored.status == "acknowledged"
    assert stored.acked_by and stored.acked_by.startswith("Night Owl (dashboard-test:")
    assert stored.note == "looking at it from the browser"
    assert any(s.rule == alert.rule and "dashboard-test:" in s.created_by for s in silences)
    assert view.errors == []
    view.close()


def test_rca_button_produces_the_analysis(browser: Any, server: str, world: Any) -> None:
    with IncidentStore.for_workspace(world.workspace) as incidents:
        done = {r.alert_id for r in incidents.list()}
    with AlertStore.for_workspace(world.workspace) as alerts:
        alert = next(
            a
            for a in alerts.query()
            if a.id not in done and a.metric == "voice_checkout_conversion"
        )
    view = Page(browser, server)
    view.login(world.write_key)
    page = view.open(f"/alerts/{alert.id}")
    assert page.locator("#rca-summary").count() == 0
    page.set_default_timeout(110_000)
    page.click("#run-rca")
    page.wait_for_selector("#rca-summary")
    assert "integrity" in page.inner_text("#rca-summary")
    actions = page.locator("#rca-actions li").all_inner_texts()
    assert actions and actions != ["none"]
    assert {t["name"] for t in view.traces("chart-rca-series")} == {"observed", "expected"}
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "alert-rca-light.png"), full_page=True)
    report = page.get_attribute("#rca-summary a", "href")
    assert report and view.open(report).title()
    with IncidentStore.for_workspace(world.workspace) as incidents:
        assert any(r.alert_id == alert.id for r in incidents.list())
    assert view.errors == []
    view.close()


def test_recorded_change_appears_on_the_overview_chart(
    browser: Any, server: str, world: Any
) -> None:
    view = Page(browser, server)
    view.login(world.write_key)
    page = view.open("/changes")
    page.select_option("#c-kind", "flag")
    page.fill("#c-service", "checkout-banner")
    page.fill("#c-version", "on")
    page.fill("#c-scope", "locale=en-GB")
    page.click("#change-form button[type=submit]")
    page.wait_for_load_state("load")
    assert "checkout-banner" in page.inner_text("#changes-table")
    view.open("/?window=24h")
    flags = [t for t in view.traces("chart-kpi") if t["name"] == "change: flag"]
    assert flags and any("checkout-banner" in text for text in flags[0]["text"])
    assert view.errors == []
    view.close()
