"""Sessions: who, when, on which channel, whether they shop, and their experiment arms.

One session is one visit to the assistant: ``Session Started``, one or more chatbot turns,
optionally one shopping attempt through the voice/chat checkout funnel, ``Session Ended``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tripwire.sim.experiments import PROMPT_TURNS_EFFECT
from tripwire.sim.population import DEVICES, Population
from tripwire.sim.traffic import SessionStarts

CHANNELS = ("voice", "chat")
#: P(voice) by device (index into DEVICES).
VOICE_SHARE = {"Echo Dot": 1.0, "Echo Show": 0.85, "Fire TV": 1.0, "mobile app": 0.4, "web": 0.0}
VOICE_ENTRIES = ("wake_word", "notification", "routine")
VOICE_ENTRY_SHARES = (0.8, 0.1, 0.1)
CHAT_ENTRIES = ("app_home", "search_bar", "notification", "deep_link")
CHAT_ENTRY_SHARES = (0.5, 0.3, 0.1, 0.1)
SHOPPING_RATE = 0.42
SHOPPING_RATE_PRIME = 0.5
#: Turns per session are 1 + Poisson(EXTRA_TURNS): mean 3 without prompt_v3.
EXTRA_TURNS = 2.0
SURVEY_RATE = 0.25


@dataclass(frozen=True)
class Sessions:
    """The sessions of one day as parallel arrays, sorted by start time."""

    ids: list[str]
    user: np.ndarray
    start_ms: np.ndarray
    voice: np.ndarray  # bool: channel is voice
    entry: list[str]
    shopping: np.ndarray  # bool
    turns: np.ndarray  # int ≥ 1
    surveyed: np.ndarray  # bool
    ranker_treated: np.ndarray  # bool: ranker_v2 treatment and started after its start
    prompt_treated: np.ndarray  # bool

    @property
    def size(self) -> int:
        return int(self.user.size)

    @property
    def channel(self) -> list[str]:
        return np.where(self.voice, "voice", "chat").tolist()


def draw_sessions(
    rng: np.random.Generator,
    starts: SessionStarts,
    population: Population,
    *,
    ranker_treated_user: np.ndarray,
    ranker_start_ms: int | None,
    prompt_treated_user: np.ndarray,
    prompt_start_ms: int | None,
    id_prefix: str,
) -> Sessions:
    """Draw every attribute of the day's sessions."""
    n = starts.user.size
    user = starts.user
    voice_share = np.array([VOICE_SHARE[d] for d in DEVICES])[population.device[user]]
    voice = rng.random(n) < voice_share
    voice_entry = np.array(VOICE_ENTRIES, dtype=object)[
        rng.choice(len(VOICE_ENTRIES), size=n, p=VOICE_ENTRY_SHARES)
    ]
    chat_entry = np.array(CHAT_ENTRIES, dtype=object)[
        rng.choice(len(CHAT_ENTRIES), size=n, p=CHAT_ENTRY_SHARES)
    ]
    entry = np.where(voice, voice_entry, chat_entry).tolist()
    shopping_rate = np.where(population.prime[user], SHOPPING_RATE_PRIME, SHOPPING_RATE)
    shopping = rng.random(n) < shopping_rate

    def treated(flags: np.ndarray, start_ms: int | None) -> np.ndarray:
        if start_ms is None:
            return np.zeros(n, dtype=bool)
        return flags[user] & (starts.start_ms >= start_ms)

    ranker = treated(ranker_treated_user, ranker_start_ms)
    prompt = treated(prompt_treated_user, prompt_start_ms)
    # E[turns] = 1 + EXTRA_TURNS, times (1 + effect) under prompt_v3 treatment.
    extra = np.where(prompt, (1 + PROMPT_TURNS_EFFECT) * (1 + EXTRA_TURNS) - 1, EXTRA_TURNS)
    turns = 1 + rng.poisson(extra)
    surveyed = rng.random(n) < SURVEY_RATE
    return Sessions(
        ids=[f"{id_prefix}{i:06x}" for i in range(n)],
        user=user,
        start_ms=starts.start_ms,
        voice=voice,
        entry=entry,
        shopping=shopping,
        turns=turns,
        surveyed=surveyed,
        ranker_treated=ranker,
        prompt_treated=prompt,
    )
