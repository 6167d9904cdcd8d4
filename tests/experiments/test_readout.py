"""The readout (Markdown + self-contained HTML) and the ``experiment analyze|report`` CLI,
including its failure paths (not locked, changed after lock, missing metric, no
exposures, SRM)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tripwire.cli.main import app
from tripwire.experiments.analysis import ExperimentAnalysis, analyze_stats
from tripwire.experiments.decision import decide_analysis, override
from tripwire.experiments.registry import Registry
from tripwire.experiments.spec import load_spec
from tripwire.report.experiment_readout import render_readout, write_readout
from tripwire.store.workspace import Workspace, init_workspace

from . import planted as P

SECTIONS = (
    "## 1. Summary and verdict",
    "## 2. Hypothesis and pre-registration",
    "## 3. Design and power",
    "## 4. Results",
    "## 5. Effects by cohort",
    "## 6. Cumulative effect over time and the sequential boundaries",
    "## 7. Guardrails",
    "## 8. Validity checks",
    "## 9. Risk register",
    "## 10. Decision log",
)

HYPOTHESIS = {
    "h0": "Nothing changes.",
    "h1": "Adds per user rise by 5%.",
    "prior": "Offline lift",
    "disconfirming": "ja-JP adds fall",
}
RISK = {
    "risk": "ja-JP regresses", "likelihood": "medium", "impact": "high", "owner": "Keiko",
    "mitigation": "cohort guardrail", "trigger": "ja-JP breach", "contingency": "ship EN only",
}  # fmt: skip


def _analysis() -> ExperimentAnalysis:
    spec = P.spec(
        start="2026-03-09T00:00:00Z",
        sequential={"looks": ["2026-03-14", "2026-03-20"]},
        hypothesis=HYPOTHESIS,
        risks=[RISK],
        secondary=["errored"],
    )
    planted = P.Planted(adds={"en-US": 0.2, "de-DE": 0.1, "ja-JP": -0.4})
    looks = []
    for day, n in ((date(2026, 3, 14), 3000), (date(2026, 3, 20), 6000)):
        stats = P.unit_stats_of(P.simulate(n, planted, seed=1))
        looks.append(
            analyze_stats(spec, stats, P.METRIC_TYPES, look_date=day, spec_hash="cd" * 32,
                          previous=looks)
        )  # fmt: skip
    return ExperimentAnalysis(spec, "cd" * 32, tuple(looks))


def test_markdown_readout_has_every_section_and_the_numbers() -> None:
    analysis = _analysis()
    decision = decide_analysis(analysis)
    readout = render_readout(analysis, decision, generated_at=datetime(2026, 3, 21, tzinfo=UTC))
    md = readout.markdown
    positions = [md.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    assert f"**Verdict: {decision.verdict.value}**" in md
    assert "adds_by_locale [locale=ja-JP]" in md and "BREACHED" in md
    assert "Adds per user rise by 5%." in md and "ja-JP regresses" in md
    assert "Not locked" in md
    assert "2026-03-14" in md and "2026-03-20" in md  # both looks in the cumulative table
    rel = analysis.current.primary[0].comparison.relative
    assert f"{float(rel.estimate) * 100:+.1f}%" in md


def test_html_readout_is_self_contained_with_its_figures(tmp_path: Path) -> None:
    analysis = _analysis()
    readout = render_readout(analysis, decide_analysis(analysis))
    html = readout.html
    assert "<script src=" not in html and "<link" not in html  # nothing fetched
    assert "plotly.js v" in html[:300_000]  # the library itself is inlined
    assert "Plotly.newPlot" in html and html.count("Plotly.newPlot") == 3  # forest, z path, effect
    assert "relative effect by cohort" in html
    assert "against the sequential boundaries" in html
    files = write_readout(readout, tmp_path / "out")
    assert files.markdown.read_text().startswith("# Experiment readout: planted")
    assert files.html.stat().st_size > 1_000_000  # plotly.js inlined


def test_readout_shows_lock_amendments_override_and_log(tmp_path: Path) -> None:
    analysis = _analysis()
    decision = override(decide_analysis(analysis), "SHIP", "EN-only launch agreed", author="ana")
    with Registry.open(init_workspace(tmp_path)) as registry:
        lock = registry.lock("planted", "cd" * 32, {"name": "planted"}, author="priya")
        registry.amend("planted", "ef" * 32, {"name": "planted"}, "fixed a typo", author="priya")
        amendments = registry.amendments("planted")
        log = registry.decisions("planted")
    md = render_readout(analysis, decision, lock=lock, amendments=amendments, log=log).markdown
    assert lock.hash in md and "by priya" in md
    assert "fixed a typo" in md
    assert "Overridden" in md and "EN-only launch agreed" in md
    assert "| lock |" in md and "| amendment |" in md


# --------------------------------------------------------------------------- the CLI

METRICS_YAML = {
    "metrics": [
        {"name": "adds", "type": "mean", "per": "unit", "events": ["Product Added"]},
        {"name": "errored", "type": "proportion", "events": ["Checkout Error"]},
    ]
}


def _spec_yaml(name: str, **overrides: Any) -> str:
    data: dict[str, Any] = {
        "name": name,
        "arms": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}],
        "primary": {"metric": "adds", "mde": "5%"},
        "guardrails": [{"metric": "errored", "harm": "increase", "threshold": "25%"}],
        "cohorts": ["locale"],
        "hypothesis": HYPOTHESIS,
    }
    data.update(overrides)
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = init_workspace(tmp_path_factory.mktemp("ws"))
    (ws.metrics_dir / "planted.yaml").write_text(yaml.safe_dump(METRICS_YAML))
    P.write_lake(ws.lake_dir, P.simulate(2000, P.Planted.uniform(0.3), seed=2))
    P.write_lake(ws.lake_dir, P.simulate(3000, P.Planted(treatment_share=0.6), seed=3),
                 experiment="skewed")  # fmt: skip
    for name in ("planted", "skewed", "silent"):
        (ws.experiments_dir / f"{name}.yaml").write_text(_spec_yaml(name))
    with Registry.open(ws) as registry:
        for name in ("planted", "skewed", "silent"):
            loaded = load_spec(ws, name)
            registry.lock(name, loaded.hash, loaded.spec.model_dump(mode="json"), author="test")
    return ws


def _run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_analyze_prints_the_scorecard_and_records_the_verdict(workspace: Workspace) -> None:
    result = _run(
        "experiment", "analyze", "planted", "--at", "2026-03-20", "-w", str(workspace.root)
    )
    assert result.exit_code == 0, result.output
    assert "SHIP" in result.output and "primary-efficacy" in result.output
    assert "guardrails" in result.output and "validity" in result.output
    with Registry.open(workspace) as registry:
        assert registry.latest_verdict("planted").verdict == "SHIP"  # type: ignore[union-attr]
        assert len(registry.looks("planted")) >= 1


def test_report_writes_both_files(workspace: Workspace, tmp_path: Path) -> None:
    result = _run("experiment", "report", "planted", "--at", "2026-03-20", "-o", str(tmp_path),
                  "-w", str(workspace.root))  # fmt: skip
    assert result.exit_code == 0, result.output
    md = (tmp_path / "planted.md").read_text()
    assert "Pre-registered (locked)" in md and "(identical to the lock)" in md
    assert (tmp_path / "planted.html").exists()


def test_sample_ratio_mismatch_makes_the_verdict_invalid(workspace: Workspace) -> None:
    result = _run(
        "experiment", "analyze", "skewed", "--at", "2026-03-20", "-w", str(workspace.root)
    )
    assert result.exit_code == 0, result.output
    assert "INVALID" in result.output and "sample-ratio mismatch" in result.output


def test_no_exposures_fails_clearly(workspace: Workspace) -> None:
    result = CliRunner().invoke(app, ["experiment", "analyze", "silent", "-w", str(workspace.root)])
    assert result.exit_code == 1
    assert "no exposures" in result.output


def test_not_locked_and_changed_after_lock_refuse_unless_amended(workspace: Workspace) -> None:
    (workspace.experiments_dir / "draft.yaml").write_text(_spec_yaml("draft"))
    result = CliRunner().invoke(app, ["experiment", "analyze", "draft", "-w", str(workspace.root)])
    assert result.exit_code == 1 and "not locked" in result.output
    path = workspace.experiments_dir / "silent.yaml"
    path.write_text(_spec_yaml("silent", alpha=0.01))
    result = CliRunner().invoke(app, ["experiment", "analyze", "silent", "-w", str(workspace.root)])
    assert result.exit_code == 1 and "changed after it was locked" in result.output
    result = CliRunner().invoke(
        app,
        ["experiment", "analyze", "silent", "--amend", "stricter alpha", "-w", str(workspace.root)],
    )
    assert "no exposures" in result.output  # got past the lock check
    with Registry.open(workspace) as registry:
        assert registry.amendments("silent")[0].reason == "stricter alpha"


def test_missing_metric_fails_with_file_and_field(workspace: Workspace) -> None:
    (workspace.experiments_dir / "broken.yaml").write_text(
        _spec_yaml("broken", primary={"metric": "nope", "mde": "5%"})
    )
    result = CliRunner().invoke(app, ["experiment", "analyze", "broken", "-w", str(workspace.root)])
    assert result.exit_code == 1
    assert "broken.yaml" in result.output and "primary.metric" in result.output
    assert "unknown metric 'nope'" in result.output


def test_override_needs_both_options_and_is_recorded(workspace: Workspace) -> None:
    root = str(workspace.root)
    result = CliRunner().invoke(
        app, ["experiment", "analyze", "planted", "--override", "x", "-w", root]
    )
    assert result.exit_code == 2 and "go together" in result.output
    result = _run("experiment", "analyze", "planted", "--at", "2026-03-20", "--override",
                  "launch blocked by legal", "--to", "VETO", "--author", "ana", "-w", root)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "overridden by ana" in result.output
    with Registry.open(workspace) as registry:
        last = registry.overrides("planted")[-1]
        assert (last.to_verdict, last.reason, last.author) == (
            "VETO",
            "launch blocked by legal",
            "ana",
        )
        assert registry.final_decision("planted") == "VETO"


def test_analyze_incremental_prints_the_same_scorecard_from_per_day_partials(
    workspace: Workspace,
) -> None:
    args = ("experiment", "analyze", "planted", "--at", "2026-03-20", "-w", str(workspace.root))
    full = _run(*args)
    first = _run(*args, "--incremental")
    assert first.exit_code == 0, first.output
    assert (workspace.data_dir / "aggregates" / "planted" / "manifest.json").exists()
    again = _run(*args, "--incremental")  # nothing new in the lake: merges only
    assert full.output == first.output == again.output
    report = _run("experiment", "report", "planted", "--at", "2026-03-20", "--incremental",
                  "-o", str(workspace.root / "inc"), "-w", str(workspace.root))  # fmt: skip
    assert report.exit_code == 0, report.output
    assert "SHIP (primary-efficacy)" in report.output
    assert (workspace.root / "inc" / "planted.html").exists()
