"""Parsing, formatting and skew correction of envelope times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tripwire.events.timestamps import (
    TimestampError,
    corrected_timestamp,
    format_timestamp,
    parse_timestamp,
)

times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2199, 12, 30), timezones=st.just(UTC)
)


@given(times)
def test_format_then_parse_round_trips(moment):
    text = format_timestamp(moment)
    assert text.endswith("Z")
    assert parse_timestamp(text) == moment


def test_offsets_are_converted_to_utc():
    parsed = parse_timestamp(datetime(2026, 1, 1, 9, tzinfo=timezone(timedelta(hours=9))))
    assert parsed == datetime(2026, 1, 1, 0, tzinfo=UTC) and parsed.tzinfo is UTC


@given(times, st.integers(-(10**6), 10**6), st.integers(0, 3600))
def test_correction_removes_any_constant_clock_error(true_time, skew_s, delay_s):
    skew = timedelta(seconds=skew_s)
    sent_true = true_time + timedelta(seconds=delay_s)
    received = sent_true  # zero network latency
    corrected = corrected_timestamp(true_time + skew, sent_true + skew, received)
    assert corrected == true_time


def test_bad_values():
    with pytest.raises(TimestampError, match="expected an ISO 8601 string, got list"):
        parse_timestamp([2026])
