"""The buffer's deduplication keys: an append-only log of key blocks, indexed in memory.

Why not a table with a row per messageId (as before): SDKs send random UUIDs, so each
insert into a B-tree keyed by the id lands on a random leaf page. With ~80 keys per 4 KB
leaf, at 2 M keys a 10,000-event commit touches ~8,000 of ~25,000 leaves (~3 KB of WAL
per event, and reads of leaves the cache no longer held): measured 12–14 µs per event past
~600 k keys, growing with every key. Here a group commit appends *one* row, whatever its
size::

    dedupe_blocks(id, seen_at, keys, hashes, ids)

* ``hashes``: a 64-bit hash (:func:`key_hashes`) of each stored messageId, 8 bytes each;
* ``ids``: the messageIds themselves (a JSON array), for the exact check below;
* ``seen_at``: the commit's time (µs), which decides whether the block is still inside the
  dedupe window; ``id`` grows with every block ever written (``AUTOINCREMENT``: never reused,
  so a writer finds the blocks other processes appended since it last looked by ``id``).

Each writer keeps the hashes of the blocks inside the window in memory
(:class:`KeyIndex`: a hash table in numpy arrays, 24–40 bytes per key) and asks it which
of a group's hashes were seen. A hash that was seen is only a *candidate*: its block's ``ids``
are read and compared with the full messageId, so a hash collision can neither drop a
distinct event nor let a duplicate through; deduplication is exact, and costs a block read
only for actual retries (or a 2^-64 coincidence).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import numpy as np
import orjson
import pyarrow as pa

SCHEMA = """
CREATE TABLE IF NOT EXISTS dedupe_blocks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seen_at INTEGER NOT NULL,
    keys INTEGER NOT NULL,
    hashes BLOB NOT NULL,
    ids BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS dedupe_blocks_seen_at ON dedupe_blocks(seen_at);
"""

# -- the hash -------------------------------------------------------------------------------

_U64 = np.uint64
_LENGTH_FACTOR = _U64(0x9E3779B97F4A7C15)
_WORD_FACTOR = _U64(0xFF51AFD7ED558CCD)
_FINAL_FACTORS = (_U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB))
#: Ids up to this many UTF-8 bytes are hashed together; longer ones in a group of their own
#: (so that one long id does not widen every row's padded copy).
_SHORT_BYTES = 64


def key_hashes(message_ids: pa.Array | Sequence[str]) -> np.ndarray:
    """A 64-bit hash of each messageId's UTF-8 bytes (``uint64``; stable across processes
    and versions: it is stored).

    Vectorized over the batch: each id's bytes, zero-padded to whole 8-byte words, are
    folded word by word (xor, multiply, shift) into a seed made from the length, then
    mixed by SplitMix64's finalizer. ~0.1 µs per UUID instead of ~1 µs for a hashlib call.

    >>> hashes = key_hashes(["a", "a\\x00", "b", "a"])
    >>> hashes.dtype, len(set(hashes.tolist())), bool(hashes[0] == hashes[3])
    (dtype('uint64'), 3, True)
    """
    array = message_ids if isinstance(message_ids, pa.Array) else pa.array(message_ids, pa.string())
    if array.type != pa.string():
        array = array.cast(pa.string())
    n = len(array)
    _validity, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int32, count=n + 1, offset=4 * array.offset)
    offsets = offsets.astype(np.int64)
    data = (
        np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.empty(0, np.uint8)
    )
    lengths = np.diff(offsets)
    if n and int(lengths.max()) <= _SHORT_BYTES:
        return _hash_rows(data, offsets[:-1], lengths)
    result = np.empty(n, _U64)
    short = lengths <= _SHORT_BYTES
    for rows in (np.flatnonzero(short), np.flatnonzero(~short)):
        if len(rows):
            result[rows] = _hash_rows(data, offsets[rows], lengths[rows])
    return result


def _hash_rows(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The hashes of the byte strings ``data[starts[i] : starts[i] + lengths[i]]``."""
    n = len(starts)
    hashes = lengths.astype(_U64) * _LENGTH_FACTOR
    if not n:
        return hashes
    words = (lengths + 7) // 8
    width = 8 * int(words.max())
    if width:
        length, first = int(lengths[0]), int(starts[0])
        if int(starts[-1]) - first == (n - 1) * length and bool((lengths == length).all()):
            # ids of one length, consecutive in ``data`` (UUIDs): already a byte matrix
            matrix = np.zeros((n, width), np.uint8)
            matrix[:, :length] = data[first : first + n * length].reshape(n, length)
        else:
            padded = np.concatenate([data, np.zeros(width, np.uint8)])
            columns = np.arange(width)
            matrix = padded[starts[:, None] + columns]
            matrix[columns >= lengths[:, None]] = 0
        as_words = matrix.view("<u8")
        uniform = bool((words == words[0]).all())
        for j in range(as_words.shape[1]):
            mixed = hashes ^ as_words[:, j]
            mixed *= _WORD_FACTOR
            mixed ^= mixed >> _U64(32)
            hashes = mixed if uniform else np.where(words > j, mixed, hashes)
    for factor, shift in zip(_FINAL_FACTORS, (30, 27), strict=True):
        hashes ^= hashes >> _U64(shift)
        hashes *= factor
    hashes ^= hashes >> _U64(31)
    return hashes


# -- blocks in SQLite -----------------------------------------------------------------------


def append_block(
    connection: sqlite3.Connection, seen_at: int, hashes: np.ndarray, message_ids: list[str]
) -> int:
    """Record ``message_ids`` (with their ``hashes``) as seen at ``seen_at``; returns the
    block's id. Call inside the group commit's transaction."""
    cursor = connection.execute(
        "INSERT INTO dedupe_blocks(seen_at, keys, hashes, ids) VALUES (?, ?, ?, ?)",
        (seen_at, len(message_ids), hashes.astype("<u8").tobytes(), orjson.dumps(message_ids)),
    )
    block_id = cursor.lastrowid
    assert block_id is not None
    return block_id


def _block(connection: sqlite3.Connection, block_id: int, window_start: int) -> frozenset[str]:
    """The messageIds of a block if it is still inside the window (else none: a block
    pruned or seen before ``window_start`` is forgotten)."""
    row = connection.execute(
        "SELECT seen_at, ids FROM dedupe_blocks WHERE id = ?", (block_id,)
    ).fetchone()
    if row is None or row[0] < window_start:
        return frozenset()
    return frozenset(orjson.loads(row[1]))


def first_live_block(connection: sqlite3.Connection, window_start: int) -> int:
    """The smallest block id seen at or after ``window_start`` (blocks with smaller ids are
    all outside the window; one past the last block if none is inside)."""
    row = connection.execute(  # +seen_at: walk the ids, stop at the first one inside
        "SELECT id FROM dedupe_blocks WHERE +seen_at >= ? ORDER BY id LIMIT 1", (window_start,)
    ).fetchone()
    if row is not None:
        return int(row[0])
    (last,) = connection.execute("SELECT coalesce(max(id), 0) FROM dedupe_blocks").fetchone()
    return int(last) + 1


def duplicate_positions(
    connection: sqlite3.Connection,
    index: KeyIndex,
    hashes: np.ndarray,
    message_ids: Sequence[str],
    window_start: int,
) -> list[int]:
    """Positions (ascending) of the ``message_ids`` recorded in a block seen at or after
    ``window_start``, or equal to an id earlier in the list. Exact: hashes only select
    which blocks' full ids to compare."""
    duplicates: set[int] = set()
    blocks: dict[int, frozenset[str]] = {}
    for position, block_ids in index.candidates(hashes).items():
        message_id = message_ids[position]
        for block_id in block_ids:
            ids = blocks.get(block_id)
            if ids is None:
                ids = blocks[block_id] = _block(connection, block_id, window_start)
            if message_id in ids:
                duplicates.add(position)
                break
    ordered = np.sort(hashes)
    if len(ordered) > 1 and bool((ordered[1:] == ordered[:-1]).any()):
        seen: set[str] = set()
        for position, message_id in enumerate(message_ids):
            if message_id in seen:
                duplicates.add(position)
            elif position not in duplicates:
                seen.add(message_id)
    return sorted(duplicates)


def prune_blocks(connection: sqlite3.Connection, before: int) -> int:
    """Delete the blocks seen before ``before`` (µs); returns how many keys they held."""
    (keys,) = connection.execute(
        "SELECT coalesce(sum(keys), 0) FROM dedupe_blocks WHERE seen_at < ?", (before,)
    ).fetchone()
    connection.execute("DELETE FROM dedupe_blocks WHERE seen_at < ?", (before,))
    return int(keys)


def migrate_key_table(connection: sqlite3.Connection) -> int:
    """Move the keys of the former ``dedupe(message_id, seen_at)`` table (a row per key)
    into blocks (one per ``seen_at``: what one group commit recorded) and drop it.
    Returns how many keys moved. Call inside a write transaction."""
    exists = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dedupe'"
    ).fetchone()
    if exists is None:
        return 0
    moved = 0
    group: list[str] = []
    current: int | None = None
    rows = connection.execute("SELECT seen_at, message_id FROM dedupe ORDER BY seen_at")
    for seen_at, message_id in [*rows, (None, None)]:
        if seen_at != current and group:
            assert current is not None
            append_block(connection, current, key_hashes(group), group)
            moved += len(group)
            group = []
        current = seen_at
        if message_id is not None:
            group.append(message_id)
    connection.execute("DROP TABLE dedupe")
    return moved


# -- the in-memory index --------------------------------------------------------------------


#: The index's table is rebuilt (bigger, without expired keys) beyond this share of used
#: slots, to this share.
_MAX_LOAD = 0.5
_REBUILT_LOAD = 0.3
#: Keys still probing when this few are left continue one by one (a numpy pass costs
#: microseconds whatever its size; the last keys of a batch can sit in long runs).
_SCALAR_TAIL = 32


class KeyIndex:
    """The hashes of the dedupe blocks a writer knows, for one question: which blocks
    recorded each of these hashes?

    An open-addressing hash table in two numpy arrays (the hash, and the block's number in
    a list of block ids; linear probing), so that inserting or looking up a group's keys
    is a few vectorized passes with ~1 random memory access per key: a sorted array's
    binary search costs ~20 dependent cache misses per key past a few million keys.
    12 bytes per slot, 24–40 per key. When it fills up, it is rebuilt without the keys
    of blocks that left the window (:func:`first_live_block`). Only the writer thread
    uses it.
    """

    def __init__(self) -> None:
        self.last_block_id = 0  # every block up to this id is in the index (or expired)
        self.loaded = False
        self._hashes = np.zeros(0, _U64)
        self._blocks = np.full(0, -1, np.int32)  # -1: empty slot
        self._block_ids: list[int] = []  # block number -> dedupe_blocks.id
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def catch_up(self, connection: sqlite3.Connection, window_start: int) -> None:
        """Add the blocks appended (by any process) since this index last looked: all the
        blocks inside the window on first use. Call with the write lock held, so that no
        block can be appended between this and the caller's own."""
        if not self.loaded:
            (last,) = connection.execute(
                "SELECT coalesce(max(id), 0) FROM dedupe_blocks"
            ).fetchone()
            rows = connection.execute(
                "SELECT id, keys, hashes FROM dedupe_blocks WHERE id >= ? ORDER BY id",
                (first_live_block(connection, window_start),),
            ).fetchall()
            self.last_block_id = max(self.last_block_id, int(last))
            self.loaded = True
        else:
            rows = connection.execute(
                "SELECT id, keys, hashes FROM dedupe_blocks WHERE id > ? ORDER BY id",
                (self.last_block_id,),
            ).fetchall()
        if rows:
            block_ids, counts, blobs = zip(*rows, strict=True)
            hashes = np.frombuffer(b"".join(blobs), "<u8").astype(_U64)
            self._insert(connection, window_start, list(block_ids), list(counts), hashes)

    def add(
        self, connection: sqlite3.Connection, window_start: int, block_id: int, hashes: np.ndarray
    ) -> None:
        """Add a block this writer has just committed."""
        self._insert(connection, window_start, [block_id], [len(hashes)], hashes.astype(_U64))

    def candidates(self, hashes: np.ndarray) -> dict[int, list[int]]:
        """For each position of ``hashes`` whose hash some known block recorded: the ids of
        those blocks (usually there is no such position)."""
        found: dict[int, list[int]] = {}
        if not self._count or not len(hashes):
            return found
        capacity = len(self._hashes)
        slots = self._slots(hashes)
        pending = np.arange(len(hashes))
        while len(pending) > _SCALAR_TAIL:
            at = slots[pending]
            blocks = self._blocks[at]
            occupied = blocks >= 0
            match = occupied & (self._hashes[at] == hashes[pending])
            if match.any():
                for position, number in zip(
                    pending[match].tolist(), blocks[match].tolist(), strict=True
                ):
                    found.setdefault(position, []).append(self._block_ids[number])
            pending = pending[occupied]
            slots[pending] = (at[occupied] + 1) % capacity
        table, numbers = self._hashes, self._blocks
        for position in pending.tolist():  # the few in long runs: one by one
            slot, value = int(slots[position]), hashes[position]
            while (number := int(numbers[slot])) >= 0:
                if table[slot] == value:
                    found.setdefault(position, []).append(self._block_ids[number])
                slot = (slot + 1) % capacity
        return found

    def _slots(self, hashes: np.ndarray) -> np.ndarray:
        """Each hash's home slot (its high 32 bits scaled to the capacity)."""
        return (((hashes >> _U64(32)) * _U64(len(self._hashes))) >> _U64(32)).astype(np.int64)

    def _insert(
        self,
        connection: sqlite3.Connection,
        window_start: int,
        block_ids: list[int],
        counts: list[int],
        new_hashes: np.ndarray,
    ) -> None:
        """Add blocks (their ids, how many keys each, all their hashes in order)."""
        first = len(self._block_ids)
        new_numbers = np.repeat(np.arange(first, first + len(block_ids), dtype=np.int32), counts)
        self._block_ids.extend(block_ids)
        self.last_block_id = max(self.last_block_id, *block_ids)
        if self._count + len(new_hashes) <= _MAX_LOAD * len(self._hashes):
            self._place(new_hashes, new_numbers)
            self._count += len(new_hashes)
        else:
            self._rebuild(first_live_block(connection, window_start), new_hashes, new_numbers)

    def _rebuild(self, first_live: int, new_hashes: np.ndarray, new_numbers: np.ndarray) -> None:
        """A new, larger table of the keys of blocks from ``first_live`` on and the new ones.

        Built in one pass: keys sorted by home slot take, in that order, the first slot
        not before their home and after the previous key's (what inserting them one by one
        in that order would give), so a position is a running maximum. Keys pushed past the
        end wrap around through :meth:`_place`.
        """
        occupied = self._blocks >= 0
        hashes = np.concatenate([self._hashes[occupied], new_hashes])
        numbers = np.concatenate([self._blocks[occupied], new_numbers])
        block_ids = np.asarray(self._block_ids, np.int64)
        live_blocks = block_ids >= first_live
        live = live_blocks[numbers]
        if not live.all():
            hashes, numbers = hashes[live], numbers[live]
        renumber = (np.cumsum(live_blocks) - 1).astype(np.int32)
        numbers = renumber[numbers]
        self._block_ids = block_ids[live_blocks].tolist()
        capacity = max(64, int(len(hashes) / _REBUILT_LOAD))
        self._hashes = np.zeros(capacity, _U64)
        self._blocks = np.full(capacity, -1, np.int32)
        self._count = len(hashes)
        homes = self._slots(hashes)
        order = np.argsort(homes)
        ranks = np.arange(len(order))
        places = np.maximum.accumulate(homes[order] - ranks) + ranks
        inside = places < capacity
        self._hashes[places[inside]] = hashes[order[inside]]
        self._blocks[places[inside]] = numbers[order[inside]]
        if not inside.all():
            wrapped = order[~inside]
            self._place(hashes[wrapped], numbers[wrapped])

    def _place(self, hashes: np.ndarray, numbers: np.ndarray) -> None:
        """Put each hash (with its block number) in the first empty slot from its home on;
        of several keys aiming at the same empty slot the first takes it, the others move on."""
        capacity = len(self._hashes)
        slots = self._slots(hashes)
        pending = np.arange(len(hashes))
        while len(pending) > _SCALAR_TAIL:
            at = slots[pending]
            free = np.flatnonzero(self._blocks[at] < 0)
            won = np.zeros(len(pending), bool)
            if len(free):
                targets, first = np.unique(at[free], return_index=True)
                winners = pending[free[first]]
                self._hashes[targets] = hashes[winners]
                self._blocks[targets] = numbers[winners]
                won[free[first]] = True
            pending = pending[~won]
            slots[pending] = (at[~won] + 1) % capacity
        table, blocks = self._hashes, self._blocks
        for index in pending.tolist():  # the few in long runs: one by one
            slot = int(slots[index])
            while blocks[slot] >= 0:
                slot = (slot + 1) % capacity
            table[slot], blocks[slot] = hashes[index], numbers[index]
