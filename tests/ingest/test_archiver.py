"""The archiver: buffer → lake exactly once, across crashes, with compaction and rewind; its
pipeline (read chunk k+2, convert k+1, write k at once) writes the same lake as one chunk at a
time, and a failure of any stage commits nothing after the last whole chunk."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

import tripwire.ingest.archiver as module
from tripwire.ingest.archiver import ArchiveFile, Archiver, ArchiverBusy
from tripwire.store.buffer import ARCHIVER, Buffer
from tripwire.store.lake import create_events_view, events_dir

EVENTS = ("Order Completed", "Turn Completed", "Voice Utterance")


def envelopes(n: int, *, prefix: str = "m"):
    """``n`` envelopes over two days and three event names (plus identify calls)."""
    result = []
    for i in range(n):
        day = 1 + i % 2
        kind = "identify" if i % 7 == 0 else "track"
        result.append(
            {
                "messageId": f"{prefix}{i}",
                "type": kind,
                "event": EVENTS[i % 3] if kind == "track" else "$identify",
                "userId": f"u{i % 11}",
                "timestamp": f"2026-11-0{day}T10:00:{i % 60:02d}Z",
                "properties": {"revenue": i * 1.5, "session_id": f"s{i % 5}"},
                "traits": {"prime": i % 2 == 0} if kind == "identify" else {},
                "context": {"locale": "en-GB", "device": {"model": "Echo Show"}},
                "source": "app",
            }
        )
    return result


def lake_ids(lake_dir) -> list[str]:
    connection = duckdb.connect()
    create_events_view(connection, lake_dir)
    return [row[0] for row in connection.execute("select message_id from events").fetchall()]


def assert_exactly_once(lake_dir, n: int, prefix: str = "m") -> None:
    ids = lake_ids(lake_dir)
    assert len(ids) == n and set(ids) == {f"{prefix}{i}" for i in range(n)}


@pytest.fixture
def buffer(tmp_path):
    with Buffer(tmp_path / "buffer.db") as buf:
        yield buf


def test_archives_every_row_once_into_date_event_partitions(tmp_path, buffer):
    buffer.append(envelopes(500))
    result = Archiver(buffer, tmp_path / "lake", chunk_rows=120).run()
    assert (result.events, result.chunks, result.committed_offset) == (500, 5, 500)
    assert_exactly_once(tmp_path / "lake", 500)
    partitions = {
        p.parent.relative_to(events_dir(tmp_path / "lake")).as_posix()
        for p in events_dir(tmp_path / "lake").glob("date=*/event=*/*.parquet")
    }
    assert "date=2026-11-02/event=Order%20Completed" in partitions
    assert "date=2026-11-01/event=%24identify" in partitions
    assert len(partitions) == 8
    # Running again finds nothing new; new rows are archived next time.
    assert Archiver(buffer, tmp_path / "lake").run().events == 0
    buffer.append(envelopes(50, prefix="late"))
    assert Archiver(buffer, tmp_path / "lake").run().events == 50
    assert len(lake_ids(tmp_path / "lake")) == 550


def test_a_failure_between_write_and_commit_leaves_no_duplicates(tmp_path, buffer):
    buffer.append(envelopes(300))

    def crash(first: int, last: int) -> None:
        if first > 100:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        Archiver(buffer, tmp_path / "lake", chunk_rows=100, after_write=crash).run()
    assert buffer.committed(ARCHIVER) == 100
    assert len(lake_ids(tmp_path / "lake")) == 200  # chunk 2 written but not committed
    buffer.append(envelopes(20, prefix="x"))  # the retry's chunk has a different range
    result = Archiver(buffer, tmp_path / "lake", chunk_rows=150).run()
    assert result.recovered_files > 0
    ids = lake_ids(tmp_path / "lake")
    assert len(ids) == len(set(ids)) == 320


def test_sigkill_mid_archive_then_restart_is_exactly_once(tmp_path):
    path = tmp_path / "buffer.db"
    with Buffer(path) as buf:
        buf.append(envelopes(400))
    script = textwrap.dedent(
        f"""
        import os, signal
        from tripwire.ingest.archiver import Archiver
        from tripwire.store.buffer import Buffer
        def die(first, last):
            if first > 200:
                os.kill(os.getpid(), signal.SIGKILL)
        Archiver(Buffer({str(path)!r}), {str(tmp_path / "lake")!r}, chunk_rows=100,
                 after_write=die).run()
        """
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert killed.returncode == -9
    with Buffer(path) as buf:
        assert buf.committed(ARCHIVER) == 200
        Archiver(buf, tmp_path / "lake", chunk_rows=64).run()
    assert_exactly_once(tmp_path / "lake", 400)


def test_compaction_merges_small_files_once_even_after_a_crash(tmp_path, buffer, monkeypatch):
    buffer.append(envelopes(600))
    lake = tmp_path / "lake"
    archiver = Archiver(buffer, lake, chunk_rows=50)
    archiver.run()
    before = list(events_dir(lake).glob("date=*/event=*/*.parquet"))
    assert len(before) == 12 * 8
    result = archiver.compact()
    after = list(events_dir(lake).glob("date=*/event=*/*.parquet"))
    assert (result.partitions, result.files_merged, result.files_written) == (8, 96, 8)
    assert len(after) == 8
    assert ArchiveFile.parse(after[0]) is not None
    assert_exactly_once(lake, 600)

    # Crash after the merged file is in place but before the originals are deleted.
    buffer.append(envelopes(200, prefix="n"))
    archiver.run()

    def no_unlink(path):
        raise OSError("simulated crash before deleting merged files")

    monkeypatch.setattr(module.os, "unlink", no_unlink)
    with pytest.raises(OSError, match="simulated crash"):
        archiver.compact()
    monkeypatch.undo()
    assert len(lake_ids(lake)) > 800  # merged file and originals both visible
    assert archiver.recover() > 0
    ids = lake_ids(lake)
    assert len(ids) == len(set(ids)) == 800


def test_rewind_re_archives_from_a_file_boundary(tmp_path, buffer):
    buffer.append(envelopes(300))
    archiver = Archiver(buffer, tmp_path / "lake", chunk_rows=100)
    archiver.run()
    with pytest.raises(ValueError, match="falls inside"):
        archiver.rewind(150)
    assert archiver.rewind(101) == 100
    assert len(lake_ids(tmp_path / "lake")) == 100
    assert archiver.run().events == 200
    assert_exactly_once(tmp_path / "lake", 300)


def test_archived_rows_past_retention_are_pruned(tmp_path):
    with Buffer(tmp_path / "b.db", retention_days=1) as buf:
        old = (datetime.now(UTC) - timedelta(days=2)).isoformat()
        batch = envelopes(30)
        for envelope in batch[:20]:
            envelope["receivedAt"] = old
        buf.append(batch[:20])  # one segment, all past retention
        buf.append(batch[20:])
        result = Archiver(buf, tmp_path / "lake").run()
        assert (result.events, result.pruned_events) == (30, 20)
        assert buf.status().rows == 10


def test_only_one_archiver_runs_at_a_time(tmp_path, buffer):
    first = Archiver(buffer, tmp_path / "lake")
    second = Archiver(buffer, tmp_path / "lake")
    with first._locked(), pytest.raises(ArchiverBusy):
        second.run()


def _files(lake: Path) -> dict[str, object]:
    root = events_dir(lake)
    return {
        p.relative_to(root).as_posix(): pq.read_table(p)
        for p in sorted(root.glob("date=*/event=*/*.parquet"))
    }


def test_pipelined_run_writes_the_same_lake_as_one_chunk_at_a_time(tmp_path, buffer):
    buffer.append(envelopes(700))
    pipelined = Archiver(buffer, tmp_path / "a", chunk_rows=90, consumer="a")
    result = pipelined.run(prune=False)
    assert (result.events, result.chunks, result.committed_offset) == (700, 8, 700)
    stepwise = Archiver(buffer, tmp_path / "b", chunk_rows=90, consumer="b")
    with stepwise._locked():
        steps = [stepwise.archive_chunk() for _ in range(9)]
    assert [events for events, _ in steps] == [90] * 7 + [70, 0]
    assert sum(files for _, files in steps) == result.files
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert list(a) == list(b) and len(a) == result.files
    for name, table in a.items():
        assert table.equals(b[name]), name
    assert_exactly_once(tmp_path / "a", 700)


def test_max_chunks_stops_the_pipeline(tmp_path, buffer):
    buffer.append(envelopes(500))
    archiver = Archiver(buffer, tmp_path / "lake", chunk_rows=100)
    assert archiver.run(max_chunks=2).events == 200
    assert buffer.committed(ARCHIVER) == 200
    assert len(lake_ids(tmp_path / "lake")) == 200
    assert archiver.run().events == 300
    assert_exactly_once(tmp_path / "lake", 500)


@pytest.mark.parametrize("failing", ["write", "convert"])
def test_a_failing_stage_commits_only_whole_chunks_before_it(
    tmp_path, buffer, monkeypatch, failing
):
    buffer.append(envelopes(500))
    real_write, real_convert = module.write_table, module.envelope_batch_to_partitions
    calls = {"write": 0, "convert": 0}

    def write(*args, **kwargs):
        calls["write"] += 1
        if failing == "write" and calls["write"] == 3:
            raise OSError("disk full")
        return real_write(*args, **kwargs)

    def convert(*args, **kwargs):
        calls["convert"] += 1
        if failing == "convert" and calls["convert"] == 3:
            raise ValueError("bad chunk")
        return real_convert(*args, **kwargs)

    monkeypatch.setattr(module, "write_table", write)
    monkeypatch.setattr(module, "envelope_batch_to_partitions", convert)
    with pytest.raises((OSError, ValueError)):
        Archiver(buffer, tmp_path / "lake", chunk_rows=100).run()
    # chunks 1 and 2 were written whole (chunk 2's write overlaps chunk 3's conversion)
    assert buffer.committed(ARCHIVER) == 200
    monkeypatch.undo()
    result = Archiver(buffer, tmp_path / "lake", chunk_rows=100).run()
    assert result.events == 300
    assert_exactly_once(tmp_path / "lake", 500)


def test_the_archiver_keeps_freed_arrow_memory_for_reuse() -> None:
    import pyarrow as pa

    from tripwire.ingest.archiver import use_retaining_memory_pool

    expected = "jemalloc" if "jemalloc" in pa.supported_memory_backends() else None
    name = use_retaining_memory_pool()
    assert name == pa.default_memory_pool().backend_name
    if expected is not None:
        assert name == expected
    assert use_retaining_memory_pool() == name  # once per process
