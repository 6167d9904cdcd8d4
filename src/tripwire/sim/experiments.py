"""The world's two running experiments, their arms and their true effects.

Arms are assigned the way :mod:`tripwire.experiments.assignment` publishes it (key
``"<experiment>:<user id>"``, low 32 bits of SHA-256 mapped through the cumulative weights),
so tripwire's own assignment reproduces the world's split. A user is exposed at the first
session that starts at or after the experiment's start; effects apply to those sessions.

True effects are multiplicative on the quantity that generates the metric, so they hold
exactly in expectation:

- ``ranker_v2`` multiplies the per-turn add-to-cart (and click) probability by
  ``1 + effect[locale]``: +8% in English locales, +3% in de/fr/es, −30% in ja-JP. The
  ja-JP regression is large enough for its cohort guardrail to be breached at the demo's
  size (10,000 users: ≈ 600 exposed ja-JP users, standard error of the cohort's relative
  effect ≈ 9%), while the volume-weighted aggregate stays positive (≈ +4%).
- ``prompt_v3`` multiplies expected turns per session by 1.06 and the thumbs-down
  probability of a rated turn by 1.30, and shifts CSAT answers down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from tripwire.experiments.assignment import unit_hashes
from tripwire.sim.population import ENGLISH_LOCALES, LOCALES

RANKER = "ranker_v2"
PROMPT = "prompt_v3"
CONTROL, TREATMENT = "control", "treatment"

#: Relative effect of ranker_v2 on add-to-cart per user, by locale.
RANKER_EFFECT_BY_LOCALE: dict[str, float] = {
    name: (0.08 if name in ENGLISH_LOCALES else -0.30 if name == "ja-JP" else 0.03)
    for name in LOCALES
}
PROMPT_TURNS_EFFECT = 0.06
PROMPT_THUMBS_DOWN_EFFECT = 0.30
#: CSAT answer distribution (1..5) of surveyed sessions, by arm of prompt_v3.
CSAT_CONTROL = np.array([0.04, 0.06, 0.14, 0.34, 0.42])
CSAT_TREATMENT = np.array([0.06, 0.09, 0.17, 0.34, 0.34])


@dataclass(frozen=True)
class ExperimentDesign:
    """One experiment: name, arms with weights, and when it starts."""

    name: str
    arms: tuple[str, ...]
    weights: tuple[float, ...]
    start: datetime
    hypothesis: str
    unit: str = "user"
    layer: str = field(default="")


def arm_positions(experiment: str, user_ids: list[str]) -> np.ndarray:
    """Low-32-bit SHA-256 position in [0, 1) of ``"<experiment>:<user id>"`` per user."""
    h = unit_hashes(f"{experiment}:", user_ids)
    return (h & np.uint64(0xFFFFFFFF)).astype(np.float64) / float(2**32)


def assign_arms(design: ExperimentDesign, user_ids: list[str]) -> np.ndarray:
    """Arm index of every user (0 = first arm)."""
    cumulative = np.cumsum(design.weights) / np.sum(design.weights)
    return np.searchsorted(cumulative, arm_positions(design.name, user_ids), side="right")


def designs(start: datetime, days: int) -> tuple[ExperimentDesign, ExperimentDesign]:
    """The two experiments, starting a few days into the range (pre-period for CUPED)."""
    ranker_day = max(0, min(3, days // 4))
    prompt_day = max(0, min(4, days // 3))
    return (
        ExperimentDesign(
            name=RANKER,
            arms=(CONTROL, TREATMENT),
            weights=(0.5, 0.5),
            start=start + timedelta(days=ranker_day, hours=10),
            hypothesis="The v2 ranker raises add-to-cart per user.",
        ),
        ExperimentDesign(
            name=PROMPT,
            arms=(CONTROL, TREATMENT),
            weights=(0.5, 0.5),
            start=start + timedelta(days=prompt_day, hours=9),
            hypothesis="The v3 assistant prompt raises engagement (turns per session).",
        ),
    )


def csat_mean(distribution: np.ndarray) -> float:
    """Expected CSAT score (1–5) of an answer distribution."""
    return float(np.dot(np.arange(1, 6), distribution / distribution.sum()))
