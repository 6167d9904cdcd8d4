"""Guardrails: one-sided non-inferiority tests and the rule that turns them into a veto.

A guardrail says "this metric must not get worse than a threshold" (e.g. relative
conversion change ≥ −1%, or p95 latency change ≤ +50 ms). Each guardrail is a one-sided
test of H0: the metric is worse than the threshold, against H1: it is not (Schuirmann
1987; Wellek 2010, *Testing Statistical Hypotheses of Equivalence and Noninferiority*).
Shipping requires every guardrail to pass, so the family is an intersection–union test
(Berger 1982, Technometrics 24:295): the probability of shipping while any guardrail is
truly breached is at most α with *no* multiplicity adjustment. Bonferroni, Holm and
Benjamini–Hochberg levels are available for teams whose policy asks for them; they only
make passing harder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import special

from tripwire.stats.multiplicity import adjust_p_values, rejection_levels
from tripwire.stats.results import ComparisonResult, Status

Harm = Literal["decrease", "increase"]
GuardrailRule = Literal["intersection_union", "bonferroni", "holm", "benjamini_hochberg"]


@dataclass(frozen=True)
class NonInferiorityResult:
    """One guardrail's one-sided test.

    ``threshold`` is the worst acceptable effect on the chosen scale (e.g. −0.01 for
    "relative drop of at most 1%" when a decrease is harmful). ``bound`` is the one-sided
    (1 − α) confidence bound on the effect on the harmful side; the guardrail passes at
    level α exactly when the bound is on the safe side of the threshold.
    """

    name: str
    scale: Literal["absolute", "relative"]
    harm: Harm
    threshold: float
    estimate: float
    se: float
    statistic: float
    p_value: float
    bound: float
    alpha: float
    status: Status

    @property
    def passed(self) -> bool:
        """Non-inferiority shown at the unadjusted level α."""
        return bool(self.p_value <= self.alpha)


def non_inferiority_test(
    result: ComparisonResult,
    threshold: float,
    *,
    harm: Harm = "decrease",
    relative: bool = True,
    alpha: float = 0.05,
    name: str = "",
) -> NonInferiorityResult:
    r"""One-sided non-inferiority test of a comparison against a threshold δ.

    harm = "decrease" (higher is better): H0: θ ≤ δ vs H1: θ > δ,
    T = (θ̂ − δ)/se, p = P(T_df ≥ T), lower bound θ̂ − t_{1−α,df} se.
    harm = "increase" (lower is better): H0: θ ≥ δ vs H1: θ < δ, p = P(T_df ≤ T),
    upper bound θ̂ + t_{1−α,df} se. θ is the relative or absolute effect of ``result``;
    df is the comparison's (normal for z tests).

    >>> from tripwire.stats import MeanStats, two_proportion_z_test
    >>> r = two_proportion_z_test(MeanStats.from_proportion(50000, 5000),
    ...                           MeanStats.from_proportion(50000, 5010))
    >>> g = non_inferiority_test(r, -0.05, harm="decrease", relative=True)
    >>> g.passed, round(g.bound, 4)
    (True, -0.0293)
    """
    if harm not in ("decrease", "increase"):
        raise ValueError(f"harm must be 'decrease' or 'increase' (got {harm!r})")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite (got {threshold!r})")
    if np.ndim(result.absolute.estimate) != 0:
        raise ValueError("non_inferiority_test takes a scalar comparison result")
    effect = result.relative if relative else result.absolute
    est, se, df = float(effect.estimate), float(effect.se), float(result.df)
    usable = bool(np.isfinite(est) and np.isfinite(se) and se > 0 and not np.isnan(df))
    if not usable:
        return NonInferiorityResult(
            name, "relative" if relative else "absolute", harm, threshold, est, se,
            float("nan"), 1.0, float("nan"), alpha, Status.INSUFFICIENT_DATA,
        )  # fmt: skip
    statistic = (est - threshold) / se
    q = float(special.stdtrit(df, 1 - alpha))
    if harm == "decrease":
        p, bound = float(special.stdtr(df, -statistic)), est - q * se
    else:
        p, bound = float(special.stdtr(df, statistic)), est + q * se
    return NonInferiorityResult(
        name, "relative" if relative else "absolute", harm, threshold, est, se,
        statistic, p, bound, alpha, Status(str(result.status)),
    )  # fmt: skip


@dataclass(frozen=True)
class GuardrailVerdict:
    """The family of guardrails under a rule: pass, or which guardrails veto and why.

    ``levels[i]`` is the level guardrail i's p-value had to reach; ``adjusted_p_values``
    the matching adjusted p-values; ``vetoes`` the names of guardrails that failed
    (including any with insufficient data, which can never pass).
    """

    rule: GuardrailRule
    alpha: float
    guardrails: tuple[NonInferiorityResult, ...]
    levels: tuple[float, ...]
    adjusted_p_values: tuple[float, ...]
    vetoes: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.vetoes

    def explain(self) -> str:
        """One line per guardrail: pass/veto, p-value, level and bound vs threshold."""
        lines = []
        for g, level in zip(self.guardrails, self.levels, strict=True):
            verdict = "VETO" if g.name in self.vetoes else "pass"
            side = ">" if g.harm == "decrease" else "<"
            lines.append(
                f"{verdict} {g.name}: {g.scale} effect {g.estimate:+.4g}, p={g.p_value:.3g} "
                f"at level {level:.3g} ({self.rule}); bound {g.bound:+.4g} must be {side} {g.threshold:+.4g}"
            )
        return "\n".join(lines)


def evaluate_guardrails(
    guardrails: Sequence[NonInferiorityResult],
    *,
    rule: GuardrailRule = "intersection_union",
    alpha: float = 0.05,
) -> GuardrailVerdict:
    """Decide a family of guardrails.

    intersection_union (default): each guardrail must pass at the unadjusted α; the
    family's size is still α (Berger 1982). bonferroni / holm / benjamini_hochberg: each
    non-inferiority p-value is compared with its adjusted level
    (:func:`~tripwire.stats.multiplicity.rejection_levels`).

    >>> from tripwire.stats import MeanStats, two_proportion_z_test
    >>> ok = two_proportion_z_test(MeanStats.from_proportion(50000, 5000),
    ...                            MeanStats.from_proportion(50000, 5010))
    >>> bad = two_proportion_z_test(MeanStats.from_proportion(50000, 5000),
    ...                             MeanStats.from_proportion(50000, 4700))
    >>> v = evaluate_guardrails([non_inferiority_test(ok, -0.05, name="conversion"),
    ...                          non_inferiority_test(bad, -0.05, name="retention")])
    >>> v.passed, v.vetoes
    (False, ('retention',))
    """
    if not guardrails:
        return GuardrailVerdict(rule, alpha, (), (), (), ())
    names = [g.name for g in guardrails]
    if len(set(names)) != len(names):
        raise ValueError(f"guardrail names must be unique (got {names})")
    p = np.array([g.p_value if np.isfinite(g.p_value) else 1.0 for g in guardrails])
    method = "none" if rule == "intersection_union" else rule
    if method not in ("none", "bonferroni", "holm", "benjamini_hochberg"):
        raise ValueError(f"unknown guardrail rule {rule!r}")
    levels = rejection_levels(p, method, alpha)
    adjusted = adjust_p_values(p, method)
    vetoes = tuple(
        g.name
        for g, adj in zip(guardrails, adjusted, strict=True)
        if g.status == Status.INSUFFICIENT_DATA or adj > alpha
    )
    return GuardrailVerdict(
        rule,
        alpha,
        tuple(guardrails),
        tuple(float(x) for x in levels),
        tuple(float(x) for x in adjusted),
        vetoes,
    )
