"""Rules: from per-series verdicts to alert triggers, one tick at a time.

A :class:`RuleBank` holds the state of every rule of a monitor over its ``n_series`` series
(index 0 is the aggregate, the others are segments) in numpy arrays and, per tick, returns
the :class:`Trigger` of each (rule, series) whose condition starts to hold and the
:class:`Clear` of each whose condition has stopped holding for ``resolve_after``.

Conditions (see :class:`~tripwire.monitor.definitions.RuleSpec`):

* **threshold** — ``value > above`` or ``value < below`` on points with at least
  ``min_volume`` (denominator) behind them, held on every point for ``for``
  (``for: 5m`` at minute grain = 5 consecutive minutes); a missing or thin point breaks
  the streak.
* **detector** — the detector fired in the rule's direction on this tick; the onset is
  the detector's change-point estimate (:meth:`DetectorBank.locate_onset`). The condition
  holds while the detector is in alarm in that direction.
* **trend** — the value of the last ``periods + 1`` completed ``period`` windows moved
  strictly in ``direction`` (numerator and denominator summed per window, so a ratio's
  window value is Σnum/Σden); evaluated when a window closes.
* **growth** — the volume of the last completed window exceeds the previous window's by
  more than ``growth`` (relative), with at least ``min_volume`` per hour in it.

``scope`` restricts a rule to the aggregate, to the segments (the cohort-stratified form:
fires when any segment breaches even if the aggregate is fine) or to all series.
The same arithmetic runs in backfill and streaming: the bank only ever sees ticks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tripwire.monitor.definitions import RuleSpec
from tripwire.monitor.detectors import DetectorBank, TickResult


@dataclass(frozen=True)
class Trigger:
    """A rule's condition started to hold on one series at ``timestamp`` (epoch seconds)."""

    rule: RuleSpec
    series: int
    timestamp: int
    onset: int
    observed: float
    expected: float
    lower: float
    upper: float
    direction: int
    volume: float


@dataclass(frozen=True)
class Clear:
    """A rule's condition on one series has not held since ``last_true`` (resolve)."""

    rule: RuleSpec
    series: int
    timestamp: int
    last_true: int


def _scope_mask(rule: RuleSpec, n_series: int) -> NDArray[np.bool_]:
    mask = np.ones(n_series, dtype=bool)
    if rule.scope == "aggregate":
        mask[1:] = False
    elif rule.scope == "segments":
        mask[0] = False
    return mask


class _RuleState:
    """Per-series state of one rule."""

    def __init__(self, rule: RuleSpec, n_series: int, step_seconds: int) -> None:
        self.rule = rule
        self.scope = _scope_mask(rule, n_series)
        self.streak_start = np.full(n_series, -1, dtype=np.int64)
        self.active = np.zeros(n_series, dtype=bool)
        self.last_true = np.full(n_series, -1, dtype=np.int64)
        self.need = int(rule.for_.total_seconds())
        self.step = step_seconds
        self.resolve_after = int(rule.resolve_after.total_seconds())
        # windows for trend/growth: sums of the current window and the values of closed ones
        self.period = int(rule.period.total_seconds())
        self.window_id = -1
        self.num = np.zeros(n_series)
        self.den = np.zeros(n_series)
        self.vol = np.zeros(n_series)
        self.hours = np.zeros(n_series)
        self.closed_values: list[NDArray[np.float64]] = []
        self.closed_volumes: list[NDArray[np.float64]] = []


class RuleBank:
    """The rules of one monitor over ``n_series`` series (index 0 = aggregate)."""

    def __init__(self, rules: Sequence[RuleSpec], n_series: int, step_seconds: int) -> None:
        self.n_series = n_series
        self.step = step_seconds
        self.states = [_RuleState(r, n_series, step_seconds) for r in rules]

    def update(
        self,
        tick: TickResult,
        bank: DetectorBank,
        volume: NDArray[np.float64],
        numerators: NDArray[np.float64],
        denominators: NDArray[np.float64],
    ) -> list[Trigger | Clear]:
        """Evaluate every rule on one tick (right after ``bank`` produced ``tick``).

        ``volume``, ``numerators`` and ``denominators`` are counts without NaN (0 where
        nothing was counted; the evaluator cleans a whole block at once).
        """
        out: list[Trigger | Clear] = []
        ts = tick.timestamp
        for state in self.states:
            kind = state.rule.kind
            if kind == "threshold":
                out += self._threshold(state, tick, volume)
            elif kind == "detector":
                out += self._detector(state, tick, bank, volume)
            else:
                out += self._window(state, tick, volume, numerators, denominators)
            out += self._clears(state, ts)
        return out

    # -- conditions -----------------------------------------------------------------------
    def _threshold(
        self, state: _RuleState, tick: TickResult, volume: NDArray[np.float64]
    ) -> list[Trigger | Clear]:
        rule, ts, y = state.rule, tick.timestamp, tick.observed
        # comparisons with NaN (no data) are false
        if rule.above is not None and rule.below is not None:
            breach = (y > rule.above) | (y < rule.below)
        elif rule.above is not None:
            breach = y > rule.above
        else:  # a threshold rule has `above` or `below` (validated)
            breach = y < (-np.inf if rule.below is None else rule.below)
        cond = state.scope & breach & np.isfinite(y) & (volume >= rule.min_volume)
        if not (cond.any() or (state.streak_start >= 0).any()):
            return []  # nothing held, nothing starts: no state to move
        state.streak_start = np.where(
            cond, np.where(state.streak_start < 0, ts, state.streak_start), -1
        )
        state.last_true = np.where(cond, ts, state.last_true)
        held = cond & (ts - state.streak_start + self.step >= max(state.need, self.step))
        new = held & ~state.active
        state.active |= new
        out: list[Trigger | Clear] = []
        for s in np.flatnonzero(new):
            direction = 1 if rule.above is not None and y[s] > rule.above else -1
            out.append(
                self._trigger(state, tick, int(s), int(state.streak_start[s]), direction, volume)
            )
        return out

    def _detector(
        self,
        state: _RuleState,
        tick: TickResult,
        bank: DetectorBank,
        volume: NDArray[np.float64],
    ) -> list[Trigger | Clear]:
        rule, ts = state.rule, tick.timestamp
        if not (tick.fired.any() or state.active.any()):
            return []  # nothing fired, nothing open: no state to move
        wanted = {"up": 1, "down": -1, "any": 0}[rule.detector or "any"]
        fired = tick.fired & state.scope
        if wanted:
            fired &= tick.direction == wanted
        # the alarm holds through the detector's confirmation hold in the alert's direction
        holding = tick.in_alarm & state.active & state.scope
        state.last_true = np.where(fired | holding, ts, state.last_true)
        out: list[Trigger | Clear] = []
        for s in np.flatnonzero(fired):
            if state.active[s]:
                continue  # still open: the store dedupes, and the streak goes on
            state.active[s] = True
            onset = bank.locate_onset(int(s)).timestamp
            out.append(
                self._trigger(state, tick, int(s), min(onset, ts), int(tick.direction[s]), volume)
            )
        return out

    def _window(
        self,
        state: _RuleState,
        tick: TickResult,
        volume: NDArray[np.float64],
        numerators: NDArray[np.float64],
        denominators: NDArray[np.float64],
    ) -> list[Trigger | Clear]:
        rule, ts = state.rule, tick.timestamp
        window = ts // state.period
        out: list[Trigger | Clear] = []
        if state.window_id >= 0 and window != state.window_id:
            with np.errstate(invalid="ignore", divide="ignore"):
                value = np.where(state.den > 0, state.num / state.den, np.nan)
            state.closed_values.append(value)
            state.closed_volumes.append(state.vol.copy())
            keep = rule.periods + 1
            state.closed_values = state.closed_values[-keep:]
            state.closed_volumes = state.closed_volumes[-keep:]
            cond = self._window_condition(state)
            state.last_true = np.where(cond, ts, state.last_true)
            for s in np.flatnonzero(cond & ~state.active):
                state.active[s] = True
                direction = 1 if rule.kind == "growth" or rule.trend == "up" else -1
                t = Trigger(
                    rule=rule,
                    series=int(s),
                    timestamp=ts,
                    onset=ts - state.period * (rule.periods if rule.kind == "trend" else 1),
                    observed=float(state.closed_values[-1][s]),
                    expected=float(state.closed_values[-2][s])
                    if len(state.closed_values) > 1
                    else float("nan"),
                    lower=float("nan"),
                    upper=float("nan"),
                    direction=direction,
                    volume=float(state.closed_volumes[-1][s]),
                )
                out.append(t)
            state.num[:] = 0.0
            state.den[:] = 0.0
            state.vol[:] = 0.0
        state.window_id = window
        num, den = numerators, denominators
        if np.all(den == 0) and np.any(np.isfinite(tick.observed)):
            num, den = np.nan_to_num(tick.observed), np.isfinite(tick.observed).astype(float)
        state.num += num
        state.den += den
        state.vol += volume
        return out

    def _window_condition(self, state: _RuleState) -> NDArray[np.bool_]:
        rule = state.rule
        if rule.kind == "growth":
            if len(state.closed_volumes) < 2:
                return np.zeros(self.n_series, dtype=bool)
            prev, last = state.closed_volumes[-2], state.closed_volumes[-1]
            per_hour = last / (state.period / 3600)
            with np.errstate(invalid="ignore", divide="ignore"):
                grown = (last - prev) / np.maximum(prev, 1.0) > (rule.growth or 0.0)
            return state.scope & grown & (per_hour >= rule.min_volume)
        if len(state.closed_values) < rule.periods + 1:
            return np.zeros(self.n_series, dtype=bool)
        values = np.stack(state.closed_values[-(rule.periods + 1) :])
        steps = np.diff(values, axis=0)
        with np.errstate(invalid="ignore"):
            moved = np.all(steps < 0, axis=0) if rule.trend == "down" else np.all(steps > 0, axis=0)
        return state.scope & moved & np.all(np.isfinite(values), axis=0)

    # -- helpers --------------------------------------------------------------------------
    def _trigger(
        self,
        state: _RuleState,
        tick: TickResult,
        s: int,
        onset: int,
        direction: int,
        volume: NDArray[np.float64],
    ) -> Trigger:
        return Trigger(
            rule=state.rule,
            series=s,
            timestamp=tick.timestamp,
            onset=onset,
            observed=float(tick.observed[s]),
            expected=float(tick.expected[s]),
            lower=float(tick.lower[s]),
            upper=float(tick.upper[s]),
            direction=direction,
            volume=float(volume[s]),
        )

    def _clears(self, state: _RuleState, ts: int) -> list[Trigger | Clear]:
        if not state.active.any():
            return []
        wait = state.resolve_after
        if state.rule.kind in ("trend", "growth"):
            wait = max(wait, state.period)
        done = state.active & (ts - state.last_true >= wait)
        out: list[Trigger | Clear] = []
        for s in np.flatnonzero(done):
            state.active[s] = False
            out.append(Clear(state.rule, int(s), ts, int(state.last_true[s])))
        return out
