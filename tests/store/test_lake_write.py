"""Writing lake rows: partitions written on several threads are the same files as written on
one, and a failing partition write fails the whole write."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tripwire.store import lake


def _table(tmp_path: Path):
    envelopes = [
        {
            "messageId": f"m{i}",
            "type": "track",
            "event": ("A", "B b", "C/c")[i % 3],
            "userId": f"u{i % 7}",
            "timestamp": datetime(2026, 3, 1 + i % 4, 12, i % 60, tzinfo=UTC).isoformat(),
            "properties": {"n": i, "only_in_a": "x"} if i % 3 == 0 else {"n": i},
            "context": {"locale": "en-US"},
        }
        for i in range(240)
    ]
    return lake.envelopes_to_table(envelopes, lake.PropertyTypes(tmp_path / "types.json"))


def test_threaded_write_equals_sequential_write(tmp_path: Path) -> None:
    table = _table(tmp_path)
    one = lake.write_table(tmp_path / "one", table, file_id="x", durable=True, threads=1)
    two = lake.write_table(tmp_path / "two", table, file_id="x", durable=True, threads=2)
    assert len(one) == len(two) == 12  # 4 days × 3 events
    assert [p.relative_to(tmp_path / "one") for p in one] == [
        p.relative_to(tmp_path / "two") for p in two
    ]
    for a, b in zip(one, two, strict=True):
        left, right = pq.read_table(a), pq.read_table(b)
        assert left.equals(right, check_metadata=True)
        # only the partition's own rows, in table order; all-null flattened columns left out
        event = a.parent.name.removeprefix("event=")
        assert set(left["event"].to_pylist()) == {event.replace("%20", " ").replace("%2F", "/")}
        numbers = [int(m[1:]) for m in left["message_id"].to_pylist()]
        assert numbers == sorted(numbers)
        assert ("prop_only_in_a" in left.column_names) == (event == "A")
    assert not list((tmp_path / "two").rglob("*.tmp"))


def test_a_failing_partition_write_fails_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = _table(tmp_path)
    real = lake.write_file_atomically
    calls = []

    def flaky(part, target, **kwargs):
        calls.append(target)
        if len(calls) == 5:
            raise OSError("disk full")
        real(part, target, **kwargs)

    monkeypatch.setattr(lake, "write_file_atomically", flaky)
    with pytest.raises(OSError, match="disk full"):
        lake.write_table(tmp_path, table, file_id="x", durable=True, threads=2)


def test_statistics_and_dictionaries_per_column(tmp_path: Path) -> None:
    """Range statistics where queries prune (time, event, dimensions, flattened values), none
    on the raw JSON and message ids; no dictionary on per-event texts and ids."""
    (path, *_) = lake.write_table(tmp_path / "lake", _table(tmp_path), file_id="x")
    row_group = pq.ParquetFile(path).metadata.row_group(0)
    chunks = {
        row_group.column(i).path_in_schema: row_group.column(i)
        for i in range(row_group.num_columns)
    }
    for name in ("timestamp", "received_at", "event", "type", "locale", "prop_n"):
        assert chunks[name].is_stats_set and chunks[name].statistics.has_min_max, name
    for name in ("message_id", "properties", "context", "traits"):
        assert not chunks[name].is_stats_set, name
    for name in ("message_id", "user_id", "properties", "timestamp"):
        assert not chunks[name].has_dictionary_page, name
    for name in ("event", "locale", "context"):
        assert chunks[name].has_dictionary_page, name


def test_zstd_only_on_the_columns_that_hold_the_bytes(tmp_path: Path) -> None:
    """zstd on the plain-encoded ids and times and the raw JSON; LZ4 (a cheaper per-column
    set-up) on the dictionary-encoded and flattened columns."""
    (path, *_) = lake.write_table(tmp_path / "lake", _table(tmp_path), file_id="x")
    row_group = pq.ParquetFile(path).metadata.row_group(0)
    codecs = {
        row_group.column(i).path_in_schema: row_group.column(i).compression
        for i in range(row_group.num_columns)
    }
    for name in ("message_id", "user_id", "timestamp", "properties", "context", "traits"):
        assert codecs[name] == "ZSTD", name
    for name in ("event", "type", "locale", "prop_n"):
        assert codecs[name] in ("LZ4", "LZ4_RAW"), name
