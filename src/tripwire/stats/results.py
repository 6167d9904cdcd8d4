"""Result types shared by every comparison in :mod:`tripwire.stats`.

Results are frozen dataclasses. Numeric fields are floats for one comparison, or numpy
arrays (one element per segment) when the inputs were arrays. When the data cannot support
a test (an empty arm, a single unit, no variance) the result says so in ``status`` and
``message`` instead of returning an unexplained NaN; the numeric fields that cannot be
computed are NaN *and* flagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tripwire.stats.sufficient import Real, as_real


class Status(StrEnum):
    """Whether a result can be used for a decision."""

    OK = "ok"
    """Large-sample approximation adequate; all fields computed."""
    EXACT = "exact"
    """Sample too small for the normal approximation: an exact test was used instead."""
    INSUFFICIENT_DATA = "insufficient_data"
    """No valid test is possible (empty arm, one unit, zero variance); see ``message``."""


StatusLike = Status | NDArray[np.str_]


@dataclass(frozen=True)
class Effect:
    """One effect estimate with its uncertainty.

    ``ci`` is the two-sided (1 − α) interval; ``se`` is NaN for interval methods without a
    standard error (Fieller); ``p_value`` tests effect = 0.
    """

    estimate: Real
    se: Real
    ci_low: Real
    ci_high: Real
    p_value: Real

    @property
    def ci(self) -> tuple[Real, Real]:
        return (self.ci_low, self.ci_high)


@dataclass(frozen=True)
class ArmSummary:
    """What a test used from one arm: the (adjusted) mean, its variance, and n."""

    mean: Real
    variance_of_mean: Real
    n: Real


@dataclass(frozen=True)
class ComparisonResult:
    """Treatment vs control.

    ``absolute`` is treatment − control; ``relative`` is (treatment − control) / control
    (the control mean is the *unadjusted* one for CUPED, see docs/statistics.md).
    ``df`` is the reference distribution's degrees of freedom (``inf`` for a normal test).
    CUPED results also carry ``theta`` and ``variance_reduction`` (1 − Var(adjusted
    difference) / Var(unadjusted difference)).
    """

    method: str
    absolute: Effect
    relative: Effect
    control: ArmSummary
    treatment: ArmSummary
    df: Real
    alpha: float
    status: StatusLike = Status.OK
    message: str = ""
    statistic: Real = float("nan")
    theta: Real | None = None
    variance_reduction: Real | None = None

    @property
    def ok(self) -> bool:
        """True when every element is usable (status OK or EXACT)."""
        return bool(np.all(np.asarray(self.status) != Status.INSUFFICIENT_DATA.value))


def status_array(insufficient: Any, exact: Any = False) -> StatusLike:
    """Status per element from boolean masks (a scalar Status for 0-d masks)."""
    bad = np.asarray(insufficient, dtype=bool)
    ex = np.broadcast_to(np.asarray(exact, dtype=bool), bad.shape)
    values = np.where(
        bad, Status.INSUFFICIENT_DATA.value, np.where(ex, Status.EXACT.value, Status.OK.value)
    )
    if values.ndim == 0:
        return Status(str(values))
    return values.astype(np.str_)


def nan_where(mask: Any, value: Any) -> Real:
    """``value`` with NaN where ``mask`` is true (keeps the scalar/array shape)."""
    return as_real(np.where(np.asarray(mask, dtype=bool), np.nan, value))
