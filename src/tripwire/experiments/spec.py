"""Experiment specs: the typed form of ``experiments/NAME.yaml``, and their loader.

A spec is the pre-registration of one experiment: what it claims (hypothesis), on whom
(population, unit), how units are split (arms, assignment, rollout stages), what decides
it (primary metric with its MDE, guardrails, alpha and power, test, CUPED, sequential
plan, guardrail multiplicity rule), what is looked at on the side (secondaries, cohorts)
and who answers for what (owners, risk register). ``tripwire experiment lock`` hashes the
canonical form (:func:`spec_hash`) so later changes are visible.

Loading reports every problem at once with file, line and field (the YAML machinery of
:mod:`tripwire.metrics.loader`), and checks every metric name against the workspace's
metric catalog.

>>> spec = parse_spec({
...     "name": "demo", "unit": "user",
...     "arms": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}],
...     "primary": {"metric": "purchasers", "mde": "2%"},
... })
>>> spec.control_arm.name, spec.primary.mde, spec.alpha, spec.guardrail_rule
('control', 0.02, 0.05, 'intersection_union')
>>> default_test("ratio"), default_test("proportion"), default_test("mean")
('delta_method', 'two_proportion_z', 'welch')
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from tripwire.metrics.definitions import NAME_PATTERN, EventFilter, Predicate, parse_duration
from tripwire.metrics.loader import (
    DefinitionError,
    MetricCatalog,
    dotted,
    error_path_in,
    load_metrics,
    parse_yaml_with_lines,
)
from tripwire.store.workspace import Workspace

# --------------------------------------------------------------------------- small types


def parse_fraction(value: Any) -> Any:
    """``"3%"`` → 0.03, ``"-1.5%"`` → -0.015; numbers pass through unchanged.

    >>> parse_fraction("3%"), parse_fraction(-0.01)
    (0.03, -0.01)
    """
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return round(float(value.strip()[:-1]) / 100.0, 12)
        except ValueError:
            raise ValueError(
                f"expected a number or a percentage like '3%', got {value!r}"
            ) from None
    return value


#: A number that may be written as a percentage (``"2%"``).
Fraction = Annotated[float, BeforeValidator(parse_fraction)]


def format_duration(value: timedelta) -> str:
    """The shortest exact ``7d``/``36h``/``15m``/``90s`` form (what the spec's JSON holds,
    so a stored spec parses back to the same value).

    >>> format_duration(timedelta(days=3)), format_duration(timedelta(hours=36))
    ('3d', '36h')
    >>> format_duration(timedelta(seconds=1.5))
    '1.5s'
    """
    seconds = value.total_seconds()
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds:g}s"


#: A duration written ``7d``, ``24h``, ``30m``, ``90s`` (serialised the same way).
Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]

TestName = Literal[
    "welch", "two_proportion_z", "delta_method", "bootstrap_quantile", "mann_whitney"
]
#: The test each metric type gets unless the spec says otherwise.
DEFAULT_TESTS: dict[str, TestName] = {
    "proportion": "two_proportion_z",
    "distinct": "two_proportion_z",
    "ratio": "delta_method",
    "mean": "welch",
    "count": "welch",
    "sum": "welch",
    "quantile": "bootstrap_quantile",
}
#: Metric types that have a per-unit form (can be a primary, secondary or guardrail).
PER_UNIT_TYPES = frozenset({"count", "sum", "mean", "proportion", "ratio", "distinct"})
SpendingName = Literal["obf", "pocock", "hsd", "power", "classic_obf", "classic_pocock"]
GuardrailRule = Literal["intersection_union", "bonferroni", "holm", "benjamini_hochberg"]
Level = Literal["low", "medium", "high"]


def default_test(metric_type: str) -> TestName:
    """The test chosen for a metric type when the spec names none (Welch for means)."""
    return DEFAULT_TESTS.get(metric_type, "welch")


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- sections


class Hypothesis(_Model):
    """What the experiment claims, and what would show it wrong."""

    h0: str
    h1: str
    prior: str = ""  #: prior belief, in words (and why)
    prior_probability: float | None = Field(default=None, ge=0, le=1)
    disconfirming: str = ""  #: the evidence that would make us drop H1


class Population(_Model):
    """Who may enter: ``where`` predicates on dimensions (e.g. locale, device) and an
    ``eligibility`` filter (events a unit must send to count as eligible traffic, e.g.
    ``Session Started``; empty = any event)."""

    where: Annotated[list[Predicate], BeforeValidator(lambda v: _where_shorthand(v))] = Field(
        default_factory=list
    )
    eligibility: EventFilter = Field(default_factory=EventFilter)
    description: str = ""


def _where_shorthand(value: Any) -> Any:
    if isinstance(value, dict):
        return [
            {"field": k, "op": "in" if isinstance(v, list) else "eq", "value": v}
            for k, v in value.items()
        ]
    return value


class Arm(_Model):
    """One arm and its allocation weight (relative; normalised over all arms)."""

    name: str = Field(pattern=NAME_PATTERN)
    weight: float = Field(gt=0)
    description: str = ""


class PrimaryMetric(_Model):
    """The one metric that decides: its minimum detectable effect (relative unless
    ``mde_scale: absolute``), the direction that counts as better, and the test."""

    metric: str
    mde: Fraction = Field(gt=0)
    mde_scale: Literal["relative", "absolute"] = "relative"
    direction: Literal["increase", "decrease"] = "increase"
    test: TestName | None = None


class SecondaryMetric(_Model):
    """A metric reported with its interval but not deciding."""

    metric: str
    test: TestName | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"metric": data} if isinstance(data, str) else data


class Guardrail(_Model):
    """A metric that must not get worse than ``threshold`` (a non-inferiority test).

    ``harm`` is the harmful direction; ``threshold`` the worst acceptable effect on
    ``scale`` (e.g. ``harm: decrease, threshold: -2%`` = "at most a 2% relative drop").
    ``cohorts``: also test it within each value of these cohort dimensions (``true``: all
    the spec's cohort dimensions), so a cohort breach vetoes even if the aggregate is fine.

    The aggregate must *show* non-inferiority (the one-sided bound is on the safe side of
    the threshold). Cohorts are often too small for that, so by default
    (``cohort_rule: harm``) a cohort vetoes only on evidence of harm: its one-sided bound on
    the safe side lies beyond the threshold (significantly worse than allowed);
    ``cohort_rule: non_inferiority`` holds cohorts to the aggregate's standard.
    """

    metric: str
    name: str | None = None
    harm: Literal["decrease", "increase"]
    threshold: Fraction
    scale: Literal["relative", "absolute"] = "relative"
    cohorts: bool | list[str] = False
    cohort_rule: Literal["harm", "non_inferiority"] = "harm"
    test: TestName | None = None

    @model_validator(mode="after")
    def _sign(self) -> Guardrail:
        if self.harm == "decrease" and self.threshold > 0:
            raise ValueError(
                f"harm is decrease, so threshold is the worst acceptable drop and must be ≤ 0 "
                f"(got {self.threshold:+g})"
            )
        if self.harm == "increase" and self.threshold < 0:
            raise ValueError(
                f"harm is increase, so threshold is the worst acceptable rise and must be ≥ 0 "
                f"(got {self.threshold:+g})"
            )
        return self

    @property
    def label(self) -> str:
        """The guardrail's name in verdicts (``name``, else the metric)."""
        return self.name or self.metric


class Cuped(_Model):
    """CUPED variance reduction: each metric's own value over the ``pre_period`` before
    a unit's exposure day is its covariate (Deng et al. 2013)."""

    covariate: Literal["same_metric"] = "same_metric"
    pre_period: Duration = timedelta(days=14)

    @field_validator("pre_period")
    @classmethod
    def _whole_days(cls, value: timedelta) -> timedelta:
        if value < timedelta(days=1) or value % timedelta(days=1):
            raise ValueError(f"pre_period must be a whole number of days ≥ 1d, got {value}")
        return value

    @property
    def pre_period_days(self) -> int:
        return self.pre_period // timedelta(days=1)


class Futility(_Model):
    """Non-binding beta-spending futility boundary."""

    beta: float = Field(default=0.2, gt=0, lt=0.5)
    spending: Literal["obf", "pocock", "hsd", "power"] = "obf"


class SequentialPlan(_Model):
    """Group-sequential looks, by calendar date or by information fraction (one of them),
    an alpha-spending function and an optional futility boundary."""

    looks: list[date] | None = None
    information_fractions: list[float] | None = None
    spending: SpendingName = "obf"
    spending_parameter: float | None = None
    futility: Futility | None = None

    @model_validator(mode="after")
    def _one_schedule(self) -> SequentialPlan:
        if (self.looks is None) == (self.information_fractions is None):
            raise ValueError("give exactly one of looks (dates) or information_fractions")
        if self.looks is not None and (not self.looks or self.looks != sorted(set(self.looks))):
            raise ValueError("looks must be distinct dates in increasing order")
        if self.information_fractions is not None:
            t = self.information_fractions
            if not t or any(not 0 < x <= 1 for x in t) or t != sorted(set(t)) or t[-1] != 1:
                raise ValueError(
                    "information_fractions must increase strictly within (0, 1] and end at 1"
                )
        return self

    @property
    def n_looks(self) -> int:
        return len(self.looks or self.information_fractions or ())


class AbortCriterion(_Model):
    """A no-go condition of a rollout stage, evaluated on live data.

    ``metric`` is read in the treatment arm (``compare: value``) or as the treatment's
    change against control (``relative``/``absolute``); the stage aborts when it is
    ``op`` ``threshold`` (e.g. ``turn_latency_p99 > 1500``, ``stage_error_rate > 1%``).
    """

    metric: str
    op: Literal[">", ">=", "<", "<="]
    threshold: Fraction
    compare: Literal["value", "relative", "absolute"] = "value"
    min_events: int = Field(default=100, ge=1)

    def breached(self, observed: float) -> bool:
        """Whether ``observed`` meets the abort condition."""
        return {
            ">": observed > self.threshold,
            ">=": observed >= self.threshold,
            "<": observed < self.threshold,
            "<=": observed <= self.threshold,
        }[self.op]

    def describe(self) -> str:
        what = self.metric if self.compare == "value" else f"{self.compare} change of {self.metric}"
        return f"{what} {self.op} {self.threshold:g}"


class RolloutStage(_Model):
    """One step of a staged rollout: the share of new units enrolled, how long it runs
    at least, and its abort criteria (plus any guardrail breach if ``abort_on_guardrail``)."""

    share: Fraction = Field(gt=0, le=1)
    name: str = ""
    min_duration: Duration = timedelta(0)
    abort: list[AbortCriterion] = Field(default_factory=list)
    abort_on_guardrail: bool = True

    @property
    def label(self) -> str:
        return self.name or f"{self.share:.0%}"


class Rollout(_Model):
    """Stages in increasing share; the last one is the experiment's full allocation."""

    stages: list[RolloutStage] = Field(min_length=1)

    @model_validator(mode="after")
    def _increasing(self) -> Rollout:
        shares = [s.share for s in self.stages]
        if shares != sorted(set(shares)):
            raise ValueError(f"stage shares must increase strictly, got {shares}")
        return self


class Holdout(_Model):
    """A global holdout: ``share`` of all units (by ``salt``) never enter."""

    share: Fraction = Field(ge=0, lt=1)
    salt: str = "global"


class AssignmentConfig(_Model):
    """How units hash into arms (see :mod:`tripwire.experiments.assignment`)."""

    salt: str = ""
    layer: str | None = None
    layer_range: tuple[float, float] = (0.0, 1.0)
    holdout: Holdout | None = None

    @field_validator("layer_range")
    @classmethod
    def _range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= value[0] < value[1] <= 1.0:
            raise ValueError(f"layer_range must satisfy 0 ≤ start < end ≤ 1, got {list(value)}")
        return value


class Owner(_Model):
    """Who answers for the experiment, in which role."""

    name: str
    role: str = ""
    contact: str = ""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


class Risk(_Model):
    """One row of the risk register the readout renders."""

    risk: str
    likelihood: Level
    impact: Level
    owner: str
    mitigation: str
    trigger: str
    contingency: str


# --------------------------------------------------------------------------- the spec


class ExperimentSpec(_Model):
    """One experiment's pre-registration (``experiments/NAME.yaml``).

    The first arm is the control unless ``control`` names another. ``cohorts`` are the
    dimensions effects are stratified by (read from each unit's first exposure).
    """

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    hypothesis: Hypothesis | None = None
    population: Population = Field(default_factory=Population)
    unit: str = "user"
    arms: list[Arm] = Field(min_length=2)
    control: str | None = None
    primary: PrimaryMetric
    secondary: list[SecondaryMetric] = Field(default_factory=list)
    guardrails: list[Guardrail] = Field(default_factory=list)
    cohorts: Annotated[list[str], BeforeValidator(_as_list)] = Field(default_factory=list)
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    power: float = Field(default=0.8, gt=0.5, lt=1)
    sides: Literal[1, 2] = 2
    cuped: Cuped | None = None
    sequential: SequentialPlan | None = None
    guardrail_rule: GuardrailRule = "intersection_union"
    start: datetime | None = None
    end: datetime | None = None
    analysis_window: Duration | None = None
    rollout: Rollout | None = None
    assignment: AssignmentConfig = Field(default_factory=AssignmentConfig)
    owners: list[Owner] = Field(default_factory=list)
    risks: list[Risk] = Field(default_factory=list)
    offline: dict[str, float] = Field(default_factory=dict)  #: offline evidence, e.g. ndcg_delta

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        names = [a.name for a in self.arms]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"arm names must be unique, repeated: {', '.join(duplicates)}")
        if self.control is not None and self.control not in names:
            raise ValueError(f"control {self.control!r} is not an arm ({', '.join(names)})")
        if self.start and self.end and self.end <= self.start:
            raise ValueError("end must be after start")
        labels = [g.label for g in self.guardrails]
        repeated = sorted({n for n in labels if labels.count(n) > 1})
        if repeated:
            raise ValueError(
                f"guardrail names must be unique (set name: on repeats): {', '.join(repeated)}"
            )
        for g in self.guardrails:
            if isinstance(g.cohorts, list):
                unknown = [c for c in g.cohorts if c not in self.cohorts]
                if unknown:
                    raise ValueError(
                        f"guardrail {g.label}: cohorts {unknown} are not among the spec's "
                        f"cohort dimensions {self.cohorts}"
                    )
        looks = self.sequential.looks if self.sequential else None
        if looks and self.start and looks[0] <= self.start.date():
            raise ValueError("sequential looks must come after the start date")
        return self

    # -- derived ---------------------------------------------------------------------------

    @property
    def control_arm(self) -> Arm:
        """The control arm (``control`` or the first arm)."""
        name = self.control or self.arms[0].name
        return next(a for a in self.arms if a.name == name)

    @property
    def treatment_arms(self) -> list[Arm]:
        return [a for a in self.arms if a.name != self.control_arm.name]

    @property
    def arm_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.arms)

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(a.weight for a in self.arms)

    @property
    def salt(self) -> str:
        """The assignment salt (default: the experiment name)."""
        return self.assignment.salt or self.name

    def metric_names(self) -> list[str]:
        """Every metric the spec reads (primary, secondaries, guardrails, abort criteria)."""
        names = [self.primary.metric, *(s.metric for s in self.secondary)]
        names += [g.metric for g in self.guardrails]
        if self.rollout:
            names += [c.metric for s in self.rollout.stages for c in s.abort]
        return list(dict.fromkeys(names))

    def guardrail_cohorts(self, guardrail: Guardrail) -> list[str]:
        """The cohort dimensions a guardrail is also tested within."""
        if guardrail.cohorts is True:
            return list(self.cohorts)
        return list(guardrail.cohorts) if isinstance(guardrail.cohorts, list) else []

    def test_for(self, metric: str, metric_type: str) -> TestName:
        """The test for ``metric``: the one the spec names for it, else the type's default."""
        items: list[PrimaryMetric | SecondaryMetric | Guardrail] = [
            self.primary,
            *self.secondary,
            *self.guardrails,
        ]
        for item in items:
            if item.metric == metric and item.test is not None:
                return item.test
        return default_test(metric_type)

    def canonical(self) -> str:
        """The spec as canonical JSON (sorted keys, no whitespace): what the lock hashes."""
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )


def spec_hash(spec: ExperimentSpec) -> str:
    """SHA-256 (hex) of :meth:`ExperimentSpec.canonical`: comments, key order and
    formatting do not change it; any change of meaning does.

    >>> a = parse_spec({"name": "x", "arms": [{"name": "a", "weight": 1},
    ...     {"name": "b", "weight": 1}], "primary": {"metric": "m", "mde": 0.02}})
    >>> b = parse_spec({"primary": {"mde": "2%", "metric": "m"}, "name": "x",
    ...     "arms": [{"weight": 1, "name": "a"}, {"name": "b", "weight": 1.0}]})
    >>> spec_hash(a) == spec_hash(b)
    True
    """
    return hashlib.sha256(spec.canonical().encode("utf-8")).hexdigest()


def parse_spec(data: dict[str, Any]) -> ExperimentSpec:
    """Validate one spec mapping (raises pydantic's ValidationError)."""
    return ExperimentSpec.model_validate(data)


# --------------------------------------------------------------------------- loading


class ExperimentSpecError(ValueError):
    """All the problems found in one or more experiment specs (file, line, field, why)."""

    def __init__(self, errors: Sequence[DefinitionError]) -> None:
        self.errors = list(errors)
        lines = "\n".join(f"  {e}" for e in self.errors)
        super().__init__(f"{len(self.errors)} error(s) in experiment specs:\n{lines}")


class SpecNotFound(FileNotFoundError):
    """No ``experiments/NAME.yaml`` (or ``.yml``) in the workspace."""


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec, the file it came from and its content hash."""

    spec: ExperimentSpec
    path: Path
    hash: str


_MESSAGES = {
    "missing": "required field is missing",
    "extra_forbidden": "unknown field",
}


def _messages(
    data: dict[str, Any], error: ValidationError
) -> list[tuple[tuple[str | int, ...], str]]:
    out = []
    for problem in error.errors():
        loc = tuple(p for p in problem["loc"] if not (isinstance(p, str) and "[" in p))
        path = error_path_in(data, loc)
        message = _MESSAGES.get(problem["type"], problem["msg"].removeprefix("Value error, "))
        out.append((path, message))
    return out


def _catalog_problems(
    spec: ExperimentSpec, catalog: MetricCatalog
) -> list[tuple[tuple[str | int, ...], str]]:
    """Metric names the catalog does not define, and metrics with no per-unit form where
    one is needed (primary, secondaries, guardrails)."""
    known = ", ".join(sorted(m.name for m in catalog)) or "none defined"
    problems: list[tuple[tuple[str | int, ...], str]] = []

    def check(path: tuple[str | int, ...], name: str, per_unit: bool) -> None:
        if name not in catalog:
            problems.append((path, f"unknown metric {name!r} (catalog: {known})"))
        elif per_unit and catalog[name].type not in PER_UNIT_TYPES:
            problems.append(
                (path, f"metric {name!r} is a {catalog[name].type}: it has no per-unit form")
            )

    check(("primary", "metric"), spec.primary.metric, True)
    for i, s in enumerate(spec.secondary):
        check(("secondary", i, "metric"), s.metric, True)
    for i, g in enumerate(spec.guardrails):
        check(("guardrails", i, "metric"), g.metric, True)
    if spec.rollout:
        for i, stage in enumerate(spec.rollout.stages):
            for j, c in enumerate(stage.abort):
                check(("rollout", "stages", i, "abort", j, "metric"), c.metric, False)
    return problems


def parse_spec_text(
    text: str, file: str, *, catalog: MetricCatalog | None = None, expected_name: str | None = None
) -> tuple[ExperimentSpec | None, list[DefinitionError]]:
    """Parse one spec file's text: the spec (None if invalid) and every problem found."""
    errors: list[DefinitionError] = []

    def add(line: int, path: tuple[str | int, ...], message: str) -> None:
        errors.append(DefinitionError(file, line, dotted(path), message))

    try:
        data, lines = parse_yaml_with_lines(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        add(mark.line + 1 if mark is not None else 1, (), f"YAML syntax error: {problem}")
        return None, errors
    for path, line in lines.duplicates:
        add(line, path, "duplicate key (YAML keeps only the last one)")
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        add(1, (), f"an experiment spec must be a mapping, got {got}")
        return None, errors
    name = data.get("name")
    if expected_name is not None and isinstance(name, str) and name != expected_name:
        add(
            lines.line_of(("name",)),
            ("name",),
            f"name {data['name']!r} does not match the file name {expected_name!r}",
        )
    try:
        spec = parse_spec(data)
    except ValidationError as error:
        for path, message in _messages(data, error):
            add(lines.line_of(path), path, message)
        return None, errors
    if catalog is not None:
        for path, message in _catalog_problems(spec, catalog):
            add(lines.line_of(path), path, message)
    return (None if errors else spec), errors


def spec_files(workspace: Workspace) -> list[Path]:
    """``experiments/*.yaml`` and ``*.yml``, sorted."""
    folder = workspace.experiments_dir
    if not folder.exists():
        return []
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


def spec_path(workspace: Workspace, name: str) -> Path:
    """The file of experiment ``name`` (raises :class:`SpecNotFound`)."""
    for suffix in (".yaml", ".yml"):
        path = workspace.experiments_dir / f"{name}{suffix}"
        if path.exists():
            return path
    known = ", ".join(p.stem for p in spec_files(workspace)) or "none"
    raise SpecNotFound(
        f"no spec {workspace.experiments_dir / (name + '.yaml')} (experiments: {known})"
    )


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def load_spec_file(
    path: Path, *, catalog: MetricCatalog | None = None, root: Path | None = None
) -> LoadedSpec:
    """Load and validate one spec file; raise :class:`ExperimentSpecError` with all errors."""
    file = _relative(path, root) if root else str(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ExperimentSpecError(
            [DefinitionError(file, 1, "", f"cannot read: {error}")]
        ) from error
    spec, errors = parse_spec_text(text, file, catalog=catalog, expected_name=path.stem)
    if errors or spec is None:
        raise ExperimentSpecError(errors)
    return LoadedSpec(spec, path, spec_hash(spec))


def load_spec(
    workspace: Workspace,
    name: str,
    *,
    catalog: MetricCatalog | None = None,
    check_metrics: bool = True,
) -> LoadedSpec:
    """Experiment ``name`` of ``workspace``, with metric names checked against its catalog
    (loaded with :func:`tripwire.metrics.loader.load_metrics` unless given)."""
    path = spec_path(workspace, name)
    if catalog is None and check_metrics:
        catalog = load_metrics(workspace, check_lake=False)
    return load_spec_file(path, catalog=catalog, root=workspace.root)


def load_specs(
    workspace: Workspace, *, catalog: MetricCatalog | None = None, check_metrics: bool = True
) -> dict[str, LoadedSpec]:
    """Every spec of the workspace by name; all errors of all files in one exception."""
    if catalog is None and check_metrics:
        catalog = load_metrics(workspace, check_lake=False)
    specs: dict[str, LoadedSpec] = {}
    errors: list[DefinitionError] = []
    for path in spec_files(workspace):
        try:
            loaded = load_spec_file(path, catalog=catalog, root=workspace.root)
        except ExperimentSpecError as error:
            errors.extend(error.errors)
            continue
        specs[loaded.spec.name] = loaded
    if errors:
        raise ExperimentSpecError(errors)
    return specs


def iter_errors(errors: Iterable[DefinitionError]) -> list[str]:
    """``file:line: field: message`` lines (for printing)."""
    return [str(e) for e in errors]
