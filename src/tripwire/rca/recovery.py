"""Step 9 — verify the fix: has the metric recovered since the mitigation?

The mitigation is the first change-log entry after the onset that rolls back the
implicated change (``rollback_of``) or changes the same service with a scope touching the
incident's segments. After it (skipping a 10-minute settling period) the metric inside each
segment is compared with its pre-incident baseline (same clock-time on the previous days,
two-proportion z test of :mod:`tripwire.stats`), and the segments against the unaffected
ones with a difference-in-differences around the mitigation
(:func:`tripwire.rca.changes.staged_did`). A segment has recovered when its rate after the
mitigation is not significantly below baseline (p ≥ 0.01) and has regained at least half
of the drop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ibis.backends import BaseBackend

from tripwire.metrics.definitions import MetricBase
from tripwire.monitor.changes import Change
from tripwire.rca import data
from tripwire.rca.changes import staged_did
from tripwire.rca.incidents import IncidentRecord
from tripwire.rca.segments import describe
from tripwire.stats import MeanStats, two_proportion_z_test

SETTLE = timedelta(minutes=10)
AFTER = timedelta(hours=2)


@dataclass(frozen=True)
class SegmentRecovery:
    segment: str
    baseline: float
    during: float
    after: float
    p_value: float
    recovered: bool


@dataclass(frozen=True)
class RecoveryResult:
    recovered: bool
    mitigation: dict[str, Any] | None
    segments: tuple[SegmentRecovery, ...]
    did: str | None
    statement: str


def find_mitigation(record: IncidentRecord, changes: Sequence[Change]) -> Change | None:
    """The first change after onset that undoes the implicated change or touches the scope."""
    implicated = record.change or {}
    for change in sorted(changes, key=lambda c: c.at):
        if change.at <= record.onset:
            continue
        same_service = implicated and change.service == implicated.get("service")
        undoes = change.rollback_of is not None and (
            not implicated or change.rollback_of == implicated.get("version")
        )
        touches_scope = not record.segments or any(change.touches(s) for s in record.segments)
        if (undoes or same_service) and touches_scope:
            return change
    return None


def _rates(
    backend: BaseBackend,
    metric: MetricBase,
    segment: dict[str, str],
    windows: Mapping[str, Sequence[data.Window]],
) -> dict[str, tuple[float, float]]:
    dims = data.investigation_dimensions(metric)
    leaves = data.metric_leaves(backend, metric, dims, windows)
    out = {}
    for name, table in leaves.items():
        mask = table.select(segment) if segment else slice(None)
        out[name] = (float(table.numerator[mask].sum()), float(table.denominator[mask].sum()))
    return out


def track_recovery(
    backend: BaseBackend,
    metric: MetricBase,
    record: IncidentRecord,
    changes: Sequence[Change],
    data_end: datetime,
) -> RecoveryResult:
    """Recovery of every segment of ``record`` after its mitigation (see module docstring)."""
    mitigation = find_mitigation(record, changes)
    if mitigation is None:
        return RecoveryResult(
            False,
            None,
            (),
            None,
            "no mitigation recorded in the change log yet (a rollback or flag change touching the scope)",
        )
    start = mitigation.at + SETTLE
    end = min(start + AFTER, data_end)
    if end <= start + timedelta(minutes=20):
        return RecoveryResult(
            False,
            mitigation.to_json(),
            (),
            None,
            f"mitigation at {mitigation.at:%H:%M}: not enough data after it yet",
        )
    after = data.Window(start, end)
    during = data.Window(record.onset, max(mitigation.at, record.onset + data.BUCKET))
    windows = {"baseline": data.baseline_windows(after), "during": (during,), "after": (after,)}
    results = []
    for segment in record.segments or [{}]:
        rates = _rates(backend, metric, segment, windows)
        (bn, bd), (dn, dd), (an, ad) = rates["baseline"], rates["during"], rates["after"]
        if not bd or not ad:
            continue
        b, d_rate, a = bn / bd, (dn / dd if dd else float("nan")), an / ad
        if bn <= bd and an <= ad:
            test = two_proportion_z_test(
                MeanStats.from_proportion(bd, bn), MeanStats.from_proportion(ad, an)
            )
            p = float(test.absolute.p_value)
        else:
            p = 1.0
        regained = (a - d_rate) / (b - d_rate) if b != d_rate and d_rate == d_rate else 1.0
        ok = not (p < 0.01 and a < b) and regained >= 0.5
        results.append(SegmentRecovery(describe(segment), b, d_rate, a, p, bool(ok)))
    did = staged_did(backend, metric, mitigation.to_json(), mitigation.at, end)
    recovered = bool(results) and all(r.recovered for r in results)
    failing = [r.segment for r in results if not r.recovered]
    statement = (
        f"recovered after {mitigation.kind} {mitigation.service} {mitigation.version} at {mitigation.at:%Y-%m-%d %H:%M} UTC"
        if recovered
        else f"not recovered in: {', '.join(failing) or 'no segment has data after the mitigation'}"
    )
    return RecoveryResult(
        recovered, mitigation.to_json(), tuple(results), did.statement if did else None, statement
    )
