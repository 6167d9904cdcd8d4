"""Shortcuts of the batch path on large, uniform batches decide exactly as the general path."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tripwire.events.columns import _CANONICAL_RE, _all_canonical

from .test_columns import assert_same_decisions

CANONICAL = ["2026-03-01T11:00:00Z", "2026-03-01T11:00:00.250Z", "2026-03-01T11:00:00.250000Z"]


def _mutated(text: str, rng: random.Random) -> str:
    chars = list(text)
    for _ in range(rng.choice([0, 1, 1, 2])):
        at = rng.randrange(len(chars))
        choice = rng.random()
        if choice < 0.6:
            chars[at] = rng.choice("0123456789-T:.Z /é+a\x00\n")
        elif choice < 0.8:
            del chars[at]
        else:
            chars.insert(at, rng.choice("0.Z9"))
    return "".join(chars)


def test_the_byte_shape_check_agrees_with_the_regular_expression():
    """Every text of equal length compared as bytes; mixed lengths go to the expression."""
    rng = random.Random(7)
    for _ in range(3000):
        shape = rng.choice(CANONICAL)
        texts = [shape] * 3 + [_mutated(shape, rng)]
        rng.shuffle(texts)
        array = pa.array(texts, pa.string())
        expected = pc.all(pc.match_substring_regex(array, _CANONICAL_RE)).as_py()
        assert _all_canonical(array) == expected, texts
        assert _all_canonical(pa.array(["x", *texts]).slice(1)) == expected, texts


@pytest.mark.parametrize("shape", CANONICAL)
def test_a_large_uniform_batch_decides_like_validate_batch(shape):
    """Over the Arrow thresholds (256 rows): absent traits, anonymousId and name, one time
    shape; one bad date and a duplicate id among them."""
    batch = [
        {
            "type": "track",
            "event": "Order Completed",
            "userId": f"u{i % 7}",
            "messageId": f"m{i}",
            "timestamp": shape.replace("11:00", f"11:{i % 60:02d}"),
            "properties": {"i": i, "session_id": f"s{i // 10}"},
            "context": {"locale": "en-GB"},
        }
        for i in range(400)
    ]
    batch[17]["timestamp"] = shape.replace("03-01", "02-30")
    batch[18]["messageId"] = "m3"
    assert_same_decisions(batch)
    assert_same_decisions(batch, sent_at="2026-03-01T12:00:05Z")
