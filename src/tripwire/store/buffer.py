"""The durable buffer: an append-only SQLite log of normalized envelopes with group commit.

Every accepted event is appended here before anyone acknowledges it; every consumer (the
archiver, streaming monitors, ...) reads it from here at its own pace.

Tables (``.tripwire/buffer.db``)::

    segments(first_offset PRIMARY KEY, last_offset, min/max_received_at, raw_size, data)
    log(last_offset)                                 -- highest offset ever assigned
    dedupe_blocks(id, seen_at, keys, hashes, ids)    -- messageIds stored, one row per commit
    consumers(name PRIMARY KEY, committed, required, updated_at)

* **Offsets** number events 1, 2, 3, ... and are never reused (``log`` keeps the highest ever
  assigned, even after every row has been pruned).
* **Segments.** Each group commit stores its events as *one* row: the envelopes in columns
  (:data:`tripwire.events.columns.ENVELOPE_BATCH_SCHEMA`: typed envelope fields, the three
  JSON objects as text) as an Arrow IPC stream, LZ4-compressed (per buffer for large
  segments, as one frame for small ones: see :func:`encode_segment`). An event costs
  well under 100 bytes of WAL and one B-tree insert is shared by the whole group, so the
  disk's bandwidth, not SQLite, stops bounding ingest; readers get Arrow tables without a
  Python object per event, and the archiver parses no envelope. The group's messageIds
  are one more row (a dedupe block, see below): no table has a row per event.
* **Durability.** The database is in WAL mode with ``synchronous=FULL``: ``COMMIT`` returns
  only after the WAL has been fsynced, so a committed append survives SIGKILL of the process
  and a power loss. (``NORMAL`` would survive only a process crash: the WAL would be synced
  at checkpoints, not at commits, and an acknowledged event could vanish with the machine.)
* **Group commit.** :meth:`Buffer.append` hands its envelopes to one writer thread and
  blocks on a future. The writer drains everything queued while the previous fsync ran and
  writes it in *one* transaction, so N concurrent callers cost one fsync, not N. The
  caller returns only after that transaction committed: acknowledged means durable.
* **Checkpoints off the commit path.** SQLite's automatic checkpoint (every ~1,000 WAL
  pages) runs inside the commit that crosses the threshold: that commit, and every request
  waiting on it, also waits for the WAL pages to be copied into the database and the
  database to be fsynced (tens of ms, every few seconds at 15,000 events/s: the p99 of
  acknowledgements). The writer's connection turns it off and a second thread runs
  ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection every
  :data:`CHECKPOINT_INTERVAL_S` after new commits. Durability is unchanged (each commit
  still fsyncs the WAL); a passive checkpoint never blocks the writer or readers. Under
  sustained load it never finds the WAL fully copied, so once the WAL holds
  :data:`WAL_RESTART_BYTES` the writer checkpoints once between two commits, which lets
  SQLite start the WAL over instead of growing it without bound.
* **Deduplication** by ``messageId`` within ``ingest.dedupe_window_days`` (default 7) uses
  ``dedupe_blocks`` (:mod:`tripwire.store.dedupe`), separate from ``segments`` so pruning old
  events never forgets a key still inside the window. Each commit appends one block (its
  stored ids and their 64-bit hashes); the writer keeps the hashes of the blocks inside the
  window in an in-memory hash table, catches up with blocks other processes appended under
  the write lock, and compares full ids for any hash it finds (exact: a hash collision
  neither drops an event nor stores one twice). Cost per event no longer grows with the
  number of keys, as a B-tree keyed by random UUIDs did (12–14 µs per event past ~600 k keys).
* **Consumers** are named cursors (``committed`` = last offset processed). They are
  independent (fan-out) and can be rewound to an offset or a received time within
  retention. *Required* consumers (the archiver) hold back pruning and define the depth
  used for backpressure.
* **Multi-process.** WAL lets another process (``tripwire status``, a second writer such as
  ``tripwire sim``) read or write concurrently; writers serialize on SQLite's lock with a
  busy timeout.
"""

from __future__ import annotations

import queue
import sqlite3
import struct
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from tripwire.events.columns import (
    ENVELOPE_BATCH_SCHEMA,
    EnvelopeBatch,
    EnvelopeError,
    batch_envelopes,
    envelopes_to_batch,
)
from tripwire.store import dedupe
from tripwire.store.state import connect_sqlite
from tripwire.store.workspace import DEFAULT_CONFIG, Workspace

#: The archiver's consumer name. It exists from the moment the buffer is created and is
#: required, so nothing is pruned before it has been archived.
ARCHIVER = "archiver"

_US = 1_000_000
_DAY_US = 86_400 * _US
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (
    first_offset INTEGER PRIMARY KEY,
    last_offset INTEGER NOT NULL,
    min_received_at INTEGER NOT NULL,
    max_received_at INTEGER NOT NULL,
    raw_size INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_offset INTEGER NOT NULL
);
INSERT OR IGNORE INTO log(id, last_offset) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS consumers (
    name TEXT PRIMARY KEY,
    committed INTEGER NOT NULL,
    required INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
);
"""
_LAST_OFFSET_SQL = "SELECT last_offset FROM log WHERE id = 1"


class BufferError(RuntimeError):
    """A buffer operation that cannot be done as asked (bad envelope, offset out of range)."""


class BufferClosed(BufferError):
    """The buffer was closed; nothing more can be appended."""


@dataclass(frozen=True)
class AppendResult:
    """Outcome of one :meth:`Buffer.append` call, known only once it is durable.

    ``duplicate_indexes`` are the positions (in the caller's list) of envelopes whose
    ``messageId`` was already stored within the dedupe window or earlier in the same call.
    ``first_offset``/``last_offset`` bound the offsets given to the stored envelopes (None when
    nothing was stored); stored envelopes get consecutive offsets in input order.
    """

    stored: int
    duplicates: int
    duplicate_indexes: tuple[int, ...] = ()
    first_offset: int | None = None
    last_offset: int | None = None


@dataclass(frozen=True)
class BufferedEvent:
    """One row of the log."""

    offset: int
    message_id: str
    event_ts: datetime
    received_at: datetime
    payload: bytes

    def envelope(self) -> dict[str, Any]:
        """The normalized envelope as it was appended."""
        result: dict[str, Any] = orjson.loads(self.payload)
        return result


@dataclass(frozen=True)
class ConsumerStatus:
    name: str
    committed: int
    lag: int
    required: bool
    updated_at: datetime


@dataclass(frozen=True)
class BufferStatus:
    """A snapshot for ``tripwire status`` and for backpressure."""

    rows: int
    first_offset: int | None
    last_offset: int
    depth: int
    size_bytes: int
    consumers: tuple[ConsumerStatus, ...]


@dataclass(frozen=True)
class PruneResult:
    events: int
    dedupe_keys: int


#: Seconds between background WAL checkpoints (when something was committed meanwhile).
CHECKPOINT_INTERVAL_S = 0.25

#: WAL content (bytes of frames) past which the writer lets SQLite restart the WAL from its
#: beginning (see :meth:`Buffer._restart_wal_before_commit`): what bounds the WAL file under sustained load.
WAL_RESTART_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class WriterStats:
    """Counters of this process's writer thread (used by tests and benchmarks)."""

    appends: int
    commits: int
    events: int
    checkpoints: int = 0
    #: Checkpoints the writer ran between two commits that left the WAL fully copied
    #: (so that its next commit starts the WAL over): see ``Buffer._restart_wal_before_commit``.
    wal_restarts: int = 0


class _Preload:
    """Queued by :meth:`Buffer.preload_keys`."""


_PRELOAD = _Preload()


@dataclass
class _Pending:
    batch: EnvelopeBatch
    future: Future[AppendResult] = field(default_factory=Future)


@dataclass(frozen=True)
class _StoredBlock:
    """The dedupe block a group commit wrote, for the writer's index (added after the
    group is acknowledged)."""

    block_id: int
    hashes: np.ndarray
    window_start: int


def _micros(value: Any, what: str, index: int) -> int:
    """Microseconds since the epoch of an ISO 8601 string or datetime."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as error:
            raise BufferError(f"envelope {index}: {what} {value!r} is not ISO 8601") from error
    else:
        raise BufferError(f"envelope {index}: {what} must be an ISO 8601 string, got {value!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_US


def _from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def now_micros() -> int:
    return time.time_ns() // 1000


def encode_envelopes(
    envelopes: Iterable[Mapping[str, Any]], *, received_at: int | None = None
) -> EnvelopeBatch:
    """Envelope dicts as an :class:`EnvelopeBatch` for :meth:`Buffer.append_batch`.

    Each envelope must have a ``messageId`` and an ISO 8601 ``timestamp``; its
    ``receivedAt`` (else ``received_at`` µs, else now) is the log time used for rewinding
    and pruning.
    """
    try:
        return envelopes_to_batch(envelopes, received_at=received_at)
    except EnvelopeError as error:
        raise BufferError(str(error)) from None


# -- segments: one compressed Arrow IPC stream per group commit --------------------------------

_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")
_IPC_MAGIC = b"\xff\xff\xff\xff"
_LZ4 = "lz4"  # pyarrow's LZ4 frame format
#: Segments written before the buffer was columnar: LZ4 frames of JSON payloads.
_LEGACY_CODEC = _LZ4
_HEADER_LENGTH = struct.Struct("<I")


#: A segment of fewer rows is one LZ4 frame around an uncompressed IPC stream
#: (:data:`_FRAMED_MAGIC`, then the frame): compressing each of a segment's ~40 Arrow
#: buffers on its own has a fixed cost (~270 µs to encode and ~700 µs to decode a 100-event
#: HTTP group) that one frame does not have (~45 µs each way, and smaller). Larger segments
#: compress per buffer, which Arrow spreads over threads.
_FRAMED_MAX_ROWS = 2_000
_FRAMED_MAGIC = b"TWF1"
_PLAIN_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression=None)


def encode_segment(batches: Sequence[pa.RecordBatch]) -> tuple[bytes, int]:
    """One segment: the record batches (:data:`ENVELOPE_BATCH_SCHEMA`) as an Arrow IPC
    stream, LZ4-compressed (~10x on envelopes; no Python object per event).

    Returns the blob and its raw size (what :meth:`Segment.decode` needs to decompress it).
    """
    rows = sum(batch.num_rows for batch in batches)
    if rows >= _FRAMED_MAX_ROWS:
        data = _ipc_stream(batches, _IPC_OPTIONS).to_pybytes()
        return data, len(data)
    stream = _ipc_stream(batches, _PLAIN_IPC_OPTIONS)
    return _FRAMED_MAGIC + pa.compress(stream, codec=_LZ4, asbytes=True), stream.size


def _ipc_stream(batches: Sequence[pa.RecordBatch], options: pa.ipc.IpcWriteOptions) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, ENVELOPE_BATCH_SCHEMA, options=options) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue()


@dataclass(frozen=True)
class Segment:
    """A decoded segment: the envelopes of offsets ``first_offset .. first_offset+n-1``."""

    first_offset: int
    table: pa.Table

    @classmethod
    def decode(cls, first_offset: int, raw_size: int, blob: bytes) -> Segment:
        if blob[:4] == _IPC_MAGIC:
            return cls(first_offset, pa.ipc.open_stream(blob).read_all())
        if blob[:4] == _FRAMED_MAGIC:
            frame = pa.py_buffer(blob).slice(len(_FRAMED_MAGIC))
            stream = pa.decompress(frame, decompressed_size=raw_size, codec=_LZ4)
            return cls(first_offset, pa.ipc.open_stream(stream).read_all())
        return cls(first_offset, _legacy_table(raw_size, blob))

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def received_at(self) -> list[int]:
        return self.table["received_at"].cast(pa.int64()).to_pylist()


def _legacy_table(raw_size: int, blob: bytes) -> pa.Table:
    """A segment of the JSON-payload format as a table (workspaces from before)."""
    raw = pa.decompress(blob, decompressed_size=raw_size, codec=_LEGACY_CODEC, asbytes=True)
    (length,) = _HEADER_LENGTH.unpack_from(raw)
    position = _HEADER_LENGTH.size + length
    _ids, _event_ts, received, lengths = orjson.loads(raw[_HEADER_LENGTH.size : position])
    batches = []
    for size, received_us in zip(lengths, received, strict=True):
        envelope = orjson.loads(raw[position : position + size])
        position += size
        batches.append(envelopes_to_batch([envelope], received_at=received_us).batch)
    return pa.Table.from_batches(batches, schema=ENVELOPE_BATCH_SCHEMA)


@dataclass(frozen=True)
class ReadChunk:
    """Consecutive buffered events (offsets ``first_offset .. last_offset``) as one table of
    :data:`ENVELOPE_BATCH_SCHEMA` (the archiver's and streaming consumers' fast path)."""

    first_offset: int
    last_offset: int
    table: pa.Table

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def message_ids(self) -> list[str]:
        return self.table["message_id"].to_pylist()

    def envelopes(self) -> list[dict[str, Any]]:
        """The envelopes as dicts (one Python object per event: for small reads)."""
        return batch_envelopes(self.table)

    @property
    def payloads(self) -> pa.StringArray:
        """The envelopes as JSON text, one string per event."""
        return pa.array([orjson.dumps(e).decode() for e in self.envelopes()], pa.string())

    def events(self) -> list[BufferedEvent]:
        event_ts = self.table["timestamp"].cast(pa.int64()).to_pylist()
        received = self.table["received_at"].cast(pa.int64()).to_pylist()
        return [
            BufferedEvent(
                self.first_offset + i,
                str(envelope["messageId"]),
                _from_micros(event_ts[i]),
                _from_micros(received[i]),
                orjson.dumps(envelope),
            )
            for i, envelope in enumerate(self.envelopes())
        ]


def _chunk_of(parts: list[tuple[Segment, int, int]]) -> ReadChunk | None:
    """Join slices ``[start, stop)`` of segments into one chunk."""
    if not parts:
        return None
    tables = [segment.table.slice(start, stop - start) for segment, start, stop in parts]
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    first_segment, first_start, _ = parts[0]
    first = first_segment.first_offset + first_start
    return ReadChunk(first, first + table.num_rows - 1, table)


#: Appends of at least this many events (in-process ``track_many``) are made Arrow batches
#: one by one and joined by Arrow; smaller ones (HTTP requests) have their column lists
#: joined first, so that a group of many small requests pays Arrow's fixed cost once.
_ARROW_JOIN_MIN_ROWS = 1_000


def _group_batch(batches: list[EnvelopeBatch]) -> tuple[pa.RecordBatch, list[str]]:
    """A group commit's envelopes as one Arrow record batch, and their messageIds.

    Joining large appends as Python lists (a new list per column, every value's reference
    count touched again long after the append built it) cost the writer ~1 CPU-µs per event,
    under the GIL the callers validating the next events need; Arrow joins the built
    batches' buffers without touching a Python object.
    """
    if len(batches) == 1 or min(map(len, batches)) < _ARROW_JOIN_MIN_ROWS:
        combined = EnvelopeBatch.concat(batches)
    else:
        combined = EnvelopeBatch.concat_built(batches)
    return combined.batch, combined.message_ids


def _retain_arrow_memory() -> None:
    """Have pyarrow keep freed memory for reuse, as the archiver does
    (:func:`tripwire.ingest.archiver.use_retaining_memory_pool`).

    Each group commit allocates and frees megabytes (the Arrow batch, the IPC stream and its
    LZ4 frame); with pyarrow's default pool (mimalloc) they went back to the kernel between
    commits and were page-faulted in again: ~1 CPU-µs of kernel time per event in the writer
    and Arrow's compression threads, measured in-process at 10,000-event batches.
    """
    from tripwire.ingest.archiver import use_retaining_memory_pool  # (it imports this module)

    use_retaining_memory_pool()


class Buffer:
    """The durable buffer of one workspace (thread-safe; one writer thread per instance).

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with Buffer(pathlib.Path(tmp) / "buffer.db") as buffer:
    ...         event = {"messageId": "m1", "type": "track", "event": "Signed Up",
    ...                  "timestamp": "2026-11-01T10:00:00Z"}
    ...         first = buffer.append([event])
    ...         again = buffer.append([event])
    ...         batch = buffer.read("monitor", 10)
    >>> (first.stored, again.duplicates, [row.message_id for row in batch])
    (1, 1, ['m1'])
    """

    def __init__(
        self,
        path: Path,
        *,
        dedupe_window_days: float = DEFAULT_CONFIG["ingest"]["dedupe_window_days"],
        retention_days: float = DEFAULT_CONFIG["retention"]["buffer_days"],
        high_water_mark: int = DEFAULT_CONFIG["ingest"]["high_water_mark"],
        max_group_events: int = 100_000,
    ) -> None:
        self.path = Path(path)
        self.dedupe_window_us = int(dedupe_window_days * _DAY_US)
        self.retention_us = int(retention_days * _DAY_US)
        self.high_water_mark = int(high_water_mark)
        self.max_group_events = max_group_events
        self._control = connect_sqlite(self.path, check_same_thread=False)
        self._control_lock = threading.Lock()
        with self._control_lock:
            self._control.executescript(_SCHEMA + dedupe.SCHEMA)
            self._migrate_dedupe_table()
            self._control.execute(
                "INSERT OR IGNORE INTO consumers(name, committed, required, updated_at)"
                " VALUES (?, 0, 1, ?)",
                (ARCHIVER, now_micros()),
            )
        self._queue: queue.SimpleQueue[_Pending | _Preload | None] = queue.SimpleQueue()
        self._closed = False
        self._stats_lock = threading.Lock()
        self._appends = self._commits = self._events = self._checkpoints = 0
        self._wal_restarts = 0
        self._restart_wal = threading.Event()  # set by the checkpointer, done by the writer
        self._depth_cache: tuple[float, int] = (-1.0, 0)
        self._last_segment: Segment | None = None
        self._keys = dedupe.KeyIndex()  # the writer's index of the dedupe blocks
        _retain_arrow_memory()
        self._writer = threading.Thread(
            target=self._write_loop, name="tripwire-buffer", daemon=True
        )
        self._writer.start()
        self._checkpoint_stop = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="tripwire-buffer-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def _migrate_dedupe_table(self) -> None:
        """Workspaces from before dedupe blocks: move their per-key rows into blocks."""
        con = self._control
        if con.execute("SELECT 1 FROM sqlite_master WHERE name = 'dedupe'").fetchone() is None:
            return
        con.execute("BEGIN IMMEDIATE")
        try:
            dedupe.migrate_key_table(con)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    @classmethod
    def for_workspace(cls, workspace: Workspace) -> Buffer:
        """The buffer at ``workspace.buffer_path`` with the workspace's settings."""
        return cls(
            workspace.buffer_path,
            dedupe_window_days=float(workspace.setting("ingest", "dedupe_window_days")),
            retention_days=float(workspace.setting("retention", "buffer_days")),
            high_water_mark=int(workspace.setting("ingest", "high_water_mark")),
        )

    # -- writing -----------------------------------------------------------------------

    def append(self, envelopes: Sequence[Mapping[str, Any]]) -> AppendResult:
        """Append normalized envelopes; returns once they are durable (fsynced).

        Duplicates (same ``messageId`` within the dedupe window) are not stored again and are
        reported in the result. Thread-safe; concurrent calls share one commit.
        """
        return self.submit(envelopes).result()

    def submit(self, envelopes: Sequence[Mapping[str, Any]]) -> Future[AppendResult]:
        """Like :meth:`append` but returns a future (``asyncio.wrap_future`` it in servers)."""
        return self.submit_batch(encode_envelopes(envelopes))

    def append_batch(self, batch: EnvelopeBatch) -> AppendResult:
        """Append an envelope batch (:func:`tripwire.events.columns.normalize_batch` or
        :func:`encode_envelopes`); blocks until durable."""
        return self.submit_batch(batch).result()

    def submit_batch(self, batch: EnvelopeBatch) -> Future[AppendResult]:
        """Queue an envelope batch for the next group commit; the future resolves once it is
        durable."""
        if self._closed:
            raise BufferClosed(f"buffer {self.path} is closed")
        pending = _Pending(batch)
        if not len(batch):
            pending.future.set_result(AppendResult(stored=0, duplicates=0))
            return pending.future
        self._queue.put(pending)
        return pending.future

    def preload_keys(self) -> None:
        """Have the writer thread load its dedupe index now rather than at the first append
        (~0.5 CPU-s per million keys in the window): for processes that will write."""
        if not self._closed:
            self._queue.put(_PRELOAD)

    def _preload(self, connection: sqlite3.Connection) -> None:
        """Load the dedupe index in a read transaction (a commit catches up from there)."""
        try:
            connection.execute("BEGIN")
            try:
                self._keys.catch_up(connection, now_micros() - self.dedupe_window_us)
            finally:
                connection.execute("COMMIT")
        except sqlite3.Error:
            self._keys = dedupe.KeyIndex()  # a hint only: the first append loads it instead

    def _write_loop(self) -> None:
        connection = connect_sqlite(self.path)
        connection.execute("PRAGMA wal_autocheckpoint = 0")  # :meth:`_checkpoint_loop` does it
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                if isinstance(first, _Preload):
                    self._preload(connection)
                    continue
                group = [first]
                size = len(first.batch)
                stop = False
                while size < self.max_group_events:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    if isinstance(item, _Preload):  # this commit loads the index anyway
                        continue
                    group.append(item)
                    size += len(item.batch)
                if self._restart_wal.is_set():
                    self._restart_wal.clear()
                    self._restart_wal_before_commit(connection)
                self._commit_group(connection, group)
                if stop:
                    return
        finally:
            connection.close()

    def _checkpoint_loop(self) -> None:
        """Checkpoint the WAL after new commits, off the writer's commit path (module doc)."""
        connection = connect_sqlite(self.path)
        try:
            ((page_size,),) = connection.execute("PRAGMA page_size").fetchall()
            done = 0
            while not self._checkpoint_stop.wait(CHECKPOINT_INTERVAL_S):
                with self._stats_lock:
                    commits = self._commits
                if commits == done:
                    continue
                try:
                    ((_busy, frames, _copied),) = connection.execute(
                        "PRAGMA wal_checkpoint(PASSIVE)"
                    ).fetchall()  # (fetchall: no statement left open, holding a snapshot)
                except sqlite3.Error:  # e.g. another process is checkpointing: next tick
                    continue
                done = commits
                with self._stats_lock:
                    self._checkpoints += 1
                if frames * page_size > WAL_RESTART_BYTES:
                    self._restart_wal.set()
        finally:
            connection.close()

    def _restart_wal_before_commit(self, connection: sqlite3.Connection) -> None:
        """Checkpoint on the writer's own connection, between two commits, so that the
        next commit starts the WAL over from its beginning.

        Why: SQLite restarts the WAL only when a write transaction begins with every frame
        already copied into the database, and the background checkpoint never gets there
        under sustained load (commits land while it copies), so the WAL would grow without
        bound (≈ 4 MB/s at 15,000 events/s over HTTP) and every commit would append to it.
        Here no commit can land meanwhile: the checkpoint copies what the last background
        one left (≤ :data:`CHECKPOINT_INTERVAL_S` of commits) and fsyncs the database, a
        few ms once per :data:`WAL_RESTART_BYTES` of WAL. Best effort: a reader still on
        an old snapshot, or another process's writer, leaves the WAL as it is (asked
        again at the next background checkpoint).
        """
        try:
            ((busy, frames, copied),) = connection.execute(
                "PRAGMA wal_checkpoint(PASSIVE)"
            ).fetchall()
        except sqlite3.Error:
            return
        if not busy and frames == copied:
            with self._stats_lock:
                self._wal_restarts += 1

    def _commit_group(self, connection: sqlite3.Connection, group: list[_Pending]) -> None:
        try:
            results, block = self._store_group(connection, group)
        except BaseException as error:  # every waiting caller must learn about the failure
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            self._keys = dedupe.KeyIndex()  # it may hold part of a catch-up: reload it
            for pending in group:
                pending.future.set_exception(error)
            return
        with self._stats_lock:
            self._appends += len(group)
            self._commits += 1
            self._events += sum(r.stored for r in results)
        for pending, result in zip(group, results, strict=True):
            pending.future.set_result(result)
        # After the acknowledgements: the group is durable, and only this thread's next
        # commit reads the index (≈ 0.2–0.5 ms per commit no caller waits for any more).
        self._index_block(connection, block)

    def _write_group(
        self, connection: sqlite3.Connection, group: list[_Pending]
    ) -> list[AppendResult]:
        """:meth:`_store_group`, then the dedupe index updated with its block (what
        :meth:`_commit_group` does, minus resolving the futures)."""
        results, block = self._store_group(connection, group)
        self._index_block(connection, block)
        return results

    def _index_block(self, connection: sqlite3.Connection, block: _StoredBlock | None) -> None:
        """Add a committed group's dedupe block to the writer's index."""
        if block is None:
            return
        try:
            self._keys.add(connection, block.window_start, block.block_id, block.hashes)
        except BaseException:
            # The group is durable (and acknowledged); an index that may have missed the
            # block is rebuilt from the blocks at the next commit.
            self._keys = dedupe.KeyIndex()

    def _store_group(
        self, connection: sqlite3.Connection, group: list[_Pending]
    ) -> tuple[list[AppendResult], _StoredBlock | None]:
        """Store the group's envelopes whose ids were not stored within the dedupe window
        (nor earlier in the group) as one segment, record their ids in one dedupe block,
        and commit: one transaction, one fsync. Returns each append's result and the block
        committed (None when every id was a duplicate), for :meth:`_index_block`."""
        record_batch, message_ids = _group_batch([pending.batch for pending in group])
        hashes = dedupe.key_hashes(record_batch.column("message_id"))
        now = now_micros()
        window_start = now - self.dedupe_window_us
        connection.execute("BEGIN IMMEDIATE")
        keys = self._keys
        keys.catch_up(connection, window_start)
        duplicates = dedupe.duplicate_positions(connection, keys, hashes, message_ids, window_start)
        (offset,) = connection.execute(_LAST_OFFSET_SQL).fetchone()
        first_stored = offset + 1
        results = []
        start = found = 0
        for pending in group:
            stop = start + len(pending.batch)
            mine = []
            while found < len(duplicates) and duplicates[found] < stop:
                mine.append(duplicates[found] - start)
                found += 1
            count = stop - start - len(mine)
            results.append(
                AppendResult(
                    stored=count,
                    duplicates=len(mine),
                    duplicate_indexes=tuple(mine),
                    first_offset=offset + 1 if count else None,
                    last_offset=offset + count if count else None,
                )
            )
            offset += count
            start = stop
        block = None
        if duplicates:
            keep = np.ones(len(message_ids), bool)
            keep[duplicates] = False
            kept = np.flatnonzero(keep)
            record_batch = record_batch.take(pa.array(kept))
            hashes = hashes[kept]
            message_ids = [message_ids[i] for i in kept.tolist()]
        if message_ids:
            data, raw_size = encode_segment([record_batch])
            received = pc.min_max(record_batch.column("received_at"))
            connection.execute(
                "INSERT INTO segments(first_offset, last_offset, min_received_at,"
                " max_received_at, raw_size, data) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    first_stored,
                    offset,
                    received["min"].value,
                    received["max"].value,
                    raw_size,
                    data,
                ),
            )
            connection.execute("UPDATE log SET last_offset = ? WHERE id = 1", (offset,))
            block = dedupe.append_block(connection, now, hashes, message_ids)
        connection.execute("COMMIT")
        stored = None if block is None else _StoredBlock(block, hashes, window_start)
        return results, stored

    def writer_stats(self) -> WriterStats:
        with self._stats_lock:
            return WriterStats(
                appends=self._appends,
                commits=self._commits,
                events=self._events,
                checkpoints=self._checkpoints,
                wal_restarts=self._wal_restarts,
            )

    # -- reading and consumers --------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._control_lock:
            return self._control.execute(sql, params).fetchall()

    def read_after(self, after_offset: int, max_rows: int) -> list[BufferedEvent]:
        """Up to ``max_rows`` rows with offset > ``after_offset``, in offset order."""
        chunk = self.read_chunk(after_offset, max_rows)
        return chunk.events() if chunk is not None else []

    def read_chunk(self, after_offset: int, max_rows: int) -> ReadChunk | None:
        """Up to ``max_rows`` consecutive events after ``after_offset`` as one Arrow table
        (None when there are none): the archiver's fast path."""
        if max_rows < 1:
            return None
        parts: list[tuple[Segment, int, int]] = []
        wanted = max_rows
        with self._control_lock:
            cursor = self._control.execute(
                "SELECT first_offset, raw_size, data FROM segments WHERE last_offset > ?"
                " ORDER BY first_offset",
                (after_offset,),
            )
            try:
                for first_offset, raw_size, blob in cursor:
                    segment = self._decode(first_offset, raw_size, blob)
                    start = max(0, after_offset + 1 - first_offset)
                    stop = min(len(segment), start + wanted)
                    parts.append((segment, start, stop))
                    wanted -= stop - start
                    if not wanted:
                        break
            finally:
                cursor.close()
        return _chunk_of(parts)

    def _decode(self, first_offset: int, raw_size: int, blob: bytes) -> Segment:
        """Decode a segment, reusing the last one decoded (segments never change, and a
        consumer reading small batches would otherwise decode the same segment many times)."""
        cached = self._last_segment
        if cached is not None and cached.first_offset == first_offset:
            return cached
        segment = Segment.decode(first_offset, raw_size, blob)
        self._last_segment = segment
        return segment

    def register_consumer(self, name: str, *, required: bool = False) -> int:
        """Create consumer ``name`` (starting at the beginning of the log) if it does not exist.

        Returns its committed offset. A required consumer holds back pruning and counts in
        :meth:`depth`.
        """
        if not name:
            raise BufferError("consumer name must not be empty")
        with self._control_lock:
            self._control.execute(
                "INSERT OR IGNORE INTO consumers(name, committed, required, updated_at)"
                " VALUES (?, 0, ?, ?)",
                (name, int(required), now_micros()),
            )
            if required:
                self._control.execute("UPDATE consumers SET required = 1 WHERE name = ?", (name,))
            (committed,) = self._control.execute(
                "SELECT committed FROM consumers WHERE name = ?", (name,)
            ).fetchone()
        return int(committed)

    def committed(self, name: str) -> int:
        """The last offset consumer ``name`` has committed (0 for a new consumer)."""
        rows = self._query("SELECT committed FROM consumers WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else 0

    def read(self, consumer: str, max_rows: int) -> list[BufferedEvent]:
        """The next rows for ``consumer`` (registered on first use), without committing."""
        return self.read_after(self.register_consumer(consumer), max_rows)

    def commit(self, consumer: str, offset: int) -> None:
        """Record that ``consumer`` has processed everything up to and including ``offset``."""
        if offset < 0 or offset > self.last_offset():
            raise BufferError(
                f"cannot commit {consumer!r} at offset {offset}: the log ends at {self.last_offset()}"
            )
        self.register_consumer(consumer)
        with self._control_lock:
            self._control.execute(
                "UPDATE consumers SET committed = ?, updated_at = ? WHERE name = ?",
                (offset, now_micros(), consumer),
            )

    def rewind(
        self, consumer: str, *, offset: int | None = None, at: datetime | None = None
    ) -> int:
        """Make ``consumer`` read again from ``offset`` (inclusive) or from the first row
        received at or after ``at``. Returns the new committed offset (next read starts after it).

        Raises :class:`BufferError` when the target lies before the oldest retained row.
        """
        if (offset is None) == (at is None):
            raise BufferError("rewind needs exactly one of offset= or at=")
        last = self.last_offset()
        if at is not None:
            target = self.offset_at(at)
        else:
            assert offset is not None
            target = offset
            first = self.first_offset()
            if target < 1 or target > last + 1:
                raise BufferError(
                    f"cannot rewind {consumer!r} to offset {offset}: offsets run from 1 to {last}"
                )
            if first is not None and target < first and self._has_pruned():
                raise BufferError(
                    f"cannot rewind {consumer!r} to offset {offset}: it was pruned"
                    f" (oldest retained offset is {first})"
                )
        self.commit(consumer, target - 1)
        return target - 1

    def offset_at(self, at: datetime) -> int:
        """The first offset received at or after ``at`` (the next offset if none yet).

        Raises :class:`BufferError` when rows received at or after ``at`` may have been pruned.
        """
        at_us = _micros(at, "at", 0)
        if self._has_pruned() and self._oldest_received() > at_us:
            raise BufferError(
                f"cannot go back to {at.isoformat()}: rows received before"
                f" {_from_micros(self._oldest_received()).isoformat()} were pruned"
            )
        candidates = self._query(
            "SELECT first_offset, raw_size, data FROM segments WHERE max_received_at >= ?"
            " ORDER BY first_offset LIMIT 1",
            (at_us,),
        )
        if not candidates:
            return self.last_offset() + 1
        segment = Segment.decode(*candidates[0])
        index = int(np.argmax(np.asarray(segment.received_at) >= at_us))
        return segment.first_offset + index

    def _has_pruned(self) -> bool:
        """True when rows were deleted from the start of the log (offsets begin at 1)."""
        first = self.first_offset()
        return first > 1 if first is not None else self.last_offset() > 0

    def _oldest_received(self) -> int:
        rows = self._query("SELECT min(min_received_at) FROM segments")
        return int(rows[0][0] or 0)

    def first_offset(self) -> int | None:
        rows = self._query("SELECT min(first_offset) FROM segments")
        return None if rows[0][0] is None else int(rows[0][0])

    def last_offset(self) -> int:
        rows = self._query(_LAST_OFFSET_SQL)
        return int(rows[0][0])

    def depth(self) -> int:
        """Rows not yet processed by the slowest required consumer (the archiver)."""
        rows = self._query(
            f"SELECT ({_LAST_OFFSET_SQL}) - coalesce("
            f"(SELECT min(committed) FROM consumers WHERE required = 1), ({_LAST_OFFSET_SQL}))"
        )
        return int(rows[0][0])

    def over_high_water(self, *, max_age_s: float = 0.25) -> bool:
        """True when :meth:`depth` exceeds the high-water mark (cached ``max_age_s``)."""
        checked, depth = self._depth_cache
        if time.monotonic() - checked > max_age_s:
            depth = self.depth()
            self._depth_cache = (time.monotonic(), depth)
        return depth > self.high_water_mark

    def status(self) -> BufferStatus:
        """A consistent snapshot (one read transaction) of the log and its consumers."""
        with self._control_lock:
            con = self._control
            con.execute("BEGIN")
            try:
                (last,) = con.execute(_LAST_OFFSET_SQL).fetchone()
                rows, first = con.execute(
                    "SELECT coalesce(sum(last_offset - first_offset + 1), 0), min(first_offset)"
                    " FROM segments"
                ).fetchone()
                consumer_rows = con.execute(
                    "SELECT name, committed, required, updated_at FROM consumers ORDER BY name"
                ).fetchall()
            finally:
                con.execute("COMMIT")
        consumers = tuple(
            ConsumerStatus(
                name=name,
                committed=int(committed),
                lag=last - int(committed),
                required=bool(required),
                updated_at=_from_micros(updated),
            )
            for name, committed, required, updated in consumer_rows
        )
        required_positions = [c.committed for c in consumers if c.required]
        size = sum(
            p.stat().st_size
            for p in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
            if p.exists()
        )
        return BufferStatus(
            rows=int(rows),
            first_offset=None if first is None else int(first),
            last_offset=int(last),
            depth=int(last) - min(required_positions, default=int(last)),
            size_bytes=size,
            consumers=consumers,
        )

    # -- pruning -----------------------------------------------------------------------------

    def prune(self, *, now: datetime | None = None) -> PruneResult:
        """Delete rows older than retention that every required consumer has processed,
        and dedupe keys older than the dedupe window.

        Rows are stored in segments (one per group commit) and pruned a whole segment at a
        time: a segment goes when its newest row is past retention and fully consumed.
        """
        now_us = _micros(now, "now", 0) if now is not None else now_micros()
        with self._control_lock:
            self._control.execute("BEGIN IMMEDIATE")
            try:
                (safe,) = self._control.execute(
                    "SELECT coalesce(min(committed), 0) FROM consumers WHERE required = 1"
                ).fetchone()
                condition = "WHERE max_received_at < ? AND last_offset <= ?"
                bounds = (now_us - self.retention_us, safe)
                (events,) = self._control.execute(
                    f"SELECT coalesce(sum(last_offset - first_offset + 1), 0) FROM segments {condition}",
                    bounds,
                ).fetchone()
                self._control.execute(f"DELETE FROM segments {condition}", bounds)
                keys = dedupe.prune_blocks(self._control, now_us - self.dedupe_window_us)
                self._control.execute("COMMIT")
            except BaseException:
                self._control.execute("ROLLBACK")
                raise
        return PruneResult(events=events, dedupe_keys=keys)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Finish every pending append (durably), stop the writer and close connections."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._writer.join()
        self._checkpoint_stop.set()
        self._checkpointer.join()
        with self._control_lock:
            self._control.close()

    def __enter__(self) -> Buffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
