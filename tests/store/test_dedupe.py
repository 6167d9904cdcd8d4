"""Dedupe blocks and the writer's in-memory key index (tripwire.store.dedupe)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tripwire.store import dedupe
from tripwire.store.buffer import ARCHIVER, Buffer
from tripwire.store.dedupe import KeyIndex, key_hashes


def envelope(message_id: str) -> dict[str, object]:
    return {
        "messageId": message_id,
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "timestamp": "2026-11-01T09:59:59.5Z",
    }


def test_hashes_are_stable_values():
    """The hashes are stored in the buffer: the function may never change."""
    ids = ["a", "a\x00", "6f1c2a4e-0d3b-4c55-9a8e-3f1d2b7c9e01", "é" * 40]
    assert [hex(h) for h in key_hashes(ids).tolist()] == [
        "0x6b80a427cd562ab5",
        "0x86251b6017b58f8e",
        "0xb366a050d6b134d5",
        "0xdb1dceda821768ac",
    ]


def test_ids_of_one_length_hash_to_the_stable_values():
    """Ids of one length (UUIDs) are read as a byte matrix without gathering: same values."""
    uuid = "6f1c2a4e-0d3b-4c55-9a8e-3f1d2b7c9e01"
    assert hex(int(key_hashes([uuid, uuid[::-1], uuid])[2])) == "0xb366a050d6b134d5"
    assert hex(int(key_hashes(["a"])[0])) == "0x6b80a427cd562ab5"
    assert hex(int(key_hashes(["é" * 40] * 3)[2])) == "0xdb1dceda821768ac"  # long ids


@given(st.lists(st.text(max_size=90), max_size=40))
@settings(max_examples=200, deadline=None)
def test_a_batch_hashes_each_id_as_it_would_alone(ids):
    """Vectorized over ids of any length (short and long ones are hashed in separate
    groups), from a list or a sliced Arrow array: always the hash of the id alone."""
    alone = [int(key_hashes([m])[0]) for m in ids]
    assert key_hashes(ids).tolist() == alone
    if ids:
        sliced = pa.array(["x", *ids], pa.string()).slice(1)
        assert key_hashes(sliced).tolist() == alone


def test_distinct_ids_get_distinct_hashes():
    ids = [f"{i:08x}-{i * 7919 % 65536:04x}" for i in range(100_000)]
    ids += ["a", "a\x00", "a\x00\x00", "\x00a", "x" * 64, "x" * 65, "x" * 300]
    assert len(set(key_hashes(ids).tolist())) == len(ids)


def _index_connection() -> sqlite3.Connection:
    connection = sqlite3.connect(":memory:")
    connection.executescript(dedupe.SCHEMA)
    return connection


@pytest.mark.parametrize("crowded", [False, True])
def test_the_index_finds_every_block_of_a_hash(crowded):
    """Against a dict model: repeated hashes (the same key in several blocks), keys whose
    home slots crowd the end of the table (probing wraps around), rebuilds as it grows."""
    rng = np.random.default_rng(7)
    connection = _index_connection()
    index = KeyIndex()
    index.loaded = True
    model: dict[int, list[int]] = {}
    previous = np.zeros(0, np.uint64)
    for block in range(1, 60):
        hashes = rng.integers(0, 2**64, int(rng.integers(1, 400)), dtype=np.uint64)
        if crowded:  # some keys aim at the last slots (probes wrap around)
            hashes[::40] |= np.uint64(0xFFFFFFF000000000)
        repeat = min(len(previous), len(hashes) // 3)
        hashes[:repeat] = previous[:repeat]
        index.add(connection, 0, block, hashes)
        for value in hashes.tolist():
            model.setdefault(value, []).append(block)
        previous = hashes
        known = np.array(list(model)[:300], np.uint64)
        queries = np.concatenate([known, rng.integers(0, 2**64, 50, dtype=np.uint64)])
        found = index.candidates(queries)
        assert {i: sorted(b) for i, b in found.items()} == {
            i: model[q] for i, q in enumerate(queries.tolist()) if q in model
        }
    assert len(index) == sum(map(len, model.values()))


def test_a_rebuild_forgets_the_blocks_that_left_the_window():
    connection = _index_connection()
    for seen_at in (100, 200, 300):
        dedupe.append_block(connection, seen_at, key_hashes([f"k{seen_at}"]), [f"k{seen_at}"])
    index = KeyIndex()
    index.catch_up(connection, window_start=150)  # first use: the blocks inside the window
    assert len(index) == 2 and index.last_block_id == 3
    assert index.candidates(key_hashes(["k100", "k200", "k300"])) == {1: [2], 2: [3]}
    many = np.arange(1, 1_000, dtype=np.uint64)
    dedupe.append_block(connection, 400, many, [str(i) for i in range(1, 1_000)])
    index.catch_up(connection, window_start=250)  # grows: rebuilt without block 2
    assert len(index) == 1 + len(many)
    assert index.candidates(key_hashes(["k200", "k300"])) == {1: [3]}


def test_hash_collisions_are_resolved_by_the_full_id(tmp_path, monkeypatch):
    """Every id hashing alike: nothing distinct is dropped, nothing is stored twice."""
    monkeypatch.setattr(dedupe, "key_hashes", lambda ids: np.zeros(len(ids), np.uint64))
    with Buffer(tmp_path / "b.db") as buf:
        first = buf.append([envelope("a"), envelope("b"), envelope("a"), envelope("c")])
        again = buf.append([envelope("d"), envelope("b"), envelope("e"), envelope("d")])
        ids = [r.message_id for r in buf.read_after(0, 10)]
    assert (first.stored, first.duplicate_indexes) == (3, (2,))
    assert (again.stored, again.duplicate_indexes) == (2, (1, 3))
    assert ids == ["a", "b", "c", "d", "e"]


def test_writers_see_each_others_keys(tmp_path):
    """Two buffers on one file (as two processes would be): each catches up with the
    blocks the other appended before deciding what is a duplicate."""
    path = tmp_path / "b.db"
    with Buffer(path) as one, Buffer(path) as two:
        assert one.append([envelope("x"), envelope("y")]).stored == 2
        assert two.append([envelope("y"), envelope("z")]).duplicate_indexes == (0,)
        assert one.append([envelope("z"), envelope("w")]).duplicate_indexes == (0,)
        assert two.append([envelope("w"), envelope("x")]).duplicates == 2
    code = (
        "import sys; from tripwire.store.buffer import Buffer\n"
        "with Buffer(sys.argv[1]) as b:\n"
        "    r = b.append([{'messageId': m, 'type': 'track', 'event': 'E', 'userId': 'u',"
        " 'timestamp': '2026-11-01T10:00:00Z'} for m in ('x', 'v')])\n"
        "    print(r.stored, r.duplicate_indexes)\n"
    )
    with Buffer(path) as three:
        assert three.append([envelope("v0")]).stored == 1  # index loaded before the other
        out = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
        )
        assert out.stdout.split("\n")[0] == "1 (0,)"
        assert three.append([envelope("v"), envelope("v1")]).duplicate_indexes == (0,)


def test_keys_of_a_pruned_block_are_forgotten_even_if_indexed(tmp_path):
    with Buffer(tmp_path / "b.db", dedupe_window_days=1) as buf:
        buf.append([envelope("a"), envelope("b")])
        assert buf.prune(now=datetime.now(UTC) + timedelta(days=2)).dedupe_keys == 2
        buf.commit(ARCHIVER, 2)
        assert buf.append([envelope("a"), envelope("c")]).stored == 2
        assert buf.append([envelope("a")]).duplicates == 1


def test_a_former_key_table_is_migrated(tmp_path):
    """Workspaces from before dedupe blocks keep their keys (and their seen_at)."""
    path = tmp_path / "b.db"
    with Buffer(path):
        pass
    now = int(datetime.now(UTC).timestamp() * 1_000_000)
    old = now - 30 * 86_400 * 1_000_000
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE TABLE dedupe (message_id TEXT PRIMARY KEY, seen_at INTEGER NOT NULL) WITHOUT ROWID"
    )
    connection.executemany(
        "INSERT INTO dedupe VALUES (?, ?)",
        [("k1", now), ("k2", now), ("k\x003", now - 1), ("old", old)],
    )
    connection.commit()
    connection.close()
    with Buffer(path) as buf:
        blocks = buf._query("SELECT seen_at, keys, ids FROM dedupe_blocks ORDER BY seen_at")
        result = buf.append([envelope(m) for m in ("k1", "k\x003", "old", "k2", "new")])
        tables = {name for (name,) in buf._query("SELECT name FROM sqlite_master")}
    assert [(s, k, sorted(orjson.loads(i))) for s, k, i in blocks] == [
        (old, 1, ["old"]),
        (now - 1, 1, ["k\x003"]),
        (now, 2, ["k1", "k2"]),
    ]
    assert (result.stored, result.duplicate_indexes) == (2, (0, 1, 3))
    assert "dedupe" not in tables


def test_a_preloaded_index_is_used_and_kept_up_to_date(tmp_path):
    """preload_keys loads the window's keys in the writer thread before any append; blocks
    another writer appends afterwards are still caught up with at the next commit."""
    path = tmp_path / "b.db"
    with Buffer(path) as first:
        first.append([envelope("a"), envelope("b")])
    with Buffer(path) as buf, Buffer(path) as other:
        buf.preload_keys()
        other.append([envelope("c")])  # after (or while) buf loads its index
        assert buf.append([envelope("d")]).stored == 1
        assert buf._keys.loaded and len(buf._keys) == 4
        result = buf.append([envelope(m) for m in ("a", "c", "d", "e")])
    assert (result.stored, result.duplicate_indexes) == (1, (0, 1, 2))
