"""The world's ground truth: what was planted, exported as ``ground_truth.json``.

Tests, the demo and the benchmarks of monitors, root-cause analysis and experiments compare
what tripwire finds with this file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tripwire.sim.incidents import Change, Incident


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class ChangeTruth:
    """One ``$change`` of the range and its role: cause, rollback, decoy, routine, experiment."""

    at: str
    kind: str
    service: str
    version: str
    scope: dict[str, Any]
    role: str
    incident: str | None
    rollback_of: str | None

    @classmethod
    def of(cls, change: Change) -> ChangeTruth:
        return cls(
            _iso(change.at),
            change.kind,
            change.service,
            change.version,
            change.scope,
            change.role,
            change.incident,
            change.rollback_of,
        )


@dataclass(frozen=True)
class IncidentTruth:
    """One planted incident (see docs/world.md)."""

    id: str
    title: str
    start: str
    end: str
    metric: str
    affected_metrics: tuple[str, ...]
    segments: tuple[dict[str, str], ...]
    funnel_step: str | None
    change: dict[str, Any]
    rollback: dict[str, Any]
    category: str
    effect: dict[str, float]
    traffic_share: float

    @classmethod
    def of(cls, incident: Incident, traffic_share: float) -> IncidentTruth:
        def ref(change: Change) -> dict[str, Any]:
            out = {
                "kind": change.kind,
                "service": change.service,
                "version": change.version,
                "scope": change.scope,
                "at": _iso(change.at),
            }
            if change.rollback_of:
                out["rollback_of"] = change.rollback_of
            return out

        return cls(
            incident.id,
            incident.title,
            _iso(incident.start),
            _iso(incident.end),
            incident.metric,
            incident.affected_metrics,
            incident.segments,
            incident.funnel_step,
            ref(incident.cause),
            ref(incident.rollback),
            incident.category,
            dict(incident.effect),
            round(traffic_share, 4),
        )


@dataclass(frozen=True)
class EffectTruth:
    """True relative effect (treatment / control − 1) of one metric, overall and per cohort."""

    metric: str
    overall: float
    by_cohort: dict[str, dict[str, float]]
    note: str = ""


@dataclass(frozen=True)
class ExperimentTruth:
    name: str
    unit: str
    arms: tuple[str, ...]
    weights: tuple[float, ...]
    start: str
    assignment: str
    hypothesis: str
    effects: tuple[EffectTruth, ...]


@dataclass(frozen=True)
class GroundTruth:
    """Everything planted in one simulated world."""

    seed: int
    start: str
    end: str
    config: dict[str, Any]
    incidents: tuple[IncidentTruth, ...]
    experiments: tuple[ExperimentTruth, ...]
    changes: tuple[ChangeTruth, ...]
    incident_free_days: tuple[str, ...]

    def incident(self, incident_id: str) -> IncidentTruth:
        for incident in self.incidents:
            if incident.id == incident_id:
                return incident
        raise KeyError(
            f"no incident {incident_id!r} in this world (have: {[i.id for i in self.incidents]})"
        )

    def experiment(self, name: str) -> ExperimentTruth:
        for experiment in self.experiments:
            if experiment.name == name:
                return experiment
        raise KeyError(f"no experiment {name!r} in this world")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    def write(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path

    @classmethod
    def from_json(cls, text: str) -> GroundTruth:
        data = json.loads(text)
        return cls(
            seed=data["seed"],
            start=data["start"],
            end=data["end"],
            config=data["config"],
            incidents=tuple(
                IncidentTruth(
                    **{
                        **i,
                        "affected_metrics": tuple(i["affected_metrics"]),
                        "segments": tuple(i["segments"]),
                    }
                )
                for i in data["incidents"]
            ),
            experiments=tuple(
                ExperimentTruth(
                    **{
                        **e,
                        "arms": tuple(e["arms"]),
                        "weights": tuple(e["weights"]),
                        "effects": tuple(EffectTruth(**x) for x in e["effects"]),
                    }
                )
                for e in data["experiments"]
            ),
            changes=tuple(ChangeTruth(**c) for c in data["changes"]),
            incident_free_days=tuple(data["incident_free_days"]),
        )

    @classmethod
    def read(cls, path: Path) -> GroundTruth:
        return cls.from_json(Path(path).read_text())
