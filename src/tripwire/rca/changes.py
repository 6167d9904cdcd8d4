"""Step 5 — line the change up with the change log and name the root-cause category.

Every change-log entry (deploys, flags, models, configs, prompts, UI; read through
:class:`tripwire.monitor.changes.ChangeLog`) near the onset is scored

    score = proximity × overlap,   proximity = exp(−Δ / 30 min) for Δ = onset − change time
                                    (changes up to 15 min after the onset allowed, halved),

where ``overlap`` is 0 when the change's scope cannot have touched the localized segments
(:func:`tripwire.monitor.changes.touches`), 0.3 for a global change, and 0.5 + 0.5·(share
of the scope's dimensions the segment pins to the same value + share of the segment's
dimensions the scope names)/2 otherwise. A global change (no localized segment) can only
be explained by a global change. Entries scoring below ``IMPLICATED`` are not blamed.

For flags and staged rollouts (a change with a scope), exposed vs unexposed cells are
compared with a difference-in-differences (two-way fixed effects, cluster-robust by cell,
:func:`tripwire.stats.difference_in_differences`): cells = values of the scope's
dimensions, periods = hours around the change, weights = the metric's denominator.

The category follows the implicated change's kind (deploy → code deploy, model → model
version, config/flag → config, prompt → prompt template, ui → UI change, data → upstream
data), or "measurement issue" when the integrity check says the data, not the product,
moved, or "traffic-mix shift" when the mix of segments, not their rates, explains the
change. Every other category is listed as ruled out with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from ibis.backends import BaseBackend

from tripwire.metrics.definitions import MetricBase
from tripwire.metrics.timeseries import Query, timeseries
from tripwire.monitor.changes import Change, dimension_key, touches
from tripwire.stats import difference_in_differences

CATEGORIES = (
    "code deploy",
    "model version",
    "config",
    "upstream data",
    "feature drift",
    "label drift",
    "UI change",
    "prompt template",
    "eval staleness",
    "traffic-mix shift",
)
MEASUREMENT = "measurement issue"
UNDETERMINED = "undetermined"
KIND_CATEGORY = {
    "deploy": "code deploy",
    "model": "model version",
    "config": "config",
    "flag": "config",
    "prompt": "prompt template",
    "ui": "UI change",
    "data": "upstream data",
}
LOOKBACK = timedelta(hours=6)
LOOKAHEAD = timedelta(minutes=15)
HALF_SCALE = timedelta(minutes=30)
IMPLICATED = 0.25


@dataclass(frozen=True)
class RankedChange:
    change: dict[str, Any]
    minutes_before_onset: float
    proximity: float
    overlap: float
    score: float
    reason: str


@dataclass(frozen=True)
class DiDEvidence:
    change_id: str
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    clusters: int
    statement: str


@dataclass(frozen=True)
class ChangeAnalysis:
    ranked: tuple[RankedChange, ...]
    implicated: RankedChange | None
    did: DiDEvidence | None
    category: str
    category_evidence: str
    ruled_out: dict[str, str]


def scope_overlap(
    scope: Mapping[str, Any], segments: Sequence[Mapping[str, str]]
) -> tuple[float, str]:
    """How well a change's scope matches the localized segments (see module docstring)."""
    if not segments:
        return (
            (1.0, "global change for a global deviation")
            if not scope
            else (0.2, "scoped change, global deviation")
        )
    if not scope:
        return 0.3, "global change: could touch every segment"
    best, reason = 0.0, "scope does not touch the localized segments"
    keys = {dimension_key(k): v for k, v in scope.items()}
    for segment in segments:
        if not touches(scope, segment):
            continue
        seg = {dimension_key(k): v for k, v in segment.items()}
        pinned = sum(1 for k in keys if k in seg) / len(keys)
        named = sum(1 for k in seg if k in keys) / len(seg)
        value = 0.5 + 0.5 * (pinned + named) / 2
        if value > best:
            best, reason = (
                value,
                f"scope touches the segment ({pinned:.0%} of its dimensions pinned, {named:.0%} of the segment's named)",
            )
    return best, reason


def rank_changes(
    changes: Sequence[Change], onset: datetime, segments: Sequence[Mapping[str, str]]
) -> tuple[RankedChange, ...]:
    """Score every change in ``[onset − LOOKBACK, onset + LOOKAHEAD]``, best first."""
    out = []
    for change in changes:
        delta = onset - change.at
        if not (-LOOKAHEAD <= delta <= LOOKBACK):
            continue
        minutes = delta.total_seconds() / 60
        proximity = math.exp(-max(minutes, 0.0) / (HALF_SCALE.total_seconds() / 60))
        if minutes < 0:
            proximity *= 0.5
        overlap, reason = scope_overlap(change.scope, segments)
        out.append(
            RankedChange(change.to_json(), minutes, proximity, overlap, proximity * overlap, reason)
        )
    return tuple(sorted(out, key=lambda r: -r.score))


def staged_did(
    backend: BaseBackend, metric: MetricBase, change: Mapping[str, Any], at: datetime, end: datetime
) -> DiDEvidence | None:
    """Exposed (inside the change's scope) vs unexposed cells, before vs after the change."""
    scope = change.get("scope") or {}
    if not scope or metric.type not in ("ratio", "proportion", "count", "sum"):
        return None
    dims = tuple(
        str(k)
        if "." in str(k) or str(k) in ("locale", "device", "app_version", "os")
        else f"properties.{k}"
        for k in scope
    )
    query = Query(
        grain="hour",
        dimensions=dims,
        start=at - timedelta(hours=12),
        end=max(end, at + timedelta(hours=1)),
        top_n=None,
    )
    try:
        table = timeseries(backend, [metric], query)[metric.name].table
    except Exception:  # a scope dimension the metric's events do not carry
        return None
    rows = table.to_pylist()
    y, treated, post, cluster, weights, period = [], [], [], [], [], []
    for row in rows:
        value, weight = (
            row["value"],
            row["denominator"] if metric.type in ("ratio", "proportion") else 1.0,
        )
        if value is None or not weight:
            continue
        cell = {dimension_key(d): row[d] for d in dims}
        inside = all(
            str(cell[dimension_key(k)]) in (v if isinstance(v, list) else [v])
            for k, v in scope.items()
        )
        y.append(float(value))
        treated.append(int(inside))
        post.append(int(row["bucket"] >= at))
        cluster.append("|".join(str(cell[k]) for k in sorted(cell)))
        weights.append(float(weight))
        period.append(row["bucket"].timestamp())
    try:
        result = difference_in_differences(
            y, treated, post, cluster, period=period, weights=weights
        )
    except ValueError:
        return None
    statement = (
        f"exposed cells moved {result.effect:+.3g} relative to unexposed ones after the change "
        f"(95% CI {result.ci_lower:+.3g} to {result.ci_upper:+.3g}, p = {result.p_value:.2g}, "
        f"{result.n_clusters} cells, cluster-robust)"
    )
    return DiDEvidence(
        str(change.get("id", "")),
        result.effect,
        result.ci_lower,
        result.ci_upper,
        result.p_value,
        result.n_clusters,
        statement,
    )


def categorize(
    implicated: RankedChange | None,
    *,
    measurement_issue: bool,
    mix_share: float,
    localized: bool,
) -> tuple[str, str, dict[str, str]]:
    """The named category, the evidence for it, and why every other category is ruled out."""
    if measurement_issue:
        category = MEASUREMENT
        evidence = "telemetry lost events that the order ledger still recorded: the data moved, not the product"
    elif mix_share >= 0.6:
        category = "traffic-mix shift"
        evidence = (
            f"{mix_share:.0%} of the change comes from the segment mix, not from segment rates"
        )
    elif implicated is not None:
        kind = implicated.change["kind"]
        category = KIND_CATEGORY.get(kind, "config")
        evidence = (
            f"{kind} {implicated.change['service']} {implicated.change.get('version', '')} "
            f"{implicated.minutes_before_onset:.0f} min before onset; {implicated.reason}"
        )
    else:
        category = UNDETERMINED
        evidence = (
            "no change-log entry near the onset matches the deviation's scope; no cause is invented"
        )
    ruled: dict[str, str] = {}
    kinds_seen = implicated.change["kind"] if implicated else None
    for name in CATEGORIES:
        if name == category:
            continue
        if name == "traffic-mix shift":
            ruled[name] = f"segment mix explains only {mix_share:.0%} of the change"
        elif name in ("feature drift", "label drift", "eval staleness"):
            ruled[name] = (
                "the deviation is a step confined to "
                + ("the localized segments" if localized else "no segment")
                + " and coincides with a change; drift and stale evaluations move gradually and broadly"
                if implicated
                else "not testable from events alone: no model-input or label stream was investigated"
            )
        elif name == "upstream data":
            ruled[name] = (
                "data-integrity checks passed for the metric's events"
                if not measurement_issue
                else "the loss is in app telemetry, not an upstream feed"
            )
        elif kinds_seen and KIND_CATEGORY.get(kinds_seen) != name:
            ruled[name] = (
                f"the implicated change is a {kinds_seen}, and no {name} entry matches the scope and onset"
            )
        else:
            ruled[name] = f"no {name} entry in the change log matches the scope and onset"
    return category, evidence, ruled


def mix_share(
    baseline_rate: np.ndarray,
    baseline_den: np.ndarray,
    current_rate: np.ndarray,
    current_den: np.ndarray,
) -> float:
    """Share of a rate change due to the segment mix (Kitagawa decomposition, by leaf)."""
    wb = baseline_den / baseline_den.sum() if baseline_den.sum() else baseline_den
    wc = current_den / current_den.sum() if current_den.sum() else current_den
    # A leaf with no denominator has no rate (weight 0): count it as 0, not as ±inf.
    rb = np.nan_to_num(baseline_rate, nan=0.0, posinf=0.0, neginf=0.0)
    rc = np.where(current_den > 0, np.nan_to_num(current_rate, nan=0.0, posinf=0.0, neginf=0.0), rb)
    mix = float(((wc - wb) * (rb + rc) / 2).sum())
    rate = float(((rc - rb) * (wb + wc) / 2).sum())
    total = abs(mix) + abs(rate)
    return abs(mix) / total if total else 0.0


def analyze_changes(
    backend: BaseBackend,
    metric: MetricBase,
    changes: Sequence[Change],
    onset: datetime,
    end: datetime,
    segments: Sequence[Mapping[str, str]],
    *,
    measurement_issue: bool,
    mix: float,
) -> ChangeAnalysis:
    """Rank, implicate, test and categorize (see the module docstring)."""
    ranked = rank_changes([c for c in changes if not c.rollback_of], onset, segments)
    top = ranked[0] if ranked and ranked[0].score >= IMPLICATED else None
    did = (
        staged_did(
            backend,
            metric,
            top.change,
            datetime.fromisoformat(top.change["at"].replace("Z", "+00:00")),
            end,
        )
        if top
        else None
    )
    category, evidence, ruled = categorize(
        top, measurement_issue=measurement_issue, mix_share=mix, localized=bool(segments)
    )
    return ChangeAnalysis(ranked, top, did, category, evidence, ruled)
