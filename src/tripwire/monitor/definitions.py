"""Monitor definitions: the typed form of what users write in ``monitors/*.yaml``.

A monitor watches one metric at one grain, on the aggregate and on every combination of
its segment dimensions up to ``segments.depth`` that carries at least
``segments.min_volume`` per hour (so thin slices do not page). A detector (CUSUM or EWMA
from :mod:`tripwire.monitor.detectors`, thresholds calibrated from a false-alarm target)
scores every series; rules turn detector verdicts and static thresholds into alerts with a
severity.

>>> m = parse_monitor({"name": "conv", "metric": "voice_checkout_conversion",
...     "segments": {"dimensions": ["locale", "device"], "depth": 2},
...     "rules": [{"name": "conv_down", "severity": "P1", "detector": "down"}]})
>>> m.grain, m.segments.depth, m.rules[0].scope, m.rules[0].condition
('minute', 2, 'all', 'detector down')
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tripwire.metrics.definitions import NAME_PATTERN, Duration

Severity = Literal["P1", "P2", "P3", "P4"]
SEVERITIES: tuple[Severity, ...] = ("P1", "P2", "P3", "P4")
#: Rules evaluated per series: only the aggregate, only the segments, or both.
Scope = Literal["aggregate", "segments", "all"]
MonitorGrain = Literal["minute", "hour", "day"]
GRAIN_SECONDS: dict[str, int] = {"minute": 60, "hour": 3600, "day": 86400}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SegmentSpec(_Model):
    """Which slices to watch: all combinations of ``dimensions`` of size 1..``depth``.

    ``min_volume`` is the mean volume per hour (the metric's denominator: sessions, turns,
    events) a slice needs over the calibration history to be watched. ``top_n`` bounds the
    values kept per dimension (by volume).
    """

    dimensions: list[str] = Field(default_factory=list)
    depth: int = Field(default=1, ge=1, le=3)
    min_volume: float = Field(default=0.0, ge=0)
    top_n: int = Field(default=20, ge=1, le=500)

    @field_validator("dimensions", mode="before")
    @classmethod
    def _as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class DetectorSpec(_Model):
    """Detector settings (see :class:`tripwire.monitor.detectors.DetectorConfig`).

    ``threshold`` fixes h (CUSUM) or L (EWMA); omitted, it is calibrated per series from
    ``false_alarms_per_30_days`` (for the whole monitor: split evenly over its series).
    ``kind`` is inferred from the metric (proportions, ratios, values) when omitted.
    ``method: llr`` accumulates log-likelihood-ratio evidence per bucket (see
    :mod:`tripwire.monitor.llr`); its ``effects`` are the alternatives it watches for: odds
    ratios > 1 for proportions (each also as 1/θ), relative shifts in (0, 1) otherwise.
    """

    method: Literal["cusum", "ewma", "llr"] = "cusum"
    kind: Literal["value", "proportion", "ratio"] | None = None
    k: float = Field(default=0.5, ge=0)
    threshold: float | None = Field(default=None, gt=0)
    lam: float = Field(default=0.2, gt=0, le=1)
    false_alarms_per_30_days: float = Field(default=1.0, gt=0)
    warmup: Duration = timedelta(days=1)
    calibration: Duration = timedelta(days=3)
    min_denominator: float = Field(default=1.0, ge=0)
    effects: tuple[float, ...] = ()


class RuleSpec(_Model):
    """One rule: a condition on a series, held for ``for``, with a severity.

    Conditions (exactly one kind): ``above``/``below`` (static threshold on the value, with
    ``min_volume`` per point so a p99 of three turns does not page), ``detector`` (the
    detector fired ``up``/``down``/``any``), or ``trend`` (the value moved in ``direction``
    over ``periods`` consecutive ``period``-long windows: e.g. conversion declining three
    weeks in a row) and ``growth`` (the volume grew by more than this fraction over
    ``period``: a new intent growing fast). ``scope: segments`` is the cohort-stratified
    form: it fires when any watched segment breaches even if the aggregate is fine.
    """

    name: str = Field(pattern=NAME_PATTERN)
    severity: Severity
    description: str = ""
    above: float | None = None
    below: float | None = None
    detector: Literal["up", "down", "any"] | None = None
    trend: Literal["up", "down"] | None = None
    growth: float | None = Field(default=None, gt=0)
    periods: int = Field(default=3, ge=1, le=52)
    period: Duration = timedelta(days=7)
    for_: Duration = Field(default=timedelta(0), alias="for")
    min_volume: float = Field(default=0.0, ge=0)
    scope: Scope = "all"
    resolve_after: Duration = timedelta(minutes=30)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one_condition(self) -> RuleSpec:
        kinds = [
            k
            for k, present in (
                ("threshold", self.above is not None or self.below is not None),
                ("detector", self.detector is not None),
                ("trend", self.trend is not None),
                ("growth", self.growth is not None),
            )
            if present
        ]
        if len(kinds) != 1:
            got = ", ".join(kinds) or "none"
            raise ValueError(
                "a rule needs exactly one condition (above/below, detector, trend or growth);"
                f" got {got}"
            )
        if self.above is not None and self.below is not None and self.below >= self.above:
            raise ValueError(f"below ({self.below}) must be < above ({self.above})")
        return self

    @property
    def kind(self) -> str:
        if self.detector is not None:
            return "detector"
        if self.trend is not None:
            return "trend"
        if self.growth is not None:
            return "growth"
        return "threshold"

    @property
    def condition(self) -> str:
        """The condition in words (for alert texts): ``p99 > 10000 for 5m``."""
        if self.kind == "detector":
            text = f"detector {self.detector}"
        elif self.kind == "trend":
            text = f"{self.trend} {self.periods} periods of {_fmt(self.period)} in a row"
        elif self.kind == "growth":
            text = f"volume growth > {self.growth:.0%} over {_fmt(self.period)}"
        else:
            parts = []
            if self.above is not None:
                parts.append(f"> {self.above:g}")
            if self.below is not None:
                parts.append(f"< {self.below:g}")
            text = " or ".join(parts)
        if self.for_ > timedelta(0):
            text += f" for {_fmt(self.for_)}"
        return text


def _fmt(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class MonitorSpec(_Model):
    """One monitor: a metric at a grain, its watched segments, detector and rules."""

    name: str = Field(pattern=NAME_PATTERN)
    metric: str
    description: str = ""
    grain: MonitorGrain = "minute"
    segments: SegmentSpec = Field(default_factory=lambda: SegmentSpec())
    detector: DetectorSpec = Field(default_factory=lambda: DetectorSpec())
    rules: list[RuleSpec] = Field(min_length=1)
    enabled: bool = True
    owner: str | None = None

    @model_validator(mode="after")
    def _unique_rules(self) -> MonitorSpec:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"duplicate rule name {rule.name!r}")
            seen.add(rule.name)
        return self

    @property
    def step_seconds(self) -> int:
        return GRAIN_SECONDS[self.grain]


def parse_monitor(data: dict[str, Any]) -> MonitorSpec:
    """Validate one monitor mapping (raises pydantic's ``ValidationError``)."""
    return MonitorSpec.model_validate(data)


__all__ = [
    "GRAIN_SECONDS",
    "SEVERITIES",
    "DetectorSpec",
    "MonitorSpec",
    "RuleSpec",
    "SegmentSpec",
    "Severity",
    "parse_monitor",
]
