"""The world: population, schedule and day-by-day event generation, in time order.

``World(config)`` draws everything that spans the range (users, catalog, experiment arms,
incidents, the change log) up front, then :meth:`World.days` generates one UTC day at a
time from its own seeded stream (``SeedSequence([seed, day])``), so a day's events do not
depend on how many events earlier days drew. Events of sessions that run past midnight are
carried into the next day's output, which keeps the whole stream in time order.

>>> from tripwire.sim import World, WorldConfig
>>> world = World(WorldConfig(seed=1, users=200, days=1))
>>> batches = list(world.batches())
>>> sorted({b.source for b in batches})
['app', 'deploy-bot', 'order-ledger']
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from tripwire.sim import incidents as inc
from tripwire.sim.catalog import build_catalog
from tripwire.sim.config import WorldConfig
from tripwire.sim.experiments import (
    CONTROL,
    CSAT_CONTROL,
    CSAT_TREATMENT,
    PROMPT,
    PROMPT_THUMBS_DOWN_EFFECT,
    PROMPT_TURNS_EFFECT,
    RANKER,
    RANKER_EFFECT_BY_LOCALE,
    TREATMENT,
    ExperimentDesign,
    assign_arms,
    csat_mean,
    designs,
)
from tripwire.sim.funnel import simulate_funnel
from tripwire.sim.messages import (
    DEPLOY,
    LEDGER_LIBRARY,
    SOURCES,
    Block,
    Ordered,
    build_messages,
)
from tripwire.sim.population import (
    ENGLISH_LOCALES,
    LOCALES,
    PAYMENT_METHODS,
    build_population,
)
from tripwire.sim.sessions import SHOPPING_RATE, SHOPPING_RATE_PRIME, draw_sessions
from tripwire.sim.traffic import DAY_MS, draw_session_starts
from tripwire.sim.truth import ChangeTruth, EffectTruth, ExperimentTruth, GroundTruth, IncidentTruth
from tripwire.sim.turns import INTENT_MIX, INTENT_MIX_SHOPPING, INTENTS, SHARDS, simulate_turns

HOUR_MS = 3_600_000
#: Client flush delay (sentAt − timestamp): lognormal, median 2 s.
SEND_DELAY_MEDIAN_MS = 2000.0


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class Batch:
    """Messages of one source from one simulated hour, in time order."""

    source: str
    messages: list[dict[str, Any]]
    hour: datetime

    def __len__(self) -> int:
        return len(self.messages)


class World:
    """A deterministic synthetic product world (see docs/world.md).

    ``sent_at=False`` leaves ``sentAt`` out of the messages: right for a historical
    backfill, where an ingest API would otherwise "correct" every event time to the time of
    the upload (Segment's clock-skew rule ``receivedAt − (sentAt − timestamp)``).
    """

    def __init__(self, config: WorldConfig, *, sent_at: bool = True) -> None:
        self.config = config
        self.sent_at = sent_at
        self.start, self.end = config.window
        self.tag = config.tag
        seeds = np.random.SeedSequence([config.seed, 0]).spawn(3)
        self.population = build_population(
            np.random.default_rng(seeds[0]), config.users, self.start
        )
        self.catalog = build_catalog(np.random.default_rng(seeds[1]))
        plan_rng = np.random.default_rng(seeds[2])
        self.designs: tuple[ExperimentDesign, ...] = (
            tuple(d for d in designs(self.start, config.days) if d.start < self.end)
            if config.experiments
            else ()
        )
        self.treated = {d.name: assign_arms(d, self.population.user_ids) == 1 for d in self.designs}
        days = config.incident_days or inc.incident_days(config.days)
        self.incidents = (
            inc.plan_incidents(plan_rng, self.start, self.end, days) if config.incidents else []
        )
        self.changes = inc.plan_changes(
            plan_rng, self.start, self.end, self.incidents, self.designs
        )
        self.ledger_contexts = [{"locale": name, "library": LEDGER_LIBRARY} for name in LOCALES]

    # -- generation ----------------------------------------------------------------------

    def days(self) -> Iterator[tuple[datetime, Ordered]]:
        """(UTC day, its messages in time order) for every day of the range."""
        start_ms, end_ms = _ms(self.start), _ms(self.end)
        first_day = (start_ms // DAY_MS) * DAY_MS
        identified = np.zeros(self.config.users, dtype=bool)
        exposed = {d.name: np.zeros(self.config.users, dtype=bool) for d in self.designs}
        carry = Ordered.empty()
        day_ms = first_day
        index = 0
        while day_ms < end_ms:
            # Millions of small dicts trigger the cyclic GC over and over although they hold
            # no cycles; pausing it while a day is built halves the run time.
            was_enabled = gc.isenabled()
            gc.disable()
            try:
                today = self._day(index, day_ms, (start_ms, end_ms), identified, exposed)
            finally:
                if was_enabled:
                    gc.enable()
            merged = carry.merge(today) if len(carry) else today
            emit, carry = merged.split(min(day_ms + DAY_MS, end_ms))
            yield datetime.fromtimestamp(day_ms / 1000, UTC), emit
            day_ms += DAY_MS
            index += 1

    def batches(self, max_size: int = 5000) -> Iterator[Batch]:
        """Batches of at most ``max_size`` messages per source and simulated hour, in time order."""
        if max_size < 1:
            raise ValueError(f"max_size must be ≥ 1, got {max_size}")
        for _, ordered in self.days():
            yield from self.batches_of(ordered, max_size)

    @staticmethod
    def batches_of(
        ordered: Ordered, max_size: int = 5000, *, by_hour: bool = True
    ) -> Iterator[Batch]:
        """Split one day's ordered messages into per-source batches (per hour by default)."""
        if not len(ordered):
            return
        hours = ordered.ts // HOUR_MS
        bounds = np.flatnonzero(np.diff(hours)) + 1 if by_hour else np.empty(0, dtype=np.int64)
        for lo, hi in zip(
            np.r_[0, bounds].tolist(), np.r_[bounds, len(ordered)].tolist(), strict=True
        ):
            hour = datetime.fromtimestamp(int(hours[lo]) * HOUR_MS / 1000, UTC)
            codes = ordered.source[lo:hi]
            for code, source in enumerate(SOURCES):
                picks = np.flatnonzero(codes == code) + lo
                for at in range(0, picks.size, max_size):
                    chunk = picks[at : at + max_size].tolist()
                    yield Batch(source, [ordered.messages[i] for i in chunk], hour)

    def messages(self) -> Iterator[dict[str, Any]]:
        """Every message of the range in time order (all sources interleaved)."""
        for _, ordered in self.days():
            yield from ordered.messages

    def _day(
        self,
        index: int,
        day_ms: int,
        window: tuple[int, int],
        identified: np.ndarray,
        exposed: dict[str, np.ndarray],
    ) -> Ordered:
        rng = np.random.default_rng(np.random.SeedSequence([self.config.seed, 1, index]))
        pop = self.population
        starts = draw_session_starts(
            rng, pop, self.config.sessions_per_user_day, day_ms, window, index
        )
        design = {d.name: d for d in self.designs}
        no_one = np.zeros(pop.size, dtype=bool)
        sessions = draw_sessions(
            rng,
            starts,
            pop,
            ranker_treated_user=self.treated.get(RANKER, no_one),
            ranker_start_ms=_ms(design[RANKER].start) if RANKER in design else None,
            prompt_treated_user=self.treated.get(PROMPT, no_one),
            prompt_start_ms=_ms(design[PROMPT].start) if PROMPT in design else None,
            id_prefix=f"s-{self.tag}-{index:03d}-",
        )
        turns = simulate_turns(
            rng, sessions, pop, self.catalog, self.incidents, self.config.turn_latency_sampling
        )
        begin = turns.end_ms + np.rint(
            np.exp(rng.normal(np.log(3000.0), 0.5, sessions.size))
        ).astype(np.int64)
        funnel = simulate_funnel(
            rng, sessions, begin, pop, self.catalog, self.incidents, f"o-{self.tag}-{index:03d}-"
        )
        ended = np.maximum(turns.end_ms, funnel.end_ms) + np.rint(
            np.exp(rng.normal(np.log(2000.0), 0.5, sessions.size))
        ).astype(np.int64)

        sid = np.array(sessions.ids, dtype=object)
        blocks: list[Block] = [
            Block(
                "Session Started",
                sessions.start_ms,
                sessions.user,
                {
                    "session_id": sid,
                    "channel": np.array(sessions.channel, dtype=object),
                    "entry": np.array(sessions.entry, dtype=object),
                },
                rank=1,
            ),
        ]
        csat_control = 1 + rng.choice(5, size=sessions.size, p=CSAT_CONTROL / CSAT_CONTROL.sum())
        csat_treated = 1 + rng.choice(
            5, size=sessions.size, p=CSAT_TREATMENT / CSAT_TREATMENT.sum()
        )
        csat = np.where(sessions.prompt_treated, csat_treated, csat_control)
        s = sessions.surveyed
        blocks.append(
            Block(
                "Session Ended",
                ended[~s],
                sessions.user[~s],
                {"session_id": sid[~s], "turns": sessions.turns[~s]},
                rank=9,
            )
        )
        blocks.append(
            Block(
                "Session Ended",
                ended[s],
                sessions.user[s],
                {"session_id": sid[s], "turns": sessions.turns[s], "csat": csat[s]},
                rank=9,
            )
        )
        blocks.extend(turns.blocks)
        blocks.extend(funnel.blocks)
        blocks.extend(self._exposures(sessions.user, sessions.start_ms, exposed))
        blocks.extend(self._identifies(sessions.user, sessions.start_ms, identified))
        blocks.extend(self._changes(day_ms))
        total = sum(len(b) for b in blocks)
        delay = np.rint(np.exp(rng.normal(np.log(SEND_DELAY_MEDIAN_MS), 0.8, total))).astype(
            np.int64
        )
        ordered = build_messages(
            blocks,
            user_ids=pop.user_ids,
            anonymous_ids=pop.anonymous_ids,
            contexts=pop.contexts,
            ledger_contexts=self.ledger_contexts,
            ledger_context_of=pop.locale,
            id_prefix=f"{self.tag}-{index:03d}-",
            sent_delay_ms=delay if self.sent_at else None,
        )
        inside = ordered.ts < window[1]
        if not inside.all():
            keep = np.flatnonzero(inside)
            ordered = Ordered(
                [ordered.messages[i] for i in keep.tolist()],
                ordered.ts[keep],
                ordered.rank[keep],
                ordered.source[keep],
            )
        return ordered

    def _exposures(
        self, user: np.ndarray, start_ms: np.ndarray, exposed: dict[str, np.ndarray]
    ) -> list[Block]:
        blocks = []
        for design in self.designs:
            seen = exposed[design.name]
            candidates = np.flatnonzero((start_ms >= _ms(design.start)) & ~seen[user])
            users, first = np.unique(user[candidates], return_index=True)
            rows = candidates[first]
            seen[users] = True
            variant = np.where(self.treated[design.name][users], TREATMENT, CONTROL).astype(object)
            blocks.append(
                Block(
                    "$exposure",
                    start_ms[rows] - 1,
                    users,
                    {
                        "experiment": design.name,
                        "variant": variant,
                        "unit_id": np.array(self.population.user_ids, dtype=object)[users],
                    },
                    rank=0,
                )
            )
        return blocks

    def _identifies(
        self, user: np.ndarray, start_ms: np.ndarray, identified: np.ndarray
    ) -> list[Block]:
        candidates = np.flatnonzero(~identified[user])
        users, first = np.unique(user[candidates], return_index=True)
        rows = candidates[first]
        identified[users] = True
        traits = [self.population.traits(u) for u in users.tolist()]
        return [
            Block("$identify", start_ms[rows] - 2, users, rank=0, type="identify", traits=traits)
        ]

    def _changes(self, day_ms: int) -> list[Block]:
        today = [c for c in self.changes if day_ms <= _ms(c.at) < day_ms + DAY_MS]
        blocks = []
        for plain in (True, False):
            group = [c for c in today if (c.rollback_of is None) == plain]
            if not group:
                continue
            props: dict[str, Any] = {
                key: [c.properties()[key] for c in group]
                for key in ("kind", "service", "version", "scope", "author", "description")
            }
            if not plain:
                props["rollback_of"] = [c.rollback_of for c in group]
            ts = np.array([_ms(c.at) for c in group], dtype=np.int64)
            blocks.append(
                Block(
                    "$change",
                    ts,
                    np.zeros(len(group), dtype=np.int64),
                    props,
                    rank=0,
                    source=DEPLOY,
                )
            )
        return blocks

    # -- ground truth --------------------------------------------------------------------

    def ground_truth(self) -> GroundTruth:
        """What this world planted (incidents, experiment effects, changes)."""
        incident_days = set()
        for incident in self.incidents:
            day = incident.start.date()
            while day <= incident.end.date():
                incident_days.add(day)
                day += timedelta(days=1)
        free = []
        day_cursor = self.start.date()
        while datetime(day_cursor.year, day_cursor.month, day_cursor.day, tzinfo=UTC) < self.end:
            if day_cursor not in incident_days:
                free.append(day_cursor.isoformat())
            day_cursor += timedelta(days=1)
        return GroundTruth(
            seed=self.config.seed,
            start=self.start.isoformat().replace("+00:00", "Z"),
            end=self.end.isoformat().replace("+00:00", "Z"),
            config=self.config.to_json(),
            incidents=tuple(IncidentTruth.of(i, self._traffic_share(i)) for i in self.incidents),
            experiments=tuple(self._experiment_truth(d) for d in self.designs),
            changes=tuple(ChangeTruth.of(c) for c in self.changes),
            incident_free_days=tuple(free),
        )

    def _shopping_rate(self) -> np.ndarray:
        return np.where(self.population.prime, SHOPPING_RATE_PRIME, SHOPPING_RATE)

    def _traffic_share(self, incident: inc.Incident) -> float:
        """Expected share of the traffic unit (sessions; turns for retrieval) in the segment."""
        pop = self.population
        weight = pop.activity
        if incident.id == inc.PAYMENTS:
            member = pop.payment == PAYMENT_METHODS.index(inc.PAYMENT_SEGMENT["payment_method"])
        elif incident.id == inc.TELEMETRY:  # every client
            return 1.0
        else:
            search = INTENTS.index("product_search")
            shop = self._shopping_rate()
            p_search = shop * INTENT_MIX_SHOPPING[search] + (1 - shop) * INTENT_MIX[search]
            return float((weight * p_search).sum() / weight.sum() / len(SHARDS))
        return float(weight[member].sum() / weight.sum())

    def _experiment_truth(self, design: ExperimentDesign) -> ExperimentTruth:
        pop = self.population
        locales = {name: float(RANKER_EFFECT_BY_LOCALE[name]) for name in LOCALES}
        if design.name == RANKER:
            search, recs = INTENTS.index("product_search"), INTENTS.index("recommendations")
            shop = self._shopping_rate()
            eligible = shop * (INTENT_MIX_SHOPPING[search] + INTENT_MIX_SHOPPING[recs]) + (
                1 - shop
            ) * (INTENT_MIX[search] + INTENT_MIX[recs])
            volume = pop.activity * eligible
            by_locale = np.array([volume[pop.locale == i].sum() for i in range(len(LOCALES))])
            effects = np.array([locales[name] for name in LOCALES])
            overall = float((by_locale * effects).sum() / by_locale.sum())
            others = [i for i, n in enumerate(LOCALES) if n not in ENGLISH_LOCALES and n != "ja-JP"]
            language = {
                "english": float(RANKER_EFFECT_BY_LOCALE["en-US"]),
                "ja-JP": float(RANKER_EFFECT_BY_LOCALE["ja-JP"]),
                "other": float(RANKER_EFFECT_BY_LOCALE[LOCALES[others[0]]]),
            }
            metric_effects: tuple[EffectTruth, ...] = (
                EffectTruth(
                    "add_to_cart_per_user",
                    round(overall, 5),
                    {"locale": locales, "language": language},
                    "Product Added events per exposed user; overall is the volume-weighted mean of the "
                    "locale effects (positive), ja-JP is the cohort whose sign flips",
                ),
            )
        else:
            csat_effect = csat_mean(CSAT_TREATMENT) / csat_mean(CSAT_CONTROL) - 1
            flat = {name: PROMPT_TURNS_EFFECT for name in LOCALES}
            metric_effects = (
                EffectTruth(
                    "turns_per_session",
                    PROMPT_TURNS_EFFECT,
                    {"locale": flat},
                    "Turn Completed events per session (engagement up)",
                ),
                EffectTruth(
                    "thumbs_down_rate",
                    PROMPT_THUMBS_DOWN_EFFECT,
                    {"locale": {name: PROMPT_THUMBS_DOWN_EFFECT for name in LOCALES}},
                    "thumbs=down among rated turns (quality down)",
                ),
                EffectTruth(
                    "csat",
                    round(csat_effect, 5),
                    {"locale": {name: round(csat_effect, 5) for name in LOCALES}},
                    "mean csat of surveyed sessions (CSAT down)",
                ),
                EffectTruth(
                    "add_to_cart_per_user",
                    PROMPT_TURNS_EFFECT,
                    {"locale": flat},
                    "more turns show more recommendations, so add-to-cart rises with turns",
                ),
            )
        return ExperimentTruth(
            name=design.name,
            unit=design.unit,
            arms=design.arms,
            weights=design.weights,
            start=design.start.isoformat().replace("+00:00", "Z"),
            assignment='SHA-256 of "<experiment>:<user id>", low 32 bits through cumulative weights '
            "(tripwire.experiments.assignment)",
            hypothesis=design.hypothesis,
            effects=metric_effects,
        )
