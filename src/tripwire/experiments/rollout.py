"""Staged rollouts: allocation from spec + registry state, advance, kill switch, guard.

A spec's ``rollout.stages`` (e.g. 1% → 5% → 25% → 100%) are walked one at a time; the
registry (:class:`tripwire.experiments.registry.Registry`) holds where the rollout stands.
The allocation handed to :func:`tripwire.experiments.assignment.assign` follows it:

============  =====================================================================
status        new units
============  =====================================================================
running       enrolled up to the current stage's share (raising it keeps everyone)
paused        none (0%); units already assigned keep their arm (sticky, see
              :mod:`tripwire.experiments.exposure_log`)
killed        none, and assigned units fall back too (the kill switch)
completed     the last stage's share
============  =====================================================================

:func:`check` is the rollout guard: it evaluates the current stage's abort (no-go)
criteria on live data through the metrics layer (each metric in the treatment arm, or its
change against control, over the units exposed so far) and, when the stage says so, every
guardrail for evidence of harm beyond its threshold. A breach pauses the rollout, records
why in the decision log and calls the notifier.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import ibis.expr.types as ir

from tripwire.experiments.assignment import Allocation
from tripwire.experiments.registry import (
    Registry,
    RolloutState,
    SpecChangedAfterLock,
    default_author,
)
from tripwire.experiments.spec import (
    AbortCriterion,
    ExperimentSpec,
    ExperimentSpecError,
    Guardrail,
    LoadedSpec,
    RolloutStage,
    default_test,
    load_spec,
    spec_files,
)
from tripwire.metrics.compile import timeseries_expr, unit_key
from tripwire.metrics.definitions import MetricBase
from tripwire.metrics.exposures import UNIT, exposure_sources, resolve_exposures, summarize
from tripwire.metrics.loader import MetricCatalog, MetricDefinitionError, load_metrics
from tripwire.metrics.unit_stats import ALL, unit_stats
from tripwire.stats import (
    MeanStats,
    RatioStats,
    delta_method_ratio_test,
    non_inferiority_test,
    two_proportion_z_test,
    welch_t_test,
)
from tripwire.stats.results import ComparisonResult
from tripwire.store.engine import connect, events_table
from tripwire.store.workspace import Workspace

ARM_COLUMN = "experiment_arm"


class RolloutError(RuntimeError):
    """A rollout operation that the current state does not allow."""


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class RolloutView:
    """The rollout as assignment sees it: stage, status and the share for new units."""

    experiment: str
    stage_index: int
    stage: RolloutStage | None
    status: Literal["running", "paused", "killed", "completed"]
    share: float
    reason: str
    since: datetime | None


def _stages(spec: ExperimentSpec) -> list[RolloutStage]:
    return list(spec.rollout.stages) if spec.rollout else []


def current_rollout(spec: ExperimentSpec, state: RolloutState | None) -> RolloutView:
    """Where ``spec``'s rollout stands given the registry's ``state`` (None: not started,
    i.e. running at the first stage; a spec without stages runs at 100%)."""
    stages = _stages(spec)
    index = state.stage if state else 0
    stage = stages[index] if stages else None
    status = state.status if state else "running"
    stopped = status in ("paused", "killed")
    share = 0.0 if stopped else (stage.share if stage else 1.0)
    return RolloutView(
        experiment=spec.name,
        stage_index=index,
        stage=stage,
        status=status,
        share=share,
        reason=state.reason if state else "not started: first stage",
        since=state.updated_at if state else None,
    )


def allocation(spec: ExperimentSpec, state: RolloutState | None = None) -> Allocation:
    """The :class:`Allocation` for new units under the current rollout state."""
    view = current_rollout(spec, state)
    holdout = spec.assignment.holdout
    return Allocation(
        experiment=spec.name,
        arms=spec.arm_names,
        weights=spec.weights,
        salt=spec.salt,
        rollout=view.share,
        layer=spec.assignment.layer,
        layer_range=spec.assignment.layer_range,
        holdout_share=holdout.share if holdout else 0.0,
        holdout_salt=holdout.salt if holdout else "global",
        killed=view.status == "killed",
    )


def start(registry: Registry, spec: ExperimentSpec, *, author: str | None = None) -> RolloutState:
    """Record the first stage as running (idempotent once started)."""
    state = registry.rollout_state(spec.name)
    if state is not None:
        return state
    label = _stages(spec)[0].label if spec.rollout else "100%"
    return registry.set_rollout_state(
        spec.name, 0, "running", f"started at stage 1 ({label})", author=author
    )


def advance(
    registry: Registry,
    spec: ExperimentSpec,
    *,
    author: str | None = None,
    force: bool = False,
    now: datetime | None = None,
) -> RolloutState:
    """Move to the next stage (or complete after the last one).

    Refused when killed, when paused (resume first), or before the current stage's
    ``min_duration`` has passed (unless ``force``, which is recorded).
    """
    stages = _stages(spec)
    if not stages:
        raise RolloutError(f"experiment {spec.name!r} has no rollout stages")
    state = registry.rollout_state(spec.name) or start(registry, spec, author=author)
    if state.status == "killed":
        raise RolloutError(
            f"experiment {spec.name!r} was killed ({state.reason}); it cannot advance"
        )
    if state.status == "paused":
        raise RolloutError(
            f"experiment {spec.name!r} is paused ({state.reason}); resume it before advancing"
        )
    if state.status == "completed":
        raise RolloutError(f"experiment {spec.name!r} is already fully rolled out")
    stage = stages[state.stage]
    now = now or datetime.now(UTC)
    elapsed = now - state.updated_at
    if elapsed < stage.min_duration and not force:
        raise RolloutError(
            f"stage {state.stage + 1} ({stage.label}) must run at least {stage.min_duration} "
            f"(running for {_short(elapsed)}); use --force to advance anyway"
        )
    forced = " (forced before min_duration)" if elapsed < stage.min_duration else ""
    if state.stage + 1 >= len(stages):
        return registry.set_rollout_state(
            spec.name, state.stage, "completed", f"rollout complete at {stage.label}{forced}",
            author=author,
        )  # fmt: skip
    following = stages[state.stage + 1]
    return registry.set_rollout_state(
        spec.name,
        state.stage + 1,
        "running",
        f"advanced {stage.label} → {following.label}{forced}",
        author=author,
    )


def resume(
    registry: Registry, spec: ExperimentSpec, reason: str, *, author: str | None = None
) -> RolloutState:
    """Resume a paused rollout at its current stage (needs a reason, recorded)."""
    state = registry.rollout_state(spec.name)
    if state is None or state.status != "paused":
        raise RolloutError(f"experiment {spec.name!r} is not paused")
    if not reason.strip():
        raise RolloutError("resuming a paused rollout needs a reason")
    return registry.set_rollout_state(
        spec.name, state.stage, "running", f"resumed: {reason}", author=author
    )


def kill(
    registry: Registry, spec: ExperimentSpec, reason: str, *, author: str | None = None
) -> RolloutState:
    """The kill switch: no unit is enrolled any more, assigned ones included."""
    if not reason.strip():
        raise RolloutError("the kill switch needs a reason")
    state = registry.rollout_state(spec.name)
    return registry.set_rollout_state(
        spec.name, state.stage if state else 0, "killed", f"killed: {reason}", author=author
    )


def _short(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f}h" if hours < 48 else f"{hours / 24:.1f}d"


# --------------------------------------------------------------------------- the guard


@dataclass(frozen=True)
class Finding:
    """One abort criterion or guardrail evaluated on live data."""

    kind: Literal["abort", "guardrail"]
    name: str
    rule: str
    observed: float | None
    breached: bool
    note: str = ""
    values: dict[str, float | None] = field(default_factory=dict)  #: per arm


@dataclass(frozen=True)
class CheckResult:
    """What :func:`check` found, and what it did about it."""

    experiment: str
    stage_index: int
    stage: str
    status_before: str
    status_after: str
    at: datetime
    since: datetime
    units_per_arm: dict[str, int]
    findings: tuple[Finding, ...]

    @property
    def breaches(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.breached)

    @property
    def breached(self) -> bool:
        return bool(self.breaches)

    def summary(self) -> str:
        if not self.findings:
            return f"stage {self.stage}: no abort criteria to check"
        if not self.breached:
            return f"stage {self.stage}: all {len(self.findings)} criteria pass"
        names = "; ".join(f"{f.rule} (observed {_fmt(f.observed)})" for f in self.breaches)
        return f"stage {self.stage}: BREACH: {names}"


Notifier = Callable[[CheckResult], None]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _exposed_events(
    events: ir.Table,
    spec: ExperimentSpec,
    workspace: Workspace,
    since: datetime,
    at: datetime,
) -> ir.Table:
    """Events of exposed units (single-arm) after their first exposure, in [since, at),
    with their arm in :data:`ARM_COLUMN`."""
    sources = exposure_sources(workspace.setting("exposure_mappings", default=[]))
    exposed = resolve_exposures(events.filter(events.timestamp < at), spec.name, sources=sources)
    units = exposed.filter(exposed.n_arms == 1).select(
        __unit=exposed[UNIT], **{ARM_COLUMN: exposed.arm}, __t0=exposed.t0
    )
    window = events.filter((events.timestamp >= since) & (events.timestamp < at))
    window = window.mutate(__key=unit_key(window, spec.unit).cast("string"))
    joined = window.inner_join(units, window["__key"] == units["__unit"])
    joined = joined.filter(joined.timestamp >= joined["__t0"])
    return joined.select(*window.columns, ARM_COLUMN).drop("__key")


def _abort_findings(
    table: ir.Table,
    spec: ExperimentSpec,
    criteria: list[AbortCriterion],
    catalog: MetricCatalog,
) -> list[Finding]:
    findings = []
    control = spec.control_arm.name
    for criterion in criteria:
        metric: MetricBase = catalog[criterion.metric]
        rows = (
            timeseries_expr([metric], table, grain=None, dimensions=[ARM_COLUMN])
            .to_pyarrow()
            .to_pylist()
        )
        by_arm = {r[ARM_COLUMN]: r for r in rows}
        values = {arm: _value(by_arm.get(arm), metric.name) for arm in spec.arm_names}
        volume = {arm: _volume(by_arm.get(arm), metric.name) for arm in spec.arm_names}
        worst: float | None = None
        breached = False
        thin: list[str] = []
        for arm in spec.arm_names:
            if arm == control:
                continue
            if volume[arm] < criterion.min_events:
                thin.append(arm)
                continue
            observed = _compare(criterion, values[arm], values.get(control))
            if observed is None:
                continue
            if criterion.breached(observed):
                breached = True
                worst = observed
            elif worst is None:
                worst = observed
        note = (
            f"fewer than {criterion.min_events} events in {', '.join(thin)}: not judged"
            if thin
            else ""
        )
        findings.append(
            Finding("abort", criterion.metric, criterion.describe(), worst, breached, note, values)
        )
    return findings


def _value(row: dict[str, Any] | None, name: str) -> float | None:
    if row is None:
        return None
    value = row.get(f"{name}__value")
    return None if value is None else float(value)


def _volume(row: dict[str, Any] | None, name: str) -> float:
    if row is None:
        return 0.0
    for part in ("denominator", "numerator"):
        value = row.get(f"{name}__{part}")
        if value is not None:
            return float(value)
    return 0.0


def _compare(
    criterion: AbortCriterion, treatment: float | None, control: float | None
) -> float | None:
    if treatment is None:
        return None
    if criterion.compare == "value":
        return treatment
    if control is None:
        return None
    if criterion.compare == "absolute":
        return treatment - control
    return None if control == 0 else treatment / control - 1.0


def _comparison(test: str, control: Any, treatment: Any, alpha: float) -> ComparisonResult:
    if isinstance(control, RatioStats):
        return delta_method_ratio_test(control, treatment, alpha=alpha)
    assert isinstance(control, MeanStats)
    if test == "two_proportion_z" and control.is_binary_compatible:
        return two_proportion_z_test(control, treatment, alpha=alpha)
    return welch_t_test(control, treatment, alpha=alpha)


def _harm_findings(
    events: ir.Table,
    spec: ExperimentSpec,
    workspace: Workspace,
    catalog: MetricCatalog,
    at: datetime,
) -> list[Finding]:
    """Each guardrail (and its cohorts): is there evidence of harm beyond the threshold?

    Harm is shown when the one-sided test of "the effect is on the harmful side of the
    threshold" rejects at the spec's alpha (the mirror of the non-inferiority test the
    final analysis uses), so a thin early stage pauses only on real evidence.
    """
    if not spec.guardrails:
        return []
    metrics = list(dict.fromkeys(g.metric for g in spec.guardrails))
    dims = sorted({d for g in spec.guardrails for d in spec.guardrail_cohorts(g)})
    sources = exposure_sources(workspace.setting("exposure_mappings", default=[]))
    stats = unit_stats(
        events.filter(events.timestamp < at),
        spec.name,
        [catalog[m] for m in metrics],
        dimensions=dims,
        analysis_window=spec.analysis_window,
        unit=spec.unit,
        sources=sources,
    )
    table = stats.all_stats()
    findings = []
    control = spec.control_arm.name
    for g in spec.guardrails:
        cells = [(ALL, ALL)] + [
            (dim, value)
            for (metric, arm, dim, value) in table
            if metric == g.metric and arm == control and dim in spec.guardrail_cohorts(g)
        ]
        for dim, value in cells:
            findings.extend(_guardrail_cell(g, spec, table, control, dim, value, catalog))
    return findings


def _guardrail_cell(
    g: Guardrail,
    spec: ExperimentSpec,
    table: dict[tuple[str, str, str, str], Any],
    control: str,
    dim: str,
    value: str,
    catalog: MetricCatalog,
) -> list[Finding]:
    out = []
    base = table.get((g.metric, control, dim, value))
    label = g.label if dim == ALL else f"{g.label} [{dim}={value}]"
    rule = f"{g.metric} {g.scale} effect must not be {'below' if g.harm == 'decrease' else 'above'} {g.threshold:+g}"
    for arm in spec.treatment_arms:
        treated = table.get((g.metric, arm.name, dim, value))
        if base is None or treated is None:
            continue
        test = g.test or default_test(catalog[g.metric].type)
        result = _comparison(test, _plain(base), _plain(treated), spec.alpha)
        mirrored: Literal["increase", "decrease"] = (
            "increase" if g.harm == "decrease" else "decrease"
        )
        harm = non_inferiority_test(
            result, g.threshold, harm=mirrored, relative=g.scale == "relative", alpha=spec.alpha
        )
        out.append(
            Finding(
                "guardrail",
                label,
                rule,
                harm.estimate if math.isfinite(harm.estimate) else None,
                harm.passed,
                f"{arm.name}: one-sided p={harm.p_value:.3g} for harm beyond the threshold",
            )
        )
    return out


def _plain(stats: Any) -> Any:
    """The outcome statistics (CUPED covariates are not used by the guard)."""
    return getattr(stats, "outcome", stats)


def check(
    workspace: Workspace,
    loaded: LoadedSpec,
    registry: Registry,
    catalog: MetricCatalog,
    backend: Any,
    *,
    at: datetime | None = None,
    window: timedelta = timedelta(days=1),
    author: str | None = None,
    notify: Notifier | None = None,
) -> CheckResult:
    """Evaluate the current stage's abort criteria (and guardrails) on live data.

    ``at`` (default: the end of the data) closes the window ``[at − window, at)`` the abort
    metrics are read over; guardrails use every exposed unit up to ``at``. A breach while
    running pauses the rollout and calls ``notify``; every check is in the decision log.
    """
    spec = loaded.spec
    events = events_table(backend)
    if at is None:
        latest = events.aggregate(hi=events.timestamp.max()).to_pyarrow()["hi"][0].as_py()
        if latest is None:
            raise RolloutError("the lake has no events yet: nothing to check")
        at = latest + timedelta(microseconds=1)
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    since = at - window
    state = registry.rollout_state(spec.name)
    view = current_rollout(spec, state)
    stage = view.stage
    exposed = _exposed_events(events, spec, workspace, since, at)
    sources = exposure_sources(workspace.setting("exposure_mappings", default=[]))
    summary = summarize(
        resolve_exposures(events.filter(events.timestamp < at), spec.name, sources=sources),
        spec.name,
    )
    if summary.analysed_units == 0:
        raise RolloutError(
            f"no exposures of {spec.name!r} before {at:%Y-%m-%d %H:%M} UTC: nothing to check yet"
        )
    findings: list[Finding] = []
    if stage is not None:
        findings += _abort_findings(exposed, spec, list(stage.abort), catalog)
    if stage is None or stage.abort_on_guardrail:
        findings += _harm_findings(events, spec, workspace, catalog, at)
    result = CheckResult(
        experiment=spec.name,
        stage_index=view.stage_index,
        stage=stage.label if stage else "100%",
        status_before=view.status,
        status_after=view.status,
        at=at,
        since=since,
        units_per_arm=dict(summary.units_per_arm),
        findings=tuple(findings),
    )
    who = author or default_author()
    details = {
        "at": at.isoformat(),
        "findings": [
            {"name": f.name, "rule": f.rule, "observed": f.observed, "breached": f.breached}
            for f in findings
        ],
    }
    if result.breached and view.status == "running":
        registry.set_rollout_state(
            spec.name,
            view.stage_index,
            "paused",
            "abort criteria breached: " + "; ".join(f.rule for f in result.breaches),
            details=details,
            author=who,
        )
        result = CheckResult(**{**result.__dict__, "status_after": "paused"})
        if notify is not None:
            notify(result)
    else:
        registry.log(spec.name, "check", result.summary(), details, author=who)
    return result


# --------------------------------------------------------------------------- scheduled guard


def check_running(
    workspace: Workspace,
    *,
    at: datetime | None = None,
    window: timedelta = timedelta(days=1),
    notify: Notifier | None = None,
    author: str = "rollout-guard",
) -> dict[str, CheckResult | str]:
    """One pass of the scheduled guard: :func:`check` every experiment whose rollout is
    running (locked, not paused, killed or completed) and that has exposures.

    Returns, per experiment, its result or why it was skipped (a spec error, no exposures
    yet, a spec changed after lock). Nothing raises for one experiment's problem, so one
    broken spec never stops the others from being guarded.
    """
    out: dict[str, CheckResult | str] = {}
    try:
        catalog = load_metrics(workspace, check_lake=False)
    except MetricDefinitionError as error:
        return {path.stem: f"skipped: {error}" for path in spec_files(workspace)}
    backend = connect(workspace)
    with Registry.open(workspace) as registry:
        for path in spec_files(workspace):
            name = path.stem
            state = registry.rollout_state(name)
            if registry.lock_of(name) is None:
                out[name] = "skipped: not locked"
                continue
            if state is not None and state.status != "running":
                out[name] = f"skipped: rollout {state.status}"
                continue
            try:
                loaded = load_spec(workspace, name, catalog=catalog)
                registry.ensure_current(loaded)
                out[name] = check(
                    workspace, loaded, registry, catalog, backend,
                    at=at, window=window, author=author, notify=notify,
                )  # fmt: skip
            except (ExperimentSpecError, SpecChangedAfterLock, RolloutError) as error:
                out[name] = f"skipped: {error}"
    return out


class RolloutGuard:
    """The scheduled guard for the server: :func:`check_running` every ``interval`` in a
    background thread (``start``/``stop``; ``stop`` waits for a pass in progress).

    ``on_pass`` receives each pass's results (e.g. to log them); ``notify`` is handed to
    :func:`check` for breaches. A pass that fails unexpectedly is kept in ``last_error``
    and the loop goes on.
    """

    def __init__(
        self,
        workspace: Workspace,
        *,
        interval: timedelta = timedelta(minutes=5),
        window: timedelta = timedelta(days=1),
        notify: Notifier | None = None,
        on_pass: Callable[[dict[str, CheckResult | str]], None] | None = None,
    ) -> None:
        self.workspace = workspace
        self.interval = interval
        self.window = window
        self.notify = notify
        self.on_pass = on_pass
        self.passes = 0
        self.last_error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> dict[str, CheckResult | str]:
        results = check_running(self.workspace, window=self.window, notify=self.notify)
        self.passes += 1
        if self.on_pass is not None:
            self.on_pass(results)
        return results

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as error:  # noqa: BLE001 - keep guarding; report via last_error
                self.last_error = error
            self._stop.wait(self.interval.total_seconds())

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, name="tripwire-rollout-guard", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
