"""The archiver: the buffer consumer that turns buffered envelopes into the Parquet lake.

It reads the buffer in chunks (offset order) and writes each chunk's rows into the lake's
date × event partitions, then commits the chunk's last offset. Reading, converting and
writing overlap (chunk k+2, k+1 and k at once, see :meth:`Archiver._archive`); commits stay
in offset order.

Exactly once, across crashes:

* A chunk's files are named after its offset range, ``part-<first>-<last>.parquet`` (12
  digits each), written to a temporary name, fsynced and renamed into place. The offset is
  committed only after every file of the chunk is in place.
* Before archiving, :meth:`Archiver.recover` deletes every file whose range starts after the
  committed offset: those are the remains of a chunk that crashed between writing and
  committing; the chunk is then archived again. So a crash anywhere leaves the lake with
  each buffered row exactly once after the next run.
* Compaction merges runs of small files of one partition into one file named after the
  union of their ranges, renamed into place *before* the originals are deleted. A crash in
  between leaves files whose range lies inside another file's range of the same partition;
  recovery deletes those (chunk ranges never overlap, so containment means "merged").

Only one archiver runs per lake at a time (an exclusive ``flock`` on ``.archiver.lock``).
Files not named by the archiver (e.g. written by :func:`tripwire.store.lake.write_events`
directly) are left alone.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from tripwire.store.buffer import ARCHIVER, Buffer, ReadChunk
from tripwire.store.lake import (
    ENVELOPE_COLUMNS,
    PROPERTY_TYPES_FILE,
    PartitionedBatch,
    PropertyTypes,
    envelope_batch_to_partitions,
    events_dir,
    fsync_directory,
    gather_partitions,
    write_file_atomically,
    write_table,
)
from tripwire.store.workspace import Workspace

#: ``part-<first offset>-<last offset>.parquet``
ARCHIVE_FILE = re.compile(r"^part-(\d{12})-(\d{12})\.parquet$")
LOCK_FILE = ".archiver.lock"

#: Rows per chunk: large enough that JSON parsing and Parquet writing run vectorised and
#: files are not tiny, small enough to bound memory (~1 KB per envelope in flight).
DEFAULT_CHUNK_ROWS = 200_000
#: Threads writing one chunk's partition files (the machine target is 2 cores).
WRITE_THREADS = 2
#: Files below this size are merged by :meth:`Archiver.compact`.
DEFAULT_SMALL_FILE_BYTES = 16 * 1024 * 1024
#: How long jemalloc keeps freed Arrow memory for reuse (see :func:`use_retaining_memory_pool`).
MEMORY_DECAY_MS = 10_000

_POOL_LOCK = threading.Lock()


def use_retaining_memory_pool() -> str:
    """Make pyarrow's default memory pool one that keeps freed memory for reuse (once per
    process); returns the pool's backend name.

    Every chunk allocates and frees a few hundred MB (decoded segments, parsed JSON, the
    partition-ordered table). pyarrow's default pool, mimalloc, returns freed memory to the
    kernel after ~10 ms and the next chunk page-faults it back in (transparent huge pages:
    2 MB zeroed per fault); measured, that kernel time was 20-50% of the archiver's CPU.
    jemalloc with a decay of :data:`MEMORY_DECAY_MS` reuses the pages instead and still
    returns them once the archiver has been idle for a while. Where pyarrow was built without
    jemalloc the default pool stays. (Arrow's C++ code that does not take pyarrow's pool,
    e.g. the Parquet encoder's buffers, keeps the process default, set only by
    ``ARROW_DEFAULT_MEMORY_POOL`` before pyarrow is imported.)

    Not covered: allocations of 8 MB or more (a 200,000-row chunk's properties and context
    texts, ~35 MB each) go to jemalloc's arena for oversized requests, which purges at once
    whatever the decay set here; measured with pyarrow 26, a 16 MB or 120 MB buffer
    page-faults in full on every allocation, a 4 MB one only the first time. Only
    ``JE_ARROW_MALLOC_CONF=dirty_decay_ms:-1`` in the environment before pyarrow loads
    (setting it later has no effect) keeps them, and then nothing is ever returned.
    """
    with _POOL_LOCK:
        pool = pa.default_memory_pool()
        if pool.backend_name != "jemalloc" and "jemalloc" in pa.supported_memory_backends():
            pa.jemalloc_set_decay_ms(MEMORY_DECAY_MS)  # affects the arenas made from now on
            pool = pa.jemalloc_memory_pool()
            pa.set_memory_pool(pool)
        return pool.backend_name


class _Span(NamedTuple):
    """A chunk's offset range and row count (what is left of it while its files are written)."""

    first_offset: int
    last_offset: int
    rows: int


class ArchiverBusy(RuntimeError):
    """Another archiver holds the lake's lock."""


@dataclass(frozen=True)
class ArchiveResult:
    """What one :meth:`Archiver.run` did."""

    events: int
    chunks: int
    files: int
    committed_offset: int
    recovered_files: int
    pruned_events: int
    seconds: float


@dataclass(frozen=True)
class CompactResult:
    partitions: int
    files_merged: int
    files_written: int
    recovered_files: int


@dataclass(frozen=True)
class ArchiveFile:
    path: Path
    first: int
    last: int

    @classmethod
    def parse(cls, path: Path) -> ArchiveFile | None:
        match = ARCHIVE_FILE.match(path.name)
        return cls(path, int(match[1]), int(match[2])) if match else None


def archive_file_name(first: int, last: int) -> str:
    """The deterministic file id of an offset range.

    >>> archive_file_name(1, 200000)
    '000000000001-000000200000'
    """
    return f"{first:012d}-{last:012d}"


class Archiver:
    """Buffer → Parquet lake, exactly once (see the module docstring).

    ``after_write`` is called with the chunk's offset range after its files are in place and
    before the offset is committed (tests use it to simulate a crash at the worst moment).
    """

    def __init__(
        self,
        buffer: Buffer,
        lake_dir: Path,
        *,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        consumer: str = ARCHIVER,
        after_write: Callable[[int, int], None] | None = None,
    ) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
        self.buffer = buffer
        self.lake_dir = Path(lake_dir)
        self.chunk_rows = chunk_rows
        self.consumer = consumer
        self.after_write = after_write
        buffer.register_consumer(consumer, required=True)

    @classmethod
    def for_workspace(
        cls, workspace: Workspace, buffer: Buffer, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
    ) -> Archiver:
        """The archiver of ``workspace``'s lake reading ``buffer``."""
        return cls(buffer, workspace.lake_dir, chunk_rows=chunk_rows)

    # -- locking and recovery -----------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        root = events_dir(self.lake_dir)
        root.mkdir(parents=True, exist_ok=True)
        with open(root / LOCK_FILE, "a+") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as error:
                raise ArchiverBusy(f"another archiver is running on {self.lake_dir}") from error
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _partitions(self) -> dict[Path, list[ArchiveFile]]:
        partitions: dict[Path, list[ArchiveFile]] = {}
        for path in events_dir(self.lake_dir).glob("date=*/event=*/part-*.parquet"):
            parsed = ArchiveFile.parse(path)
            if parsed is not None:
                partitions.setdefault(path.parent, []).append(parsed)
        for files in partitions.values():
            files.sort(key=lambda f: (f.first, -f.last))
        return partitions

    def recover(self) -> int:
        """Delete uncommitted and superseded files; returns how many were deleted.

        Call with the lock held (``run`` and ``compact`` do).
        """
        committed = self.buffer.committed(self.consumer)
        removed = 0
        for tmp in events_dir(self.lake_dir).glob("date=*/event=*/*.parquet.tmp"):
            tmp.unlink()
            removed += 1
        for directory, files in self._partitions().items():
            doomed = [f for f in files if f.first > committed]
            kept = [f for f in files if f.first <= committed]
            # Sorted by (first, -last): a file contained in an earlier one was merged into it.
            widest_last = 0
            for file in kept:
                if file.last <= widest_last:
                    doomed.append(file)
                widest_last = max(widest_last, file.last)
            for file in doomed:
                file.path.unlink()
            if doomed:
                fsync_directory(directory)
            removed += len(doomed)
        return removed

    # -- archiving ---------------------------------------------------------------------------

    def archive_chunk(self) -> tuple[int, int]:
        """Archive the next chunk (lock must be held); returns ``(events, files)``."""
        events, _, files = self._archive(max_chunks=1)
        return events, files

    def _archive(self, *, max_chunks: int | None) -> tuple[int, int, int]:
        """Archive chunks until the buffer is caught up (or ``max_chunks``), as a pipeline;
        returns ``(events, chunks, files)``. The lock must be held.

        Three stages overlap on the 2 cores, each mostly outside the GIL: a reader thread
        fetches and decodes chunk k+2 (SQLite, Arrow IPC) and gathers its rows into partition
        order, this thread converts chunk k+1 to lake rows (Arrow's JSON reader), and a
        writer thread writes chunk k's partitions
        (Parquet encoding and compression, fsync; itself on :data:`WRITE_THREADS` threads). Offsets
        are still committed one chunk at a time, in order, each only once all of its files
        are durable: a crash leaves at most uncommitted files, which :meth:`recover`
        deletes. The property types registry is saved before a chunk's files are written
        (it only ever grows, and the rows of a chunk re-archived after a crash meet the
        same types).
        """
        use_retaining_memory_pool()
        types = PropertyTypes(events_dir(self.lake_dir) / PROPERTY_TYPES_FILE)
        events = chunks = files = 0
        with (
            ThreadPoolExecutor(2, thread_name_prefix="archiver") as pool,
            ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="archiver-write") as writers,
        ):
            offset = self.buffer.committed(self.consumer)
            reading: Future[tuple[ReadChunk, PartitionedBatch] | None] | None = pool.submit(
                self._read, offset
            )
            writing: tuple[_Span, Future[list[Path]]] | None = None
            while reading is not None:
                read = reading.result()
                if read is None:
                    break
                chunk, gathered = read
                del read
                chunks += 1
                more = max_chunks is None or chunks < max_chunks
                reading = pool.submit(self._read, chunk.last_offset) if more else None
                try:
                    table = envelope_batch_to_partitions(gathered, types)
                    types.save()
                finally:  # the previous chunk is whole even if this one cannot be converted
                    if writing is not None:
                        files += self._commit(*writing)
                        events += writing[0].rows
                span = _Span(chunk.first_offset, chunk.last_offset, len(chunk))
                # only the lake rows are kept while they are written, not the buffer's rows
                del chunk, gathered
                writing = (span, pool.submit(self._write, span, table, writers))
                del table
            if writing is not None:
                files += self._commit(*writing)
                events += writing[0].rows
        return events, chunks, files

    def _read(self, after_offset: int) -> tuple[ReadChunk, PartitionedBatch] | None:
        """The reader stage: the next chunk, its rows gathered into partition order."""
        chunk = self.buffer.read_chunk(after_offset, self.chunk_rows)
        return None if chunk is None else (chunk, gather_partitions(chunk.table))

    def _write(self, chunk: _Span, table: pa.Table, writers: Executor) -> list[Path]:
        return write_table(
            self.lake_dir,
            table,
            file_id=archive_file_name(chunk.first_offset, chunk.last_offset),
            durable=True,
            threads=writers,
        )

    def _commit(self, chunk: _Span, writing: Future[list[Path]]) -> int:
        """Wait until ``chunk``'s files are in place, then commit its last offset; returns how
        many files it wrote. A failed write raises here, before the commit."""
        written = writing.result()
        if self.after_write is not None:
            self.after_write(chunk.first_offset, chunk.last_offset)
        self.buffer.commit(self.consumer, chunk.last_offset)
        return len(written)

    def run(self, *, max_chunks: int | None = None, prune: bool = True) -> ArchiveResult:
        """Recover, then archive until the buffer is caught up (or ``max_chunks``), then prune
        buffer rows that are past retention and archived."""
        started = time.perf_counter()
        with self._locked():
            recovered = self.recover()
            events, chunks, files = self._archive(max_chunks=max_chunks)
        pruned = self.buffer.prune().events if prune else 0
        return ArchiveResult(
            events=events,
            chunks=chunks,
            files=files,
            committed_offset=self.buffer.committed(self.consumer),
            recovered_files=recovered,
            pruned_events=pruned,
            seconds=time.perf_counter() - started,
        )

    def run_forever(self, stop: threading.Event, *, interval_s: float = 1.0) -> None:
        """Archive whenever there is something to archive until ``stop`` is set (for servers)."""
        while not stop.is_set():
            try:
                result = self.run()
            except ArchiverBusy:
                result = None
            if result is None or result.events == 0:
                stop.wait(interval_s)

    def rewind(self, offset: int) -> int:
        """Re-archive from ``offset``: deletes the lake files from there on and rewinds the
        consumer. ``offset`` must start a file (else rows before it would be lost or doubled).
        Returns the new committed offset."""
        with self._locked():
            self.recover()
            for files in self._partitions().values():
                for file in files:
                    if file.first < offset <= file.last:
                        raise ValueError(
                            f"offset {offset} falls inside {file.path} (offsets {file.first}–"
                            f"{file.last}); rewind the archiver to {file.first} or {file.last + 1}"
                        )
            committed = self.buffer.rewind(self.consumer, offset=offset)
            self.recover()
        return committed

    # -- compaction --------------------------------------------------------------------------

    def compact(self, *, small_file_bytes: int = DEFAULT_SMALL_FILE_BYTES) -> CompactResult:
        """Merge each partition's consecutive runs of small archived files into one file."""
        partitions = merged = written = 0
        with self._locked():
            recovered = self.recover()
            for directory, files in self._partitions().items():
                runs: list[list[ArchiveFile]] = [[]]
                for file in files:
                    if file.path.stat().st_size < small_file_bytes:
                        runs[-1].append(file)
                    elif runs[-1]:
                        runs.append([])
                runs = [run for run in runs if len(run) > 1]
                for run in runs:
                    self._merge(directory, run)
                    merged += len(run)
                    written += 1
                partitions += bool(runs)
        return CompactResult(
            partitions=partitions,
            files_merged=merged,
            files_written=written,
            recovered_files=recovered,
        )

    def _merge(self, directory: Path, run: list[ArchiveFile]) -> None:
        tables = [pq.read_table(file.path) for file in run]
        table = pa.concat_tables(tables, promote_options="default")
        flattened = sorted(c for c in table.column_names if c not in ENVELOPE_COLUMNS)
        table = table.select([*ENVELOPE_COLUMNS, *flattened])
        target = directory / f"part-{archive_file_name(run[0].first, run[-1].last)}.parquet"
        write_file_atomically(table, target, durable=True)
        for file in run:
            os.unlink(file.path)
        fsync_directory(directory)
