"""The durable buffer: append, dedupe, group commit, consumers, rewind, pruning, multi-process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from tripwire.store import buffer as buffer_module
from tripwire.store.buffer import ARCHIVER, Buffer, BufferClosed, BufferError, encode_envelopes


def envelope(message_id: str, *, received: str | None = None, **extra):
    """A normalized envelope; without ``received`` the buffer stamps the append time."""
    result = {
        "messageId": message_id,
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "timestamp": "2026-11-01T09:59:59.5Z",
        "receivedAt": received,
        "properties": {"revenue": 12.5},
        **extra,
    }
    if received is None:
        del result["receivedAt"]
    return result


@pytest.fixture
def buffer(tmp_path):
    with Buffer(tmp_path / "buffer.db") as buf:
        yield buf


def test_append_assigns_consecutive_offsets_and_stores_the_envelope(buffer):
    result = buffer.append([envelope("a"), envelope("b")])
    assert (result.stored, result.duplicates, result.first_offset, result.last_offset) == (
        2,
        0,
        1,
        2,
    )
    rows = buffer.read_after(0, 10)
    assert [(r.offset, r.message_id) for r in rows] == [(1, "a"), (2, "b")]
    assert rows[0].envelope() == envelope("a")
    assert rows[0].event_ts == datetime(2026, 11, 1, 9, 59, 59, 500000, tzinfo=UTC)
    assert abs(rows[0].received_at - datetime.now(UTC)) < timedelta(minutes=5)
    stamped = buffer.append([envelope("c", received="2026-11-01T10:00:00Z")])
    assert buffer.read_after(stamped.first_offset - 1, 1)[0].received_at == datetime(
        2026, 11, 1, 10, tzinfo=UTC
    )


def test_duplicates_are_reported_by_index_and_not_stored(buffer):
    buffer.append([envelope("a")])
    result = buffer.append([envelope("b"), envelope("a"), envelope("b"), envelope("c")])
    assert (result.stored, result.duplicates, result.duplicate_indexes) == (2, 2, (1, 2))
    assert [r.message_id for r in buffer.read_after(0, 10)] == ["a", "b", "c"]


def test_dedupe_window_is_configurable(tmp_path):
    with Buffer(tmp_path / "b.db", dedupe_window_days=0) as buf:
        buf.append([envelope("a")])
        assert buf.append([envelope("a")]).stored == 1  # window of zero: nothing is a retry


def test_pruning_events_keeps_dedupe_keys(tmp_path):
    with Buffer(tmp_path / "b.db", retention_days=1, dedupe_window_days=7) as buf:
        old = (datetime.now(UTC) - timedelta(days=3)).isoformat()
        buf.append([envelope("a", received=old)])  # its own segment (group commit)
        buf.append([envelope("b")])
        buf.commit(ARCHIVER, 2)
        pruned = buf.prune()
        assert (pruned.events, pruned.dedupe_keys) == (1, 0)
        assert [r.message_id for r in buf.read_after(0, 10)] == ["b"]
        assert buf.append([envelope("a")]).duplicates == 1


def test_a_segment_is_pruned_only_when_its_newest_row_is_past_retention(tmp_path):
    with Buffer(tmp_path / "b.db", retention_days=1) as buf:
        buf.append([envelope("old", received="2020-01-01T00:00:00Z"), envelope("new")])
        buf.commit(ARCHIVER, 2)
        assert buf.prune().events == 0
        assert [r.message_id for r in buf.read_after(0, 10)] == ["old", "new"]


def test_reads_span_segments_and_start_mid_segment(buffer):
    for batch in range(3):
        buffer.append([envelope(f"{batch}-{i}") for i in range(4)])
    chunk = buffer.read_chunk(2, 7)
    assert (chunk.first_offset, chunk.last_offset, len(chunk)) == (3, 9, 7)
    assert chunk.message_ids == ["0-2", "0-3", "1-0", "1-1", "1-2", "1-3", "2-0"]
    payloads = [orjson.loads(p) for p in chunk.payloads.to_pylist()]
    assert [p["messageId"] for p in payloads] == chunk.message_ids
    assert buffer.read_chunk(12, 5) is None


def test_pruning_waits_for_the_archiver_and_dedupe_keys_expire(tmp_path):
    with Buffer(tmp_path / "b.db", retention_days=1, dedupe_window_days=2) as buf:
        buf.append([envelope("a", received="2020-01-01T00:00:00Z")])
        assert buf.prune().events == 0  # not archived yet
        buf.commit(ARCHIVER, 1)
        later = datetime.now(UTC) + timedelta(days=3)
        assert buf.prune(now=later).events == 1
        assert buf.read_after(0, 10) == []
        assert buf.first_offset() is None and buf.last_offset() == 1


def test_dedupe_keys_older_than_window_are_pruned(tmp_path):
    with Buffer(tmp_path / "b.db", dedupe_window_days=1) as buf:
        buf.append([envelope("a")])
        assert buf.prune(now=datetime.now(UTC) + timedelta(days=2)).dedupe_keys == 1
        buf.commit(ARCHIVER, 1)
        assert buf.append([envelope("a")]).stored == 1


def test_offsets_never_restart_after_everything_is_pruned(tmp_path):
    with Buffer(tmp_path / "b.db", retention_days=0) as buf:
        buf.append([envelope("a"), envelope("b")])
        buf.commit(ARCHIVER, 2)
        assert buf.prune(now=datetime.now(UTC) + timedelta(days=1)).events == 2
        assert buf.append([envelope("c")]).first_offset == 3


def test_concurrent_appenders_are_group_committed_and_all_durable(tmp_path):
    path = tmp_path / "b.db"
    threads, per_thread, calls = 8, 40, 5
    with Buffer(path) as buf:
        results = []
        lock = threading.Lock()

        def worker(t: int) -> None:
            for c in range(calls):
                batch = [envelope(f"{t}-{c}-{i}") for i in range(per_thread)]
                result = buf.append(batch)
                with lock:
                    results.append(result)

        pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        stats = buf.writer_stats()
    assert sum(r.stored for r in results) == threads * calls * per_thread
    assert stats.appends == threads * calls
    assert stats.commits < stats.appends  # coalesced into shared transactions
    # Offsets handed out are disjoint and contiguous.
    spans = sorted((r.first_offset, r.last_offset) for r in results)
    assert spans[0][0] == 1 and spans[-1][1] == threads * calls * per_thread
    assert all(a[1] + 1 == b[0] for a, b in zip(spans, spans[1:], strict=False))
    # A fresh process-level open sees every acknowledged row.
    with Buffer(path) as again:
        assert again.status().rows == threads * calls * per_thread


def test_consumers_are_independent_and_rewindable(buffer):
    buffer.append([envelope(f"m{i}", received=f"2026-11-01T10:00:0{i}Z") for i in range(6)])
    first = buffer.read("monitor", 4)
    assert [r.offset for r in first] == [1, 2, 3, 4]
    buffer.commit("monitor", first[-1].offset)
    assert [r.offset for r in buffer.read("monitor", 10)] == [5, 6]
    assert [r.offset for r in buffer.read("other", 2)] == [1, 2]  # fan-out: its own cursor
    assert buffer.rewind("monitor", offset=2) == 1
    assert buffer.read("monitor", 1)[0].offset == 2
    assert buffer.rewind("monitor", at=datetime(2026, 11, 1, 10, 0, 3, tzinfo=UTC)) == 3
    assert buffer.read("monitor", 1)[0].message_id == "m3"
    with pytest.raises(BufferError, match="offsets run from 1 to 6"):
        buffer.rewind("monitor", offset=99)
    with pytest.raises(BufferError, match="log ends at 6"):
        buffer.commit("monitor", 7)


def test_rewind_before_retention_is_refused(tmp_path):
    with Buffer(tmp_path / "b.db", retention_days=1) as buf:
        buf.append([envelope("a", received="2020-01-01T00:00:00Z")])
        buf.append([envelope("b")])
        buf.commit(ARCHIVER, 2)
        assert buf.prune().events == 1
        with pytest.raises(BufferError, match="pruned"):
            buf.rewind("monitor", offset=1)
        with pytest.raises(BufferError, match="pruned"):
            buf.rewind("monitor", at=datetime(2019, 1, 1, tzinfo=UTC))


def test_depth_and_high_water_follow_the_archiver(tmp_path):
    with Buffer(tmp_path / "b.db", high_water_mark=3) as buf:
        buf.append([envelope(f"m{i}") for i in range(5)])
        buf.register_consumer("slow-but-optional")
        assert buf.depth() == 5
        assert buf.over_high_water(max_age_s=0)
        buf.commit(ARCHIVER, 4)
        assert buf.depth() == 1
        assert not buf.over_high_water(max_age_s=0)
        lags = {c.name: c.lag for c in buf.status().consumers}
        assert lags == {ARCHIVER: 1, "slow-but-optional": 5}


def test_bad_envelopes_are_refused_before_anything_is_written(buffer):
    with pytest.raises(BufferError, match="envelope 1: missing 'messageId'"):
        buffer.append([envelope("a"), {"timestamp": "2026-11-01T10:00:00Z"}])
    with pytest.raises(BufferError, match="envelope 0: timestamp 'yesterday' is not ISO 8601"):
        buffer.append([envelope("a", timestamp="yesterday")])
    assert buffer.last_offset() == 0


def test_closed_buffer_refuses_appends(tmp_path):
    buf = Buffer(tmp_path / "b.db")
    future = buf.submit([envelope("a")])
    buf.close()
    assert future.result().stored == 1  # close waits for pending appends
    with pytest.raises(BufferClosed):
        buf.append([envelope("b")])


def test_another_process_reads_while_this_one_writes(tmp_path):
    path = tmp_path / "b.db"
    with Buffer(path) as buf:
        buf.append([envelope(f"m{i}") for i in range(10)])
        code = (
            "import sys; from tripwire.store.buffer import Buffer\n"
            "b = Buffer(sys.argv[1]); s = b.status(); b.close()\n"
            "print(s.rows, s.last_offset, s.depth)"
        )
        done = threading.Event()

        def keep_writing() -> None:
            n = 0
            while not done.is_set():
                buf.append([envelope(f"w{n}")])
                n += 1

        writer = threading.Thread(target=keep_writing)
        writer.start()
        try:
            out = subprocess.run(
                [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
            ).stdout.split()
        finally:
            done.set()
            writer.join()
        rows, last, depth = map(int, out)
        assert 10 <= rows == last == depth <= buf.last_offset()


def test_encode_uses_received_fallback_for_envelopes_without_received_at():
    batch = encode_envelopes(
        [{"messageId": "a", "timestamp": "2026-11-01T10:00:00+02:00"}], received_at=42
    )
    expected = int(datetime(2026, 11, 1, 8, tzinfo=UTC).timestamp()) * 1_000_000
    row = batch.batch.to_pylist()[0]
    assert batch.message_ids == ["a"] and row["message_id"] == "a"
    assert row["timestamp"] == datetime.fromtimestamp(expected / 1e6, UTC)
    assert row["received_at"] == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=42)
    assert batch.envelopes() == [{"messageId": "a", "timestamp": "2026-11-01T10:00:00+02:00"}]


def test_a_group_commit_finds_duplicates_across_its_appends_exactly(buffer):
    """A group's ids are checked against the stored ones and against each other: a duplicate
    anywhere (stored before, or earlier in the same group) is found, and every stored id is
    recorded once in the group's dedupe block."""
    from tripwire.store.buffer import _Pending
    from tripwire.store.state import connect_sqlite

    buffer.append([envelope("z")])
    connection = connect_sqlite(buffer.path)
    try:
        fresh = buffer._write_group(
            connection, [_Pending(encode_envelopes([envelope(m)])) for m in ("p", "q")]
        )
        assert [(r.stored, r.first_offset) for r in fresh] == [(1, 2), (1, 3)]
        group = [
            _Pending(encode_envelopes([envelope("x"), envelope("y")])),
            _Pending(encode_envelopes([envelope("y"), envelope("z"), envelope("w")])),
        ]
        results = buffer._write_group(connection, group)
        blocks = connection.execute("SELECT ids FROM dedupe_blocks").fetchall()
        keys = [m for (ids,) in blocks for m in orjson.loads(ids)]
    finally:
        connection.close()
    assert [(r.stored, r.duplicate_indexes) for r in results] == [(2, ()), (1, (0, 1))]
    assert [r.message_id for r in buffer.read_after(0, 10)] == ["z", "p", "q", "x", "y", "w"]
    assert sorted(keys) == sorted(["z", "p", "q", "x", "y", "w"])


@pytest.mark.parametrize("rows", [3, 2_500])
def test_small_and_large_segments_decode_to_the_same_table(tmp_path, rows):
    """Small groups are one LZ4 frame, large ones compress per Arrow buffer: both read back
    as the appended envelopes."""
    from tripwire.store.buffer import _FRAMED_MAGIC, _FRAMED_MAX_ROWS

    envelopes = [envelope(f"m{i}", received="2026-11-01T10:00:00Z") for i in range(rows)]
    expected = encode_envelopes(envelopes).batch
    with Buffer(tmp_path / "b.db") as buf:
        buf.append(envelopes)
        chunk = buf.read_chunk(0, rows + 10)
        (blob,) = buf._query("SELECT data FROM segments")[0]
    assert (blob[:4] == _FRAMED_MAGIC) == (rows < _FRAMED_MAX_ROWS)
    assert chunk is not None and chunk.table.equals(pa.Table.from_batches([expected]))


def test_ids_with_nul_characters_are_deduplicated_exactly(buffer):
    """SQLite's json_each would read "a\\x00b" as "a": such ids must neither collide with
    each other or with "a", nor escape deduplication."""
    first = buffer.append([envelope("a\x00b"), envelope("a\x00c")])
    again = buffer.append(
        [envelope("a"), envelope("a\x00b"), envelope("a\x00c"), envelope("a\x00")]
    )
    assert (first.stored, first.duplicates) == (2, 0)
    assert (again.stored, again.duplicate_indexes) == (2, (1, 2))
    assert buffer.append([envelope("a"), envelope("a\x00")]).duplicates == 2
    ids = [r.message_id for r in buffer.read_after(0, 10)]
    assert ids == ["a\x00b", "a\x00c", "a", "a\x00"]


def test_a_buffer_keeps_freed_arrow_memory_for_reuse(tmp_path):
    """Opening a buffer switches pyarrow to the archiver's retaining pool (a fresh process:
    the pool is process-wide and other tests may have switched it already)."""
    code = (
        "import sys, pyarrow as pa\n"
        "from tripwire.store.buffer import Buffer\n"
        "with Buffer(__import__('pathlib').Path(sys.argv[1])):\n"
        "    print(pa.default_memory_pool().backend_name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "buffer.db")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    if "jemalloc" in pa.supported_memory_backends():
        assert result.stdout.strip() == "jemalloc"


def test_a_group_of_large_appends_is_joined_by_arrow_with_the_same_rows(buffer):
    """Appends of _ARROW_JOIN_MIN_ROWS events or more are joined as Arrow batches, not as
    column lists: the stored rows, their order and the duplicates found are the same."""
    from tripwire.events.columns import normalize_batch
    from tripwire.store.buffer import _ARROW_JOIN_MIN_ROWS, _group_batch, _Pending
    from tripwire.store.state import connect_sqlite

    n = _ARROW_JOIN_MIN_ROWS
    first = encode_envelopes([envelope(f"a{i}", received="2026-11-01T10:00:00Z") for i in range(n)])
    raw = [
        {"type": "track", "event": "E", "userId": "u", "messageId": f"b{i}", "properties": {"i": i}}
        for i in range(n)
    ]
    raw[5]["messageId"] = "a7"  # a duplicate of the first append's 8th event
    second, rejected = normalize_batch(raw, received_at=datetime.now(UTC), source="test")
    assert not rejected
    joined, ids = _group_batch([first, second])
    listed = encode_envelopes([*first.envelopes(), *second.envelopes()])
    assert joined.equals(listed.batch) and ids == listed.message_ids
    connection = connect_sqlite(buffer.path)
    try:
        results = buffer._write_group(connection, [_Pending(first), _Pending(second)])
    finally:
        connection.close()
    assert [(r.stored, r.duplicate_indexes) for r in results] == [(n, ()), (n - 1, (5,))]
    stored = buffer.read_after(0, 3 * n)
    assert [e.message_id for e in stored] == ids[: n + 5] + ids[n + 6 :]
    assert stored[n].envelope() == second.envelopes()[0]


def _wal_after_rounds(directory: Path, rounds: int, *, checkpointed: bool) -> tuple[int, int]:
    """WAL bytes after ``rounds`` rounds of appends, and the checkpoints counted; with
    ``checkpointed`` each round waits (≤ 5 s) for a background checkpoint."""
    directory.mkdir()
    payload = "x" * 2_000
    with Buffer(directory / "buffer.db") as buf:
        for round_ in range(rounds):
            for i in range(25):
                ids = range(round_ * 10_000 + i * 50, round_ * 10_000 + (i + 1) * 50)
                buf.append(
                    [envelope(f"m{n}", payload=f"{n}{payload}{n * 7919 % 104729}") for n in ids]
                )
            deadline = time.monotonic() + 5
            while (
                checkpointed
                and buf.writer_stats().checkpoints <= round_
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)
        return (directory / "buffer.db-wal").stat().st_size, buf.writer_stats().checkpoints


def test_the_wal_is_checkpointed_in_the_background_not_by_commits(tmp_path, monkeypatch):
    """The writer's commits never checkpoint (that stalled the acknowledgements waiting on
    them); the checkpoint thread does, so the WAL is reused instead of growing."""
    rounds = 12
    wal_bytes, checkpoints = _wal_after_rounds(tmp_path / "on", rounds, checkpointed=True)
    assert checkpoints >= rounds
    # the same appends with the checkpoint thread (in effect) off: the WAL holds them all
    monkeypatch.setattr(buffer_module, "CHECKPOINT_INTERVAL_S", 3600.0)
    unbounded, none = _wal_after_rounds(tmp_path / "off", rounds, checkpointed=False)
    assert none == 0
    # the WAL never shrinks, so it ends at its largest: the pages written between two
    # checkpoints (a round, two if a checkpoint came late on a loaded machine)
    assert wal_bytes < 0.5 * unbounded, (wal_bytes, unbounded)


def test_appends_are_acknowledged_before_the_dedupe_index_learns_their_block(buffer, monkeypatch):
    """The writer resolves a group's futures right after COMMIT and only then adds the
    group's block to its in-memory dedupe index (no caller waits for that); the next
    commit still sees the block, so a retry is a duplicate."""
    from tripwire.store import dedupe

    entered, release = threading.Event(), threading.Event()
    original_add = dedupe.KeyIndex.add

    def slow_add(self, *args, **kwargs):
        entered.set()
        assert release.wait(10)
        return original_add(self, *args, **kwargs)

    monkeypatch.setattr(dedupe.KeyIndex, "add", slow_add)
    future = buffer.submit([envelope("a"), envelope("b")])
    assert entered.wait(10)
    result = future.result(timeout=5)  # durable while the index update is still blocked
    assert (result.stored, result.first_offset) == (2, 1)
    retry = buffer.submit([envelope("b"), envelope("c")])
    release.set()
    assert retry.result(timeout=10).duplicate_indexes == (0,)
    assert [r.message_id for r in buffer.read_after(0, 10)] == ["a", "b", "c"]


def test_a_failed_index_update_after_an_acknowledged_commit_reloads_the_index(buffer, monkeypatch):
    """A group is acknowledged once committed even if adding its block to the index then
    fails: the index is rebuilt from the stored blocks, so deduplication stays exact."""
    from tripwire.store import dedupe

    calls = []
    original_add = dedupe.KeyIndex.add

    def failing_once(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("index update failed")
        return original_add(self, *args, **kwargs)

    monkeypatch.setattr(dedupe.KeyIndex, "add", failing_once)
    assert buffer.append([envelope("a")]).stored == 1
    assert buffer.append([envelope("a"), envelope("b")]).duplicate_indexes == (0,)


def test_the_wal_starts_over_under_sustained_appends(tmp_path, monkeypatch):
    """Appends without a pause never let the background checkpoint copy the whole WAL, so
    SQLite would append to it forever; once it holds WAL_RESTART_BYTES the writer
    checkpoints between two commits and the WAL starts over: its file stays bounded."""
    monkeypatch.setattr(buffer_module, "CHECKPOINT_INTERVAL_S", 0.02)
    monkeypatch.setattr(buffer_module, "WAL_RESTART_BYTES", 256 * 1024)
    payload = "x" * 2_000
    wal = tmp_path / "buffer.db-wal"
    with Buffer(tmp_path / "buffer.db") as buf:
        appended = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            buf.writer_stats().wal_restarts < 3 or appended < 6_000
        ):
            ids = range(appended, appended + 20)
            buf.append([envelope(f"m{n}", payload=f"{n}{payload}{n * 7919 % 104729}") for n in ids])
            appended += 20
        stats = buf.writer_stats()
        wal_bytes = wal.stat().st_size
        assert [r.message_id for r in buf.read_after(appended - 2, 5)] == [
            f"m{appended - 2}",
            f"m{appended - 1}",
        ]
    assert stats.wal_restarts >= 3, stats
    # without restarts the WAL would hold every payload (≥ 10 MB); with them it stays
    # near WAL_RESTART_BYTES plus what lands between two checkpoints
    assert wal_bytes < 4 * 1024 * 1024 < 10 * 1024 * 1024 <= appended * 2_000, (wal_bytes, appended)
