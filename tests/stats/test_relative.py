"""Relative effects: delta method and Fieller, against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tripwire.stats import relative_effect


def test_delta_method_formula():
    e = relative_effect(0.5, 10.0, 10.5, 0.04, 0.09, df=np.inf)
    se = np.sqrt(0.09 / 100 + 10.5**2 * 0.04 / 10**4)
    assert e.estimate == pytest.approx(0.05)
    assert e.se == pytest.approx(se)
    assert e.ci == pytest.approx((0.05 - 1.959963984540054 * se, 0.05 + 1.959963984540054 * se))
    assert e.p_value == pytest.approx(2 * stats.norm.sf(0.05 / se))


def test_fieller_interval_solves_its_quadratic():
    mc, mt, vc, vt, q = 10.0, 11.0, 0.25, 0.3, stats.norm.ppf(0.975)
    e = relative_effect(mt - mc, mc, mt, vc, vt, method="fieller")
    for bound in e.ci:
        rho = bound + 1
        assert (mt - rho * mc) ** 2 == pytest.approx(q**2 * (vt + rho**2 * vc), rel=1e-9)
    assert e.ci_low < 0.1 < e.ci_high and np.isnan(e.se)


def test_fieller_unbounded_when_control_not_distinguishable_from_zero():
    e = relative_effect(1.0, 0.1, 1.1, 1.0, 1.0, method="fieller")
    assert e.ci == (-np.inf, np.inf)


def test_zero_control_mean_gives_nan_not_an_error():
    e = relative_effect(1.0, 0.0, 1.0, 0.1, 0.1)
    assert np.isnan(e.estimate) and np.isnan(e.ci_low)


def test_unknown_method_rejected():
    with pytest.raises(ValueError, match="relative_ci"):
        relative_effect(1.0, 1.0, 2.0, 0.1, 0.1, method="log")  # type: ignore[arg-type]
