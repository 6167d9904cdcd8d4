"""The durable write path of the lake: every file and every touched directory is fsynced,
each directory once per write (not once per file)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tripwire.store import lake


def _envelope(i: int, day: int, event: str) -> dict[str, object]:
    return {
        "messageId": f"m-{day}-{event}-{i}",
        "type": "track",
        "event": event,
        "userId": f"u-{i % 3}",
        "timestamp": datetime(2026, 3, day, 12, i % 60, tzinfo=UTC).isoformat(),
        "receivedAt": datetime(2026, 3, day, 12, i % 60, tzinfo=UTC).isoformat(),
        "properties": {"n": i},
        "context": {"locale": "en-US"},
    }


def test_durable_write_fsyncs_each_directory_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: Counter[Path] = Counter()
    real = lake.fsync_directory

    def counting(directory: Path) -> None:
        synced[Path(directory)] += 1
        real(directory)

    monkeypatch.setattr(lake, "fsync_directory", counting)
    envelopes = [
        _envelope(i, day, event) for day in (1, 2) for event in ("A", "B", "C") for i in range(5)
    ]
    types = lake.PropertyTypes(tmp_path / "types.json")
    table = lake.envelopes_to_table(envelopes, types)
    written = lake.write_table(tmp_path, table, file_id="x", durable=True)

    assert len(written) == 6
    partitions = {path.parent for path in written}
    days = {path.parent.parent for path in written}
    # every partition directory (its rename) and every new directory's parent, once each
    assert set(synced) == partitions | days | {lake.events_dir(tmp_path), tmp_path}
    assert set(synced.values()) == {1}
    # rows are grouped by (date, event) in input order
    for path in written:
        rows = pq.read_table(path)
        assert set(rows["event"].to_pylist()) == {path.parent.name.removeprefix("event=")}
        numbers = [int(m.rsplit("-", 1)[1]) for m in rows["message_id"].to_pylist()]
        assert numbers == list(range(5))

    # a second write into existing directories fsyncs only the partitions it touched
    synced.clear()
    more = lake.envelopes_to_table([_envelope(9, 1, "A")], types)
    again = lake.write_table(tmp_path, more, file_id="y", durable=True)
    assert dict(synced) == {again[0].parent: 1}
