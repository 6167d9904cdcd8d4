"""Step 7 — recommend mitigations tied to the evidence, and a counterfactual check.

Mitigations follow what was found: an implicated deploy/model/config/prompt/UI change is
rolled back *for the affected scope* to the version before it (from the change log); a
flag is switched off for that scope; a named failing stage with no implicated change gets a
fail-over / circuit-breaker; a measurement issue gets the telemetry fix and a backfill from
the redundant source, and no product action.

The counterfactual check confirms the cause before the fix is declared the fix:

* **targeted rollback with a holdback** — roll back in the scope except a random
  ``HOLDBACK`` share of units; the two groups differ only by the change, so the rolled-back
  group recovering while the holdback does not is causal evidence. The time needed is the
  two-proportion sample size (:func:`tripwire.stats.sample_size_proportions`) for the
  observed drop at the current traffic;
* **switchback** (when units share the component, e.g. a model or a shard, so per-unit
  randomisation leaks): a schedule from :func:`tripwire.stats.plan_switchback` with the
  block length that minimises the estimator's variance for this metric's autocorrelation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tripwire.monitor.changes import Change
from tripwire.stats import choose_block_length, sample_size_proportions, switchback_design

HOLDBACK = 0.1
SHARED_KINDS = ("model", "config")


@dataclass(frozen=True)
class Action:
    action: str
    evidence: str
    owner: str = ""
    due: str = ""


@dataclass(frozen=True)
class CounterfactualCheck:
    design: str  # holdback | switchback | none
    description: str
    block_minutes: int | None = None
    schedule: tuple[int, ...] = ()
    units_needed: int | None = None
    hours_needed: float | None = None


@dataclass(frozen=True)
class Recommendation:
    actions: tuple[Action, ...]
    check: CounterfactualCheck
    guardrails: tuple[str, ...]
    success_criteria: tuple[str, ...]


def previous_version(change: Mapping[str, Any], history: Sequence[Change]) -> str | None:
    """The version of the same service before ``change`` (from the change log)."""
    earlier = [
        c
        for c in history
        if c.service == change["service"]
        and c.id != change.get("id")
        and c.at.isoformat() < change["at"].replace("Z", "+00:00")
    ]
    return earlier[-1].version if earlier else None


def holdback_check(
    baseline_rate: float, current_rate: float, units_per_hour: float, scope: str
) -> CounterfactualCheck:
    """Targeted rollback with a holdback sized to see the observed drop."""
    drop = abs(baseline_rate - current_rate)
    if not (0 < baseline_rate < 1) or drop <= 0 or units_per_hour <= 0:
        return CounterfactualCheck(
            "holdback", f"roll back in {scope}, hold back {HOLDBACK:.0%} of units for comparison"
        )
    try:
        plan = sample_size_proportions(
            current_rate, drop, alpha=0.05, power=0.8, ratio=(1 - HOLDBACK) / HOLDBACK
        )
    except ValueError:
        return CounterfactualCheck(
            "holdback", f"roll back in {scope}, hold back {HOLDBACK:.0%} of units for comparison"
        )
    total = int(sum(plan.n_per_arm))
    hours = total / units_per_hour
    return CounterfactualCheck(
        "holdback",
        f"roll back in {scope} for {1 - HOLDBACK:.0%} of units and hold back {HOLDBACK:.0%}; compare the "
        f"step conversion of the two groups ({total:,} units, ≈ {hours:.1f} h at current traffic, "
        f"80% power for a {drop * 100:.1f} pp difference)",
        units_needed=total,
        hours_needed=hours,
    )


def switchback_check(
    history: np.ndarray, block_candidates_minutes: int = 10, periods: int = 144, seed: int = 0
) -> CounterfactualCheck:
    """A switchback schedule over ``periods`` 10-minute periods (one day) for a shared component."""
    clean = np.nan_to_num(np.asarray(history, dtype=float))
    if clean.size < 8 or np.std(clean) == 0:
        block, burn_in = 6, 1
    else:
        choice = choose_block_length(clean, periods, carryover_periods=1)
        block, burn_in = choice.block_length, choice.burn_in
    design = switchback_design(periods, block, burn_in=burn_in, seed=seed)
    return CounterfactualCheck(
        "switchback",
        f"alternate old/new version in blocks of {block * block_candidates_minutes} min for a day "
        f"({design.n_blocks} blocks, first {burn_in * block_candidates_minutes} min of each dropped as burn-in); "
        "analyse with the randomisation test of tripwire.stats.switchback_test",
        block_minutes=block * block_candidates_minutes,
        schedule=design.block_assignment,
    )


def recommend(
    *,
    category: str,
    implicated: Mapping[str, Any] | None,
    history: Sequence[Change],
    segments_text: str,
    breakpoint: str | None,
    metric: str,
    baseline_rate: float,
    current_rate: float,
    units_per_hour: float,
    series_history: np.ndarray,
) -> Recommendation:
    """Mitigations, the counterfactual check, guardrails and success criteria."""
    actions: list[Action] = []
    check = CounterfactualCheck("none", "no causal check needed: the data, not the product, moved")
    if category == "measurement issue":
        change = implicated
        if change:
            actions.append(
                Action(
                    f"revert {change['service']} to its previous config ({previous_version(change, history) or 'previous version'}) for {segments_text}",
                    f"the telemetry loss started {0 if change is None else ''}right after {change['service']} {change.get('version', '')}",
                )
            )
        actions.append(
            Action(
                "backfill the missing orders from the order ledger and annotate dashboards for the window",
                "the ledger recorded the orders the app did not report",
            )
        )
        actions.append(
            Action(
                f"do not roll back product changes because of {metric}",
                "the drop is in measurement only",
            )
        )
    elif implicated is not None:
        kind, service = implicated["kind"], implicated["service"]
        scope = segments_text
        if kind == "flag":
            actions.append(
                Action(
                    f"turn flag {service} off for {scope}",
                    f"flag changed {implicated.get('version', '')} just before onset",
                )
            )
        else:
            before = previous_version(implicated, history)
            target = f" to {before}" if before else ""
            actions.append(
                Action(
                    f"roll back {service} {implicated.get('version', '')}{target} for {scope}",
                    f"{kind} {service} matched the onset and the localized scope",
                )
            )
        if breakpoint:
            actions.append(
                Action(
                    f"circuit-break the '{breakpoint}' stage for {scope} if the rollback is slow",
                    f"'{breakpoint}' is where conversion broke",
                )
            )
        if kind in SHARED_KINDS:
            check = switchback_check(series_history)
        else:
            check = holdback_check(baseline_rate, current_rate, units_per_hour, scope)
    else:
        if breakpoint:
            actions.append(
                Action(
                    f"fail over or circuit-break the '{breakpoint}' stage for {segments_text}",
                    f"'{breakpoint}' is where conversion broke; no change-log entry explains it",
                )
            )
        actions.append(
            Action(
                "page the owning team to look for an unlogged change (infra, vendor, traffic source)",
                "no change-log entry near the onset matches",
            )
        )
    guardrails = (
        "watch checkout_error_rate and stage latency p95 during the mitigation",
        "keep the rollback scoped to the affected segments; unaffected segments are the control",
        "stop the holdback/switchback early if the loss per hour exceeds the incident's",
    )
    success = (
        f"{metric} inside {segments_text} back within the baseline 95% interval for 2 consecutive hours",
        "difference-in-differences (affected vs unaffected segments, during vs after the mitigation) "
        "recovers the drop with p < 0.05 — `tripwire incidents show ID` tracks it",
    )
    return Recommendation(tuple(actions), check, guardrails, success)
