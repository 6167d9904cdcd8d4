"""Root-cause localization against generated cases with known injected causes."""

from __future__ import annotations

import numpy as np
import pytest

from tripwire.rca.localize import GLOBAL, LOCALIZED, NO_CHANGE, localize, localize_ratio
from tripwire.rca.synthetic import f1_score, generate_case, generate_ratio_case


def _mean_f1(seeds, **options) -> tuple[float, float, float]:
    scores = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        case = generate_case(rng, n_causes=1 + seed % 3, depth=1 + (seed // 3) % 3, **options)
        result = localize(case.columns, case.observed, case.expected)
        scores.append(f1_score([e.conditions for e in result.elements], list(case.causes)))
    return tuple(float(x) for x in np.mean(scores, axis=0))  # type: ignore[return-value]


def _grid(measure: str, seeds: int = 3, **options) -> dict[tuple[int, int], np.ndarray]:
    """Mean (precision, recall, F1) per (causes, depth) over ``seeds`` generated cases."""
    out = {}
    for causes in (1, 2, 3):
        for depth in (1, 2, 3):
            scores = []
            for seed in range(seeds):
                rng = np.random.default_rng(1000 * causes + 100 * depth + seed)
                if measure == "ratio":
                    case = generate_ratio_case(rng, n_causes=causes, depth=depth, **options)
                    result = localize_ratio(
                        case.columns,
                        case.numerator,
                        case.denominator,
                        case.baseline_numerator,
                        case.baseline_denominator,
                    )
                else:
                    case = generate_case(rng, n_causes=causes, depth=depth, **options)
                    result = localize(case.columns, case.observed, case.expected)
                found = [e.conditions for e in result.elements]
                scores.append(f1_score(found, list(case.causes)))
            out[(causes, depth)] = np.mean(scores, axis=0)
    return out


@pytest.mark.parametrize(
    ("measure", "options", "cell_bar", "mean_bar"),
    [
        ("additive", {"noise": 0.05}, 0.8, 0.95),
        ("additive", {"noise": 0.1, "magnitude": (0.15, 0.4)}, 0.6, 0.9),
        ("ratio", {}, 0.8, 0.95),
        ("ratio", {"magnitude": (0.15, 0.4), "volume": 2.0}, 0.6, 0.9),
    ],
)
def test_f1_per_number_of_causes_and_depth(measure, options, cell_bar, mean_bar):
    """1–3 causes × depth 1–3, additive and ratio, with noise: F1 per cell and on average."""
    grid = _grid(measure, **options)
    f1 = {key: float(value[2]) for key, value in grid.items()}
    assert min(f1.values()) >= cell_bar, f1
    assert np.mean(list(f1.values())) >= mean_bar, f1


def test_ratio_global_drop_and_traffic_mix_are_not_localized():
    for seed in range(8):
        rng = np.random.default_rng(seed)
        case = generate_ratio_case(rng, n_causes=0, mix_shift=True)
        # every leaf's rate drops by 30%: a global change, whatever the traffic mix does
        numerator = rng.binomial(
            case.denominator.astype(np.int64),
            0.7 * case.baseline_numerator / np.maximum(case.baseline_denominator, 1),
        )
        result = localize_ratio(
            case.columns,
            numerator,
            case.denominator,
            case.baseline_numerator,
            case.baseline_denominator,
        )
        assert result.verdict == GLOBAL and result.elements == (), [
            e.label() for e in result.elements
        ]
        unmoved = localize_ratio(
            case.columns,
            case.numerator,
            case.denominator,
            case.baseline_numerator,
            case.baseline_denominator,
        )
        assert unmoved.verdict == NO_CHANGE and unmoved.elements == ()


def test_recovers_one_to_three_causes_at_depth_one_to_three():
    precision, recall, f1 = _mean_f1(range(36))
    assert f1 >= 0.95, (precision, recall, f1)


def test_small_effects_under_heavy_noise_still_mostly_found():
    precision, recall, f1 = _mean_f1(range(100, 124), magnitude=(0.1, 0.3), noise=0.1)
    assert precision >= 0.85 and f1 >= 0.8, (precision, recall, f1)


def test_spikes_and_sparse_cubes():
    assert _mean_f1(range(200, 218), direction=1, magnitude=(0.2, 1.0))[2] >= 0.95
    assert _mean_f1(range(300, 318), max_leaves=1000)[2] >= 0.9


def test_pure_noise_invents_no_cause():
    for seed in range(15):
        case = generate_case(np.random.default_rng(seed), n_causes=0, noise=0.1)
        result = localize(case.columns, case.observed, case.expected)
        assert result.verdict == NO_CHANGE and result.elements == ()


def test_global_drop_is_not_localized():
    for seed in range(10):
        rng = np.random.default_rng(seed)
        case = generate_case(rng, n_causes=0)
        observed = rng.poisson(case.expected * 0.75)
        result = localize(case.columns, observed, case.expected)
        assert result.verdict == GLOBAL and result.elements == ()
        assert result.relative_change == pytest.approx(-0.25, abs=0.02)


def test_elements_explain_themselves():
    case = generate_case(
        np.random.default_rng(3), n_causes=1, depth=2, magnitude=(0.5, 0.5), noise=0.02
    )
    result = localize(case.columns, case.observed, case.expected)
    (element,) = result.elements
    assert result.verdict == LOCALIZED
    assert element.conditions == case.causes[0]
    assert element.relative_change == pytest.approx(-0.5, abs=0.05)
    assert 0.8 < element.share_of_change <= 1.2
    assert element.z_score < -10
    assert element.leaves == 5 * 4 * 4 or element.leaves > 0


def test_ratio_metric_separates_rate_change_from_traffic_mix():
    rng = np.random.default_rng(11)
    locales = ["en-US", "en-GB", "de-DE", "ja-JP"]
    devices = ["Echo Show", "Echo Dot", "web", "mobile app"]
    payments = ["tokenized-card", "credit-card", "gift-balance"]
    cols = {"locale": [], "device": [], "payment": []}
    for loc in locales:
        for dev in devices:
            for pay in payments:
                cols["locale"].append(loc)
                cols["device"].append(dev)
                cols["payment"].append(pay)
    n = len(cols["locale"])
    base_sessions = rng.integers(2000, 6000, n).astype(float)
    base_orders = rng.binomial(base_sessions.astype(int), 0.22).astype(float)
    sessions = base_sessions.copy()
    # Traffic mix shift: de-DE doubles its sessions but converts as before.
    sessions[np.array(cols["locale"]) == "de-DE"] *= 2
    rate = np.full(n, 0.22)
    broken = (np.array(cols["locale"]) == "en-GB") & (np.array(cols["device"]) == "Echo Show")
    rate[broken] = 0.12
    orders = rng.binomial(sessions.astype(int), rate).astype(float)
    result = localize_ratio(cols, orders, sessions, base_orders, base_sessions)
    assert [e.conditions for e in result.elements] == [{"locale": "en-GB", "device": "Echo Show"}]


def test_bad_input_is_rejected_clearly():
    with pytest.raises(ValueError, match="same length"):
        localize({"a": ["x"]}, [1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        localize({"a": ["x"]}, [float("nan")], [1.0])
    with pytest.raises(ValueError, match="dimension rows"):
        localize({"a": ["x", "y", "z"]}, [1.0, 2.0], [1.0, 2.0])
