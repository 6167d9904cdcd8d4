"""The world as a whole: determinism, time order, the vocabulary of docs/world.md."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest

from tripwire.events.envelope import validate_batch
from tripwire.sim import World, WorldConfig
from tripwire.sim import incidents as inc
from tripwire.sim.experiments import assign_arms
from tripwire.sim.funnel import STAGES, STEP_EVENTS
from tripwire.sim.population import DEVICES, LOCALES, PAYMENT_METHODS, TENURES
from tripwire.sim.turns import INTENTS

STR, NUM, BOOL, DICT = str, (int, float), bool, dict

#: docs/world.md: event → required properties and their types.
VOCABULARY: dict[str, dict[str, Any]] = {
    "Voice Utterance": {"session_id": STR, "latency_ms": NUM, "channel": STR},
    "ASR Completed": {"session_id": STR, "latency_ms": NUM},
    "NLU Completed": {"session_id": STR, "latency_ms": NUM, "intent": STR},
    "Catalog Matched": {"session_id": STR, "latency_ms": NUM, "product_id": STR, "category": STR},
    "Cart Updated": {"session_id": STR, "latency_ms": NUM, "product_id": STR, "price": NUM},
    "Auth Completed": {"session_id": STR, "latency_ms": NUM},
    "Payment Authorized": {
        "session_id": STR,
        "latency_ms": NUM,
        "payment_method": STR,
        "payment_service_version": STR,
    },
    "Shipping Selected": {"session_id": STR, "latency_ms": NUM, "shipping_speed": STR},
    "Order Confirmed": {"session_id": STR, "latency_ms": NUM},
    "Order Completed": {
        "session_id": STR,
        "latency_ms": NUM,
        "order_id": STR,
        "revenue": NUM,
        "currency": STR,
        "payment_method": STR,
    },
    "Checkout Error": {"session_id": STR, "stage": STR, "error_code": STR},
    "$latency": {"pipeline": STR, "stage": STR, "ms": NUM, "outcome": STR},
    "Ledger Order Recorded": {"order_id": STR, "revenue": NUM},
    "Session Started": {"session_id": STR, "channel": STR, "entry": STR},
    "Turn Completed": {
        "session_id": STR,
        "turn_index": NUM,
        "intent": STR,
        "resolved": BOOL,
        "escalated": BOOL,
        "fallback": BOOL,
        "cache_hit": BOOL,
        "latency_ms": NUM,
        "service": STR,
    },
    "Recommendation Shown": {"session_id": STR, "slot": NUM, "product_id": STR, "ranker": STR},
    "Recommendation Clicked": {"session_id": STR, "slot": NUM, "product_id": STR, "ranker": STR},
    "Product Added": {
        "session_id": STR,
        "product_id": STR,
        "price": NUM,
        "from_recommendation": BOOL,
    },
    "Session Ended": {"session_id": STR, "turns": NUM},
    "$exposure": {"experiment": STR, "variant": STR, "unit_id": STR},
    "$change": {
        "kind": STR,
        "service": STR,
        "version": STR,
        "scope": DICT,
        "author": STR,
        "description": STR,
    },
}


def _dump(messages: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(m, option=orjson.OPT_SORT_KEYS) for m in messages)


def test_same_seed_and_config_give_byte_identical_events() -> None:
    config = WorldConfig(seed=3, users=300, days=2)
    first = _dump(list(World(config).messages()))
    second = _dump(list(World(config).messages()))
    assert first == second
    assert len(first) > 100_000
    other = _dump(list(World(WorldConfig(seed=4, users=300, days=2)).messages()))
    assert other != first


def test_ground_truth_is_deterministic_and_round_trips() -> None:
    from tripwire.sim import GroundTruth

    config = WorldConfig(seed=5, users=500, days=14)
    text = World(config).ground_truth().to_json()
    assert text == World(config).ground_truth().to_json()
    assert GroundTruth.from_json(text).to_json() == text


def test_batches_are_per_source_in_time_order_and_cover_every_message() -> None:
    world = World(WorldConfig(seed=3, users=400, days=3))
    messages = list(world.messages())
    seen = 0
    last: dict[str, str] = {}
    for batch in world.batches(max_size=700):
        assert 0 < len(batch) <= 700
        for message in batch.messages:
            assert message["timestamp"] >= last.get(batch.source, "")
            last[batch.source] = message["timestamp"]
        seen += len(batch)
    assert seen == len(messages)
    stamps = [m["timestamp"] for m in messages]
    assert stamps == sorted(stamps)
    start, end = world.start, world.end
    assert start.isoformat()[:19] <= stamps[0][:19] and stamps[-1][:19] < end.isoformat()[:19]
    with pytest.raises(ValueError, match="max_size"):
        next(world.batches(max_size=0))


def test_message_ids_are_unique(small_messages) -> None:
    ids = [m["messageId"] for m in small_messages]
    assert len(set(ids)) == len(ids)


def test_every_documented_event_is_present_with_typed_properties(by_event) -> None:
    for event, required in VOCABULARY.items():
        assert by_event.get(event), f"no {event} events"
        for message in by_event[event]:
            props = message["properties"]
            for key, kind in required.items():
                assert key in props, f"{event} without {key}"
                assert isinstance(props[key], kind), f"{event}.{key} = {props[key]!r}"
                if kind is NUM:
                    assert not isinstance(props[key], bool)


def test_enumerated_values_are_the_documented_ones(by_event) -> None:
    turns = by_event["Turn Completed"]
    assert {t["properties"]["intent"] for t in turns} == set(INTENTS)
    thumbs = Counter(t["properties"].get("thumbs") for t in turns)
    assert set(thumbs) == {None, "up", "down"}
    assert {m["properties"]["outcome"] for m in by_event["$latency"]} == {
        "ok",
        "error",
        "timeout",
    } or {m["properties"]["outcome"] for m in by_event["$latency"]} == {"ok", "error"}
    pipelines = defaultdict(set)
    for m in by_event["$latency"]:
        pipelines[m["properties"]["pipeline"]].add(m["properties"]["stage"])
    assert pipelines["voice_checkout"] == set(STAGES)
    assert pipelines["turn"] == {"asr", "nlu", "retrieval", "generation", "tts"}
    assert {m["properties"]["kind"] for m in by_event["$change"]} <= {
        "deploy",
        "flag",
        "model",
        "config",
        "prompt",
        "ui",
    }
    csat = [m["properties"]["csat"] for m in by_event["Session Ended"] if "csat" in m["properties"]]
    assert csat and set(csat) <= {1, 2, 3, 4, 5}
    assert {m["properties"]["channel"] for m in by_event["Session Started"]} == {"voice", "chat"}


def test_app_events_carry_the_documented_context(by_event) -> None:
    for message in by_event["Session Started"][:2000]:
        ctx = message["context"]
        assert ctx["locale"] in LOCALES
        assert ctx["device"]["model"] in DEVICES
        assert ctx["app"]["version"]
        assert ctx["os"]["name"] in {"Fire OS", "iOS", "Android", "Web"}
        assert ctx["traits"]["tenure"] in TENURES
        assert isinstance(ctx["traits"]["prime"], bool)
        assert ctx["traits"]["payment_method"] in PAYMENT_METHODS
        assert message["userId"] and message["anonymousId"]


def test_identify_once_per_user_before_their_first_event(small_messages, by_event) -> None:
    identifies = by_event["$identify"]
    users = [m["userId"] for m in identifies]
    assert len(users) == len(set(users))
    first_seen: dict[str, str] = {}
    for message in small_messages:
        if message["type"] in ("track", "identify") and message.get("context", {}).get("app"):
            first_seen.setdefault(message["userId"], message["type"])
    assert set(first_seen.values()) == {"identify"}
    traits = identifies[0]["traits"]
    assert set(traits) == {"locale", "device", "tenure", "prime", "payment_method", "signup_date"}


def test_funnel_order_is_respected_within_each_session(by_event) -> None:
    position = {event: i for i, event in enumerate(STEP_EVENTS)}
    steps: dict[str, list[tuple[str, int]]] = defaultdict(list)
    errors: dict[str, list[str]] = defaultdict(list)
    for event in STEP_EVENTS:
        for message in by_event[event]:
            steps[message["properties"]["session_id"]].append(
                (message["timestamp"], position[event])
            )
    for message in by_event["Checkout Error"]:
        errors[message["properties"]["session_id"]].append(message["properties"]["stage"])
    assert len(steps) > 1000
    for session, rows in steps.items():
        rows.sort()
        indexes = [i for _, i in rows]
        # in time order, the steps are a prefix of the funnel (a session stops at a failure)
        assert indexes == list(range(len(indexes))), session
        assert len({t for t, _ in rows}) == len(rows), session
        assert len(errors.get(session, [])) <= 1, session
        for stage in errors.get(session, []):
            assert STAGES.index(stage) == len(indexes), session


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_ledger_orders_equal_real_orders_outside_the_telemetry_outage(
    small_world: World, by_event
) -> None:
    outage = small_world.ground_truth().incident("telemetry-outage")
    telemetry = {m["properties"]["order_id"] for m in by_event["Order Completed"]}
    ledger = {m["properties"]["order_id"]: m for m in by_event["Ledger Order Recorded"]}
    assert telemetry <= ledger.keys()
    missing = ledger.keys() - telemetry
    assert missing, "the outage dropped no order events"
    devices = {m["userId"]: m["context"]["device"]["model"] for m in by_event["Session Started"]}
    for order_id in missing:
        moment = _at(ledger[order_id]["timestamp"])
        assert _at(outage.start) <= moment <= _at(outage.end) + timedelta(minutes=5), order_id
    # every client loses ~TELEMETRY_DROP_RATE of its orders' telemetry during the outage
    during = [
        o
        for o, m in ledger.items()
        if _at(outage.start) + timedelta(minutes=1) <= _at(m["timestamp"]) < _at(outage.end)
    ]
    lost = sum(o in missing for o in during) / len(during)
    assert abs(lost - inc.TELEMETRY_DROP_RATE) < 3 * (0.25 / len(during)) ** 0.5 + 0.02, lost
    assert len({devices[ledger[o]["userId"]] for o in missing}) >= 3
    outside = [
        o
        for o, m in ledger.items()
        if not _at(outage.start) <= _at(m["timestamp"]) <= _at(outage.end) + timedelta(minutes=5)
    ]
    assert len(outside) > 0.9 * len(ledger)
    assert set(outside) <= telemetry


def test_exposures_once_per_user_after_start_with_hashed_arm(small_world: World, by_event) -> None:
    exposures = by_event["$exposure"]
    per: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in exposures:
        per[m["properties"]["experiment"]].append(m)
    assert set(per) == {"ranker_v2", "prompt_v3"}
    for design in small_world.designs:
        rows = per[design.name]
        users = [m["userId"] for m in rows]
        assert len(users) == len(set(users))
        starts = design.start.isoformat()[:19]
        assert all(m["timestamp"][:19] >= starts[:19] for m in rows)
        arms = assign_arms(design, users)
        assert [design.arms[a] for a in arms] == [m["properties"]["variant"] for m in rows]
        share = sum(m["properties"]["variant"] == "treatment" for m in rows) / len(rows)
        assert 0.44 < share < 0.56


def test_simulated_messages_pass_the_capture_validation(small_messages) -> None:
    sample = small_messages[::50]
    accepted, rejected = validate_batch(
        sample, received_at=datetime.fromisoformat("2026-12-01T00:00:00+00:00"), source="app"
    )
    assert rejected == []
    assert len(accepted) == len(sample)


def test_bad_configs_are_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="users"):
        WorldConfig(users=0)
    with pytest.raises(ValueError, match="incident day 20"):
        WorldConfig(days=14, incident_days=(3, 5, 20))
    with pytest.raises(ValueError, match="timezone-aware"):
        WorldConfig(start=datetime(2026, 1, 1))


def test_turn_latency_sampling_thins_only_turn_latency_events() -> None:
    full = list(World(WorldConfig(seed=3, users=300, days=1)).messages())
    thin = list(World(WorldConfig(seed=3, users=300, days=1, turn_latency_sampling=0.2)).messages())

    def is_turn_latency(m: dict[str, Any]) -> bool:
        return m.get("event") == "$latency" and m["properties"]["pipeline"] == "turn"

    kept = sum(map(is_turn_latency, thin)) / sum(map(is_turn_latency, full))
    assert 0.15 < kept < 0.25

    def key(m: dict[str, Any]) -> tuple[Any, ...]:
        # ids embed the config's hash, which differs; everything else is identical
        props = m.get("properties") or {}
        props = {k: v for k, v in props.items() if k not in ("session_id", "order_id")}
        return m["timestamp"], m.get("event"), m.get("userId"), props

    kept_full = [key(m) for m in full if not is_turn_latency(m)]
    assert kept_full == [key(m) for m in thin if not is_turn_latency(m)]
