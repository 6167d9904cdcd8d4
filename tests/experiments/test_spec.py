"""Experiment specs: the model, the loader's errors (file, line, field; all at once), the hash."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tripwire.experiments.examples import example_files, install_examples
from tripwire.experiments.spec import (
    ExperimentSpecError,
    SpecNotFound,
    default_test,
    load_spec,
    load_spec_file,
    load_specs,
    parse_fraction,
    parse_spec,
    parse_spec_text,
    spec_hash,
)
from tripwire.metrics.catalog import catalog_files, install_catalog
from tripwire.metrics.loader import load_catalog
from tripwire.store.workspace import init_workspace

CATALOG = load_catalog(catalog_files())

MINIMAL = """\
name: exp
arms:
  - {name: control, weight: 1}
  - {name: treatment, weight: 1}
primary:
  metric: purchasers
  mde: 2%
"""


def errors_of(text: str, name: str | None = "exp") -> list[tuple[int, str, str]]:
    spec, errors = parse_spec_text(
        text, "experiments/exp.yaml", catalog=CATALOG, expected_name=name
    )
    assert spec is None
    assert all(e.file == "experiments/exp.yaml" for e in errors)
    return [(e.line, e.field, e.message) for e in errors]


def test_the_shipped_examples_are_valid_against_the_day1_catalog() -> None:
    files = example_files()
    assert {f.stem for f in files} == {"ranker_v2", "prompt_v3"}
    for path in files:
        loaded = load_spec_file(path, catalog=CATALOG)
        assert loaded.spec.name == path.stem
        assert len(loaded.hash) == 64
    ranker = load_spec_file(files[[f.stem for f in files].index("ranker_v2")]).spec
    assert ranker.primary.metric == "add_to_cart_per_user"
    by_locale = next(g for g in ranker.guardrails if g.label == "add_to_cart_by_locale")
    assert ranker.guardrail_cohorts(by_locale) == ["locale"]
    assert ranker.rollout is not None and [s.share for s in ranker.rollout.stages] == [
        0.01, 0.05, 0.25, 1.0,
    ]  # fmt: skip
    assert ranker.risks[0].owner == "Keiko Sato"
    assert ranker.sequential is not None and ranker.sequential.n_looks == 3


def test_the_stored_form_parses_back_to_the_same_spec() -> None:
    for path in example_files():
        loaded = load_spec_file(path)
        stored = loaded.spec.model_dump(mode="json")
        assert stored["rollout"]["stages"][0]["min_duration"] == "1d"
        assert spec_hash(parse_spec(stored)) == loaded.hash


def test_defaults_control_and_tests() -> None:
    spec = parse_spec({
        "name": "x", "arms": [{"name": "a", "weight": 2}, {"name": "b", "weight": 1}],
        "primary": {"metric": "m", "mde": 0.1}, "control": "b",
    })  # fmt: skip
    assert spec.control_arm.name == "b" and [a.name for a in spec.treatment_arms] == ["a"]
    assert spec.alpha == 0.05 and spec.power == 0.8 and spec.sides == 2
    assert spec.guardrail_rule == "intersection_union"
    assert spec.salt == "x" and spec.weights == (2.0, 1.0)
    assert spec.test_for("m", "ratio") == "delta_method"
    assert default_test("quantile") == "bootstrap_quantile"


def test_every_error_is_reported_at_once_with_line_and_field() -> None:
    text = """\
name: exp
arms:
  - {name: control, weight: 1}
  - {name: treatment, weight: -1}
primary:
  metric: purchasers
  mde: 2%
guardrails:
  - metric: voice_checkout_conversion
    harm: sideways
    threshold: -1%
alpha: 2
bogus: 1
"""
    found = errors_of(text)
    fields = {field: line for line, field, _ in found}
    assert fields["arms[1].weight"] == 4
    assert fields["guardrails[0].harm"] == 10
    assert fields["alpha"] == 12
    assert fields["bogus"] == 13
    assert any(m == "unknown field" for _, f, m in found if f == "bogus")


def test_missing_fields_point_at_their_parent() -> None:
    found = errors_of(
        "name: exp\narms:\n  - {name: control, weight: 1}\n  - {name: t, weight: 1}\n"
    )
    assert (1, "primary", "required field is missing") in found


def test_unknown_and_non_per_unit_metrics_are_named() -> None:
    text = MINIMAL.replace("metric: purchasers", "metric: purchasres") + (
        "secondary: [turn_latency_p99]\n"
        "rollout:\n  stages:\n    - share: 1%\n      abort:\n"
        '        - {metric: nope_p99, op: ">", threshold: 1500}\n'
    )
    found = errors_of(text)
    by_field = {field: (line, message) for line, field, message in found}
    line, message = by_field["primary.metric"]
    assert line == 6 and "unknown metric 'purchasres'" in message and "purchasers" in message
    assert "no per-unit form" in by_field["secondary[0].metric"][1]
    assert by_field["rollout.stages[0].abort[0].metric"][0] == 13


def test_yaml_syntax_errors_and_duplicate_keys() -> None:
    found = errors_of("name: exp\narms: [\n  {name: a\n")
    assert len(found) == 1 and found[0][2].startswith("YAML syntax error")
    assert found[0][0] >= 3
    dup = errors_of(MINIMAL + "alpha: 0.05\nalpha: 0.1\n")
    assert any("duplicate key" in m and line == 9 for line, _, m in dup)


def test_not_a_mapping_and_name_mismatch() -> None:
    assert errors_of("- a\n- b\n")[0][2] == "an experiment spec must be a mapping, got list"
    assert "empty file" in errors_of("")[0][2]
    found = errors_of(MINIMAL, name="other")
    assert found == [(1, "name", "name 'exp' does not match the file name 'other'")]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("guardrails:\n  - {metric: purchasers, harm: decrease, threshold: 2%}\n", "must be ≤ 0"),
        ("guardrails:\n  - {metric: purchasers, harm: increase, threshold: -2%}\n", "must be ≥ 0"),
        ("sequential:\n  information_fractions: [0.5, 0.9]\n", "end at 1"),
        ("sequential:\n  looks: [2026-11-08]\n  information_fractions: [1.0]\n", "exactly one"),
        ("sequential:\n  looks: [2026-11-09, 2026-11-08]\n", "increasing order"),
        ("rollout:\n  stages:\n    - share: 50%\n    - share: 5%\n", "increase strictly"),
        ("cuped:\n  pre_period: 36h\n", "whole number of days"),
        ("cohorts: [locale]\nguardrails:\n  - {metric: purchasers, harm: decrease, "
         "threshold: 0, cohorts: [device]}\n", "not among the spec's cohort dimensions"),
        ("assignment:\n  layer_range: [0.5, 0.2]\n", "layer_range"),
        ("control: nobody\n", "is not an arm"),
        ("primary:\n  metric: purchasers\n  mde: lots%\n", "percentage"),
    ],
)  # fmt: skip
def test_semantic_rules(section: str, message: str) -> None:
    text = MINIMAL + section
    if section.startswith("primary:"):
        text = MINIMAL.split("primary:")[0] + section
    found = errors_of(text)
    assert any(message in m for _, _, m in found), found


def test_repeated_arm_and_guardrail_names() -> None:
    text = MINIMAL.replace("name: treatment", "name: control") + (
        "guardrails:\n  - {metric: purchasers, harm: decrease, threshold: 0}\n"
        "  - {metric: purchasers, harm: decrease, threshold: -1%}\n"
    )
    messages = " ".join(m for _, _, m in errors_of(text))
    assert "arm names must be unique" in messages


def test_hash_ignores_formatting_and_sees_meaning() -> None:
    a = parse_spec_text(MINIMAL, "a.yaml")[0]
    reformatted = (
        "# a comment\nprimary: {mde: 0.02, metric: purchasers}\nname: exp\n"
        "arms: [{name: control, weight: 1.0}, {weight: 1, name: treatment}]\n"
    )
    b = parse_spec_text(reformatted, "b.yaml")[0]
    c = parse_spec_text(MINIMAL.replace("2%", "3%"), "c.yaml")[0]
    assert a is not None and b is not None and c is not None
    assert spec_hash(a) == spec_hash(b) != spec_hash(c)


@given(st.floats(min_value=-1000, max_value=1000, allow_nan=False))
def test_percentages_are_hundredths(value: float) -> None:
    assert parse_fraction(f"{value}%") == pytest.approx(value / 100, abs=1e-12)
    assert parse_fraction(value) == value


def test_workspace_loading(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    install_catalog(ws)
    with pytest.raises(SpecNotFound, match="no spec"):
        load_spec(ws, "ranker_v2")
    assert {p.name for p in install_examples(ws)} == {"ranker_v2.yaml", "prompt_v3.yaml"}
    assert install_examples(ws) == []  # kept, not overwritten
    assert set(load_specs(ws)) == {"ranker_v2", "prompt_v3"}
    (ws.experiments_dir / "broken.yaml").write_text("name: broken\narms: 3\n")
    (ws.experiments_dir / "other.yml").write_text(
        MINIMAL.replace("name: exp", "name: other").replace("purchasers", "missing_metric")
    )
    with pytest.raises(ExperimentSpecError) as info:
        load_specs(ws)
    text = str(info.value)
    assert "experiments/broken.yaml:2: arms:" in text
    assert "experiments/other.yml:6: primary.metric: unknown metric 'missing_metric'" in text
